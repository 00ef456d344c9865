// SPDX-License-Identifier: Apache-2.0
#include "agent_cmds.hpp"

#include <liveupdate/client.h>
#include <string.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <iostream>
#include <nlohmann/json.hpp>

namespace lu::ctl {

namespace {

using nlohmann::json;

// liveupdatectl's exit statuses (tools/liveupdatectl.cpp).
enum Exit { kOk = 0, kFailed = 1, kUsage = 2, kNoDaemon = 3, kDenied = 4, kBusy = 5 };

int exit_for(int err) {
    if (err == ENOENT || err == ECONNREFUSED) return kNoDaemon;
    if (err == EACCES || err == EPERM) return kDenied;
    if (err == EBUSY) return kBusy;
    return kFailed;
}

// One admin request; the reply, or null with the exit code and a message.
json request(const json& req, int* code) {
    char* raw = nullptr;
    int rc = lu_admin_request(req.dump().c_str(), &raw);
    if (rc < 0) {
        std::cerr << "liveupdatectl: no answer from the daemon: " << strerror(-rc) << "\n";
        *code = exit_for(-rc);
        return nullptr;
    }
    json reply = json::parse(raw, nullptr, false);
    lu_free(raw);
    if (!reply.is_object()) {
        std::cerr << "liveupdatectl: the daemon's reply is not a JSON object\n";
        *code = kFailed;
        return nullptr;
    }
    return reply;
}

// The daemon said no: 1, or 4 and 5 for the errnos with their own status.
int failure(const json& reply) {
    int err = reply.value("errno", 0);
    std::cerr << "liveupdatectl: " << reply.value("error", std::string(strerror(err))) << "\n";
    return err == ENOENT ? kFailed : exit_for(err);
}

// "EIO" or "5": an errno.
int parse_errno(const std::string& s) {
    char* end = nullptr;
    long v = strtol(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0') return v > 0 && v < 4096 ? static_cast<int>(v) : -1;
    for (int e = 1; e < 4096; e++) {
        const char* name = strerrorname_np(e);
        if (name && s == name) return e;
    }
    return -1;
}

}  // namespace

CLI::App* add_fault_command(CLI::App& app, FaultArgs* a) {
    auto* c = app.add_subcommand(
        "fault", "arm an error path of a daemon started with --agent-faults (for agents' tests)");
    c->add_option("kind", a->kind,
                  "freeze (the next reboot's freeze fails at --file), deserialize (the next "
                  "instance's), retrieve (RETRIEVE_FD of --token in --session, for good), finish "
                  "(--session's next finish: EBUSY once)")
        ->required()
        ->check(CLI::IsMember({"freeze", "deserialize", "retrieve", "finish"}));
    c->add_option("--file", a->file, "freeze: the file that fails, 0 for the first frozen");
    c->add_option("--session", a->session, "retrieve, finish: the incoming session");
    c->add_option("--token", a->token, "retrieve: the file's token");
    c->add_option("--errno", a->err, "freeze, retrieve: the error, a number or a name (default EIO)");
    c->add_flag("--json", a->json, "print the daemon's JSON answer");
    return c;
}

CLI::App* add_trace_command(CLI::App& app, TraceArgs* a) {
    auto* c = app.add_subcommand("trace",
                                 "print the last uAPI requests: pid, command, arguments, errno");
    c->add_flag("--follow", a->follow, "keep printing new requests until interrupted");
    c->add_flag("--json", a->json, "print the daemon's JSON answer (without --follow)");
    return c;
}

int run_fault(const FaultArgs& a) {
    json req{{"op", "fault"}, {"kind", a.kind}};
    if (a.kind == "freeze") req["file"] = a.file;
    if (a.kind == "retrieve" || a.kind == "finish") {
        if (a.session.empty()) {
            std::cerr << "liveupdatectl: fault " << a.kind << " needs --session\n";
            return kUsage;
        }
        req["session"] = a.session;
    }
    if (a.kind == "retrieve") req["token"] = a.token;
    if (!a.err.empty()) {
        int e = parse_errno(a.err);
        if (e < 0) {
            std::cerr << "liveupdatectl: --errno " << a.err << ": not an errno\n";
            return kUsage;
        }
        req["errno"] = e;
    }
    int code = kOk;
    json reply = request(req, &code);
    if (reply.is_null()) return code;
    if (a.json) std::cout << reply.dump(2) << "\n";
    if (!reply.value("ok", false)) return failure(reply);
    if (!a.json) std::cout << "armed: " << reply.dump() << "\n";
    return kOk;
}

int run_trace(const TraceArgs& a) {
    uint64_t since = 0;
    bool first = true;
    for (;;) {
        json req{{"op", "trace"}};
        if (!first) req["since"] = since;
        int code = kOk;
        json reply = request(req, &code);
        if (reply.is_null()) return code;
        if (!reply.value("ok", false)) return failure(reply);
        if (a.json && !a.follow) {
            std::cout << reply.dump(2) << "\n";
            return kOk;
        }
        if (reply.contains("dropped"))
            std::cout << "... " << reply["dropped"].get<uint64_t>() << " lines dropped\n";
        for (const json& l : reply.value("lines", json::array()))
            if (l.is_string()) std::cout << l.get<std::string>() << "\n";
        std::cout.flush();
        if (!a.follow) return kOk;
        since = reply.value("next", since);
        first = false;
        usleep(200 * 1000);
    }
}

}  // namespace lu::ctl
