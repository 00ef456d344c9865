// SPDX-License-Identifier: Apache-2.0
// The admin requests of the hand-off (docs/handoff.md), every field checked:
//   {"op":"update","sessions":["a","b"],"timeout":30,"dry_run":false,
//    "pid":1234,"wait":true}
//     hands the named outgoing sessions to their next owner; answers with
//     the outcome (wait, the default), or at once with {"ok":true,"id":N}.
//   {"op":"update-wait","id":N,"pid":1234}
//     watches the next version (pid, optional) and answers the outcome.
//   {"op":"update-abort","id":N}
//     rolls back what hand-off N did not commit; answers its outcome.
#include <nlohmann/json.hpp>

#include "connection_table.hpp"
#include "handoff.hpp"
#include "server.hpp"

namespace lu {

namespace {

using nlohmann::json;

std::string error(int err, const std::string& msg) {
    return json{{"ok", false}, {"errno", err}, {"error", msg}}.dump(-1, ' ', false,
                                                                   json::error_handler_t::replace);
}

// A positive pid field, or 0 when absent; -1 if malformed.
pid_t pid_field(const json& req) {
    if (!req.contains("pid")) return 0;
    const json& p = req["pid"];
    if (!p.is_number_integer() || p.get<int64_t>() <= 0 || p.get<int64_t>() > INT32_MAX) return -1;
    return static_cast<pid_t>(p.get<int64_t>());
}

Session* outgoing_named(Engine& e, const std::string& name) {
    for (const Session& s : e.outgoing())
        if (s.name() == name) return const_cast<Session*>(&s);
    return nullptr;
}

void update(Server& server, AdminRef admin, uid_t peer_uid, const json& req) {
    if (!req.contains("sessions") || !req["sessions"].is_array() || req["sessions"].empty() ||
        req["sessions"].size() > 1024)
        return server.admin_reply(admin, error(EINVAL, "update: \"sessions\" must list 1 to 1024 names"));
    Handoffs::Options o;
    if (req.contains("timeout")) {
        const json& t = req["timeout"];
        if (!t.is_number() || t.get<double>() <= 0 || t.get<double>() * 1000 > Handoffs::kMaxTimeoutMs)
            return server.admin_reply(admin, error(EINVAL, "update: bad \"timeout\""));
        o.timeout_ms = static_cast<uint64_t>(t.get<double>() * 1000);
        if (o.timeout_ms == 0) o.timeout_ms = 1;
    }
    if (req.contains("dry_run")) {
        if (!req["dry_run"].is_boolean()) return server.admin_reply(admin, error(EINVAL, "update: bad \"dry_run\""));
        o.dry_run = req["dry_run"];
    }
    bool wait = true;
    if (req.contains("wait")) {
        if (!req["wait"].is_boolean()) return server.admin_reply(admin, error(EINVAL, "update: bad \"wait\""));
        wait = req["wait"];
    }
    if ((o.next_pid = pid_field(req)) < 0) return server.admin_reply(admin, error(EINVAL, "update: bad \"pid\""));
    std::vector<Session*> sessions;
    bool have_owner = false;
    for (const json& n : req["sessions"]) {
        if (!n.is_string()) return server.admin_reply(admin, error(EINVAL, "update: a session name is not a string"));
        Session* s = outgoing_named(server.engine(), n.get<std::string>());
        if (!s) return server.admin_reply(admin, error(ENOENT, "update: no outgoing session \"" + n.get<std::string>() + "\""));
        // The owner is who created it; they all must have one owner.
        Conn* c = server.conns().session_conn(s);
        uid_t owner = c ? c->uid : server.access().uid;
        if (have_owner && owner != o.owner_uid)
            return server.admin_reply(admin, error(EINVAL, "update: the sessions belong to different users"));
        o.owner_uid = owner;
        have_owner = true;
        sessions.push_back(s);
    }
    // The daemon's user and root hand anything off; a user, its own.
    if (peer_uid != 0 && peer_uid != server.access().uid && peer_uid != o.owner_uid)
        return server.admin_reply(admin, error(EPERM, "update: permission denied"));
    uint64_t id = 0;
    int err = server.handoffs().begin(sessions, o, &id);
    if (err == -EBUSY && !server.engine().handoffs_in_progress().empty())
        return server.admin_reply(admin, error(EBUSY, "update: a hand-off is in progress: " +
                                                          server.engine().handoffs_in_progress()));
    if (err) return server.admin_reply(admin, error(-err, std::string("update: ") + strerror(-err)));
    if (wait) {
        server.handoffs().wait(id, admin);
        return;
    }
    server.admin_reply(admin, json{{"ok", true}, {"id", id}}.dump());
}

void update_wait(Server& server, AdminRef admin, uid_t peer_uid, const json& req) {
    (void)peer_uid;  // an outcome is no secret; the pid below only shortens a wait
    if (!req.contains("id") || !req["id"].is_number_unsigned())
        return server.admin_reply(admin, error(EINVAL, "update-wait: bad \"id\""));
    uint64_t id = req["id"];
    pid_t pid = pid_field(req);
    if (pid < 0) return server.admin_reply(admin, error(EINVAL, "update-wait: bad \"pid\""));
    if (pid > 0) {
        int err = server.handoffs().watch_pid(id, pid);
        // A hand-off over already: its outcome below.
        if (err && err != -ENOENT)
            return server.admin_reply(admin, error(-err, std::string("update-wait: ") + strerror(-err)));
    }
    if (!server.handoffs().wait(id, admin))
        server.admin_reply(admin, error(ENOENT, "update-wait: no hand-off " + std::to_string(id)));
}

void update_abort(Server& server, AdminRef admin, const json& req) {
    if (!req.contains("id") || !req["id"].is_number_unsigned())
        return server.admin_reply(admin, error(EINVAL, "update-abort: bad \"id\""));
    uint64_t id = req["id"];
    server.handoffs().abort(id);
    if (!server.handoffs().wait(id, admin))
        server.admin_reply(admin, error(ENOENT, "update-abort: no hand-off " + std::to_string(id)));
}

}  // namespace

void handle_update_request(Server& server, AdminRef admin, uid_t peer_uid, const std::string& op,
                           const json& req) {
    if (op == "update") return update(server, admin, peer_uid, req);
    // Waiting and aborting move nothing to anyone: the same users as update.
    if (peer_uid != 0 && peer_uid != server.access().uid)
        return server.admin_reply(admin, error(EPERM, op + ": permission denied"));
    if (op == "update-abort") return update_abort(server, admin, req);
    update_wait(server, admin, peer_uid, req);
}

}  // namespace lu
