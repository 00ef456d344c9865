// SPDX-License-Identifier: Apache-2.0
#include "admin.hpp"

#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <filesystem>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "agent_faults.hpp"
#include "agent_mode.hpp"
#include "handoff.hpp"
#include "handover_channel.hpp"
#include "keeper_link.hpp"
#include "metrics.hpp"
#include "trace.hpp"
#include "reboot_sender.hpp"
#include "server.hpp"

namespace lu {

namespace {

using nlohmann::json;

json error(int err, const std::string& msg) {
    return json{{"ok", false}, {"errno", err}, {"error", msg}};
}

const char* state_of(const Session& s, bool frozen) {
    if (s.handoff() == HandoffState::Offered) return "handed-off";
    if (s.handoff() == HandoffState::Taken) return "taken";
    if (s.direction() == Direction::Outgoing) return frozen ? "frozen" : "open";
    if (s.orphaned()) return "orphaned";
    if (!s.retrieved()) return "unretrieved";
    return s.files().empty() ? "finished" : "retrieved";
}

using Holders = std::unordered_map<const Session*, const Conn*>;

json session_json(const Engine& e, const Holders& holders, const Session& s) {
    json files = json::array();
    for (const auto& f : s.files()) {
        json j{{"token", f->token}, {"handler", std::string(e.compatible_of(*f))}};
        int fd = f->file ? f->file.get() : f->preserved.get();
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) j["size"] = st.st_size;
        if (s.direction() == Direction::Incoming) {
            j["retrieved"] = f->args.retrieve_status == 1;
            if (f->args.retrieve_status < 0) j["retrieve_error"] = -f->args.retrieve_status;
        }
        files.push_back(std::move(j));
    }
    json j{{"name", s.name()},
           {"direction", s.direction() == Direction::Outgoing ? "outgoing" : "incoming"},
           {"state", state_of(s, e.gate_closed())},
           {"files", std::move(files)}};
    // Who holds it: the process that created or retrieved it.
    if (auto h = holders.find(&s); h != holders.end()) j["pid"] = h->second->pid;
    if (s.direction() == Direction::Incoming && !s.retrieved())
        j["waiting_s"] = static_cast<double>(monotonic_ns() - s.incoming_since_ns()) / 1e9;
    if (s.handoff() != HandoffState::None) j["handoff"] = {{"dry_run", s.handoff_dry_run()}};
    if (s.handoff_source()) j["handoff_view"] = true;  // the next owner's side of a hand-off
    if (s.last_handoff() != HandoffOutcome::None) j["last_handoff"] = outcome_name(s.last_handoff());
    return j;
}

// What metrics shows: the update history and what the daemon holds now.
std::string metrics_text(Server& server) {
    Engine& e = server.engine();
    Gauges g;
    g.epoch = e.liveupdate_num();
    g.outgoing_sessions = e.outgoing().size();
    g.incoming_sessions = e.incoming().size();
    g.preserved_files = e.preserved_files();
    for (const Session& s : e.outgoing())
        for (const auto& f : s.files()) {
            struct stat st;
            int fd = f->file ? f->file.get() : f->preserved.get();
            if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) g.preserved_bytes += st.st_size;
        }
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        g.fds_in_use++;
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    g.fds_limit = rl.rlim_cur;
    RebootSender* lu = server.reboot();
    return render_openmetrics(lu ? lu->history() : UpdateHistory(), g);
}

}  // namespace

static void handle(Server& server, AdminRef admin, uid_t peer_uid, const std::string& request);

// CLOCK_REALTIME ns as 2026-12-07T23:31:19.674Z.
static std::string rfc3339_utc(uint64_t ns) {
    time_t secs = static_cast<time_t>(ns / 1'000'000'000ull);
    tm t{};
    gmtime_r(&secs, &t);
    char buf[96];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", t.tm_year + 1900, t.tm_mon + 1,
             t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<unsigned>(ns / 1'000'000 % 1000));
    return buf;
}

std::string status_json(Server& server) {
    Engine& e = server.engine();
    json sessions = json::array();
    const Holders holders = server.conns().session_conns();
    for (const Session& s : e.outgoing()) sessions.push_back(session_json(e, holders, s));
    for (const Session& s : e.incoming()) sessions.push_back(session_json(e, holders, s));
    RebootSender* lu = server.reboot();
    json j{{"ok", true},
           {"pid", getpid()},
           {"epoch", e.liveupdate_num()},
           {"version", LIVEUPDATE_VERSION},
           {"upgrades", lu ? lu->upgrades() : 0},
           {"gate", e.gate_closed() || server.loop().clients_paused() ? "closed" : "open"},
           {"update", {{"state", lu && lu->in_progress() ? "in-progress" : "idle"},
                       {"last_error", lu ? lu->last_error() : ""}}},
           {"handoffs", e.handoffs_in_progress()},
           {"deserialize_error", -e.deserialize_error()},
           {"leaked_fds", e.leaked_fds()},
           {"preserved_files", e.preserved_files()},
           {"control_connected", server.control_connected()},
           {"updates", lu ? lu->history().to_json() : json::object()},
           {"sessions", std::move(sessions)}};
    // Crash safety (docs/crash-safety.md): who holds the state besides us,
    // and what it came back from.
    const KeeperLink* k = server.keeper();
    const CrashCount crashes = k ? k->crashes() : CrashCount{};
    j["keeper"] = {{"pid", k && k->keeper_pid() > 0 ? json(k->keeper_pid()) : json(nullptr)},
                   {"protecting", k && k->protecting()}};
    j["crashes_recovered"] = crashes.recovered;
    j["last_crash"] = crashes.last_crash_ns ? json(rfc3339_utc(crashes.last_crash_ns)) : json(nullptr);
    if (e.deserialize_error())
        j["failed"] = "the incoming handover failed to deserialize: its state is kept but "
                      "unreachable, control connections get EIO until a cold restart";
    // Session names are any bytes, as the kernel's (a fixed array, not a
    // string: LIVEUPDATE_SESSION_NAME_LENGTH); JSON wants UTF-8.
    add_agent_status(&j);  // strict, kernel_release, agent_faults
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void handle_admin_request(Server& server, AdminRef admin, uid_t peer_uid, const std::string& request) {
    // A client's request must never take the daemon down.
    try {
        handle(server, admin, peer_uid, request);
    } catch (const std::exception& e) {
        server.admin_reply(admin, error(EINVAL, std::string("bad request: ") + e.what())
                                         .dump(-1, ' ', false, json::error_handler_t::replace));
    }
}

static void handle(Server& server, AdminRef admin, uid_t peer_uid, const std::string& request) {
    json req = json::parse(request, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("op") || !req["op"].is_string()) {
        server.admin_reply(admin, error(EINVAL, "malformed request").dump());
        return;
    }
    std::string op = req["op"];
    if (op == "status") {
        server.admin_reply(admin, status_json(server));
        return;
    }
    if (op == "metrics") {
        server.admin_reply(admin, json{{"ok", true}, {"text", metrics_text(server)}}.dump());
        return;
    }
    if (op == "reboot" || op == "upgrade") {
        // Only the daemon's own user (or root) moves everyone's state.
        if (peer_uid != 0 && peer_uid != server.access().uid) {
            server.admin_reply(admin, error(EPERM, op + ": permission denied").dump());
            return;
        }
        RebootOptions o;
        o.kind = op == "upgrade" ? HandoverKind::Upgrade : HandoverKind::Reboot;
        if (req.contains("exec")) {
            if (!req["exec"].is_string() || req["exec"].get<std::string>().empty()) {
                server.admin_reply(admin, error(EINVAL, op + ": bad \"exec\"").dump());
                return;
            }
            o.exec = req["exec"];
        }
        if (req.contains("timeout")) {
            if (!req["timeout"].is_number() || req["timeout"].get<double>() <= 0 ||
                req["timeout"].get<double>() > 3600) {
                server.admin_reply(admin, error(EINVAL, op + ": bad \"timeout\"").dump());
                return;
            }
            o.timeout_ms = static_cast<uint64_t>(req["timeout"].get<double>() * 1000);
        }
        if (req.contains("dry_run")) {
            if (!req["dry_run"].is_boolean()) {
                server.admin_reply(admin, error(EINVAL, op + ": bad \"dry_run\"").dump());
                return;
            }
            o.dry_run = req["dry_run"];
        }
        if (req.contains("fault")) {
            if (!req["fault"].is_string()) {
                server.admin_reply(admin, error(EINVAL, op + ": bad \"fault\"").dump());
                return;
            }
            o.fault = req["fault"];
        }
        // kexec has no dry run. (An upgrade is invisible to clients: allowed.)
        if (o.dry_run && o.kind == HandoverKind::Reboot && agent_mode().strict) {
            server.admin_reply(admin, error(EOPNOTSUPP, "reboot: --dry-run is not the kernel's (--strict)").dump());
            return;
        }
        server.reboot()->start(admin, std::move(o));
        return;
    }
    if (op == "update" || op == "update-wait" || op == "update-abort") {
        if (agent_mode().strict)  // the kernel hands off nothing
            return server.admin_reply(admin, error(EOPNOTSUPP, op + ": not the kernel's (--strict)").dump());
        return handle_update_request(server, admin, peer_uid, op, req);  // handoff.hpp
    }
    if (op == "fault") return handle_fault_request(server, admin, peer_uid, req);  // agent_faults.hpp
    if (op == "trace") return handle_trace_request(server, admin, req);            // trace.hpp
    server.admin_reply(admin, error(EOPNOTSUPP, "unknown op \"" + op + "\"").dump());
}

}  // namespace lu
