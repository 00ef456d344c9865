// SPDX-License-Identifier: Apache-2.0
#include "agent_faults.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "agent_mode.hpp"
#include "server.hpp"

namespace lu {

namespace {

using nlohmann::json;

json error(int err, const std::string& msg) {
    return json{{"ok", false}, {"errno", err}, {"error", "fault: " + msg}};
}

// An errno an agent could be handed: 1..4095, as the kernel's -MAX_ERRNO.
bool errno_of(const json& req, int* err) {
    *err = EIO;
    if (!req.contains("errno")) return true;
    const json& e = req["errno"];
    if (!e.is_number_integer() || e.get<long long>() < 1 || e.get<long long>() > 4095) return false;
    *err = e.get<int>();
    return true;
}

json arm(Engine& engine, const json& req) {
    if (!req.contains("kind") || !req["kind"].is_string()) return error(EINVAL, "no \"kind\"");
    std::string kind = req["kind"];
    int err = 0;
    if (!errno_of(req, &err)) return error(EINVAL, "bad \"errno\" (1..4095)");
    std::string session;
    if (req.contains("session")) {
        if (!req["session"].is_string()) return error(EINVAL, "bad \"session\"");
        session = req["session"];
    }
    if (kind == "freeze") {
        if (!req.contains("file") || !req["file"].is_number_unsigned())
            return error(EINVAL, "freeze needs \"file\" (0 is the first file frozen)");
        size_t k = req["file"].get<size_t>();
        engine.fail_freeze_at(k, err);
        spdlog::warn("agent fault armed: the next reboot's freeze fails at file {} with {}", k,
                     strerrorname_np(err));
        return json{{"ok", true}, {"kind", kind}, {"file", k}, {"errno", err}};
    }
    if (kind == "deserialize") {
        agent_mode().next_fails_deserialize = true;
        spdlog::warn("agent fault armed: the next instance's deserialization fails");
        return json{{"ok", true}, {"kind", kind}};
    }
    if (kind == "retrieve") {
        if (!req.contains("token") || !req["token"].is_number_unsigned())
            return error(EINVAL, "retrieve needs \"session\" and \"token\"");
        uint64_t token = req["token"];
        if (int r = engine.fail_retrieve(session, token, err))
            return error(-r, r == -EALREADY ? "that file was retrieved already"
                                            : "no such incoming session or token");
        spdlog::warn("agent fault armed: RETRIEVE_FD of token {} in session {} fails with {}", token,
                     session, strerrorname_np(err));
        return json{{"ok", true}, {"kind", kind}, {"session", session}, {"token", token},
                    {"errno", err}};
    }
    if (kind == "finish") {
        if (int r = engine.refuse_finish_once(session)) return error(-r, "no such incoming session");
        spdlog::warn("agent fault armed: the next finish of session {} is refused (EBUSY)", session);
        return json{{"ok", true}, {"kind", kind}, {"session", session}, {"errno", EBUSY}};
    }
    return error(EINVAL, "unknown kind \"" + kind + "\" (freeze, deserialize, retrieve, finish)");
}

}  // namespace

void handle_fault_request(Server& server, AdminRef admin, uid_t peer_uid, const json& req) {
    json reply;
    if (!agent_mode().faults)
        reply = error(EPERM, "this daemon was not started with --agent-faults");
    else if (peer_uid != 0 && peer_uid != server.access().uid)
        reply = error(EPERM, "permission denied");
    else if (server.engine().gate_closed())
        reply = error(EBUSY, "a live update is in progress");
    else
        reply = arm(server.engine(), req);
    server.admin_reply(admin, reply.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace lu
