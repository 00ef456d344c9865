// SPDX-License-Identifier: Apache-2.0
//
// liveupdatectl: status and live update of liveupdated, over its admin
// socket (src/wire/wire.h). The daemon does the work and says what happened;
// this tool formats the request and the answer, and maps errors to exit codes.
#include <liveupdate/client.h>
#include <spawn.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agent_cmds.hpp"
#include "kexec_kill.hpp"
#include "sandbox.hpp"

namespace {

using nlohmann::json;

enum Exit { kOk = 0, kFailed = 1, kUsage = 2, kNoDaemon = 3, kDenied = 4, kBusy = 5 };

constexpr const char* kFooter = R"(Exit status:
  0  success
  1  the operation failed (the daemon's error is printed)
  2  usage error
  3  no daemon (nothing listens in the runtime directory)
  4  permission denied
  5  busy (e.g. a live update is already in progress)
sandbox exits with CMD's status (128 + N if a signal N ended it), 124 if
--timeout ended it, 125 if the sandbox could not be set up.

The runtime directory is --runtime-dir, else $LIVEUPDATE_RUNTIME_DIR, else
/run/liveupdate for root, else $XDG_RUNTIME_DIR/liveupdate.)";

std::string runtime_dir() {
    char dir[128];
    int rc = lu_runtime_dir(dir, sizeof(dir));
    return rc ? std::string("(unresolved: ") + std::strerror(-rc) + ")" : std::string(dir);
}

// A failure of liveupdatectl itself (no answer, or no usable one): the
// message on stderr and, with --json, the same as the daemon's error object
// on stdout, so that a script reading stdout always gets one JSON object.
int local_error(int code, int err, const std::string& msg, bool as_json) {
    std::cerr << "liveupdatectl: " << msg << "\n";
    if (as_json) std::cout << json{{"ok", false}, {"errno", err}, {"error", msg}}.dump(2) << "\n";
    return code;
}

// A failure to reach the daemon (rc from the library, -errno).
int transport_error(int rc, bool as_json) {
    int err = -rc;
    if (err == ENOENT || err == ECONNREFUSED) {
        char dir[128];
        if (lu_runtime_dir(dir, sizeof(dir)) < 0)
            return local_error(kNoDaemon, err,
                               "no runtime directory: use --runtime-dir or set "
                               "LIVEUPDATE_RUNTIME_DIR or XDG_RUNTIME_DIR",
                               as_json);
        return local_error(kNoDaemon, err, std::string("no daemon at ") + dir, as_json);
    }
    if (err == EACCES || err == EPERM)
        return local_error(kDenied, err, "permission denied (" + runtime_dir() + ")", as_json);
    if (err == EBUSY) return local_error(kBusy, err, "busy", as_json);
    if (err == EOWNERDEAD)
        return local_error(kFailed, err,
                           "the daemon closed the connection before replying; the outcome is "
                           "unknown (check `liveupdatectl status`)",
                           as_json);
    return local_error(kFailed, err, std::strerror(err), as_json);
}

// Sends one admin request; the parsed reply, or the exit code on failure.
std::optional<json> request(const json& req, int& exit_code, bool as_json) {
    char* raw = nullptr;
    int rc = lu_admin_request(req.dump().c_str(), &raw);
    if (rc < 0) {
        exit_code = transport_error(rc, as_json);
        return std::nullopt;
    }
    json reply = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    lu_free(raw);
    if (!reply.is_object()) {
        exit_code = local_error(kFailed, EPROTO, "the daemon's reply is not a JSON object", as_json);
        return std::nullopt;
    }
    return reply;
}

// Field access that tolerates a missing field or an unexpected type.
std::string str(const json& j, const char* key, const char* dflt = "") {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : dflt;
}
std::string num(const json& j, const char* key, const char* dflt = "?") {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->dump() : dflt;
}
std::int64_t int_or(const json& j, const char* key, std::int64_t dflt) {
    auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : dflt;
}
bool flag(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

// Session names may hold any byte: keep control characters off the terminal.
std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof(hex), "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// The daemon reported a failure ("ok":false): 1, or 4/5 for errnos that
// have their own exit code.
int reply_error(const json& reply, const char* what) {
    std::int64_t err = int_or(reply, "errno", 0);
    std::string msg = str(reply, "error");
    if (msg.empty()) msg = err ? std::strerror(static_cast<int>(err)) : "unknown error";
    std::cerr << "liveupdatectl: " << what << " failed: " << msg;
    if (flag(reply, "still_serving")) std::cerr << "; the running instance still serves";
    std::cerr << "\n";
    if (err == EACCES || err == EPERM) return kDenied;
    if (err == EBUSY) return kBusy;
    return kFailed;
}

bool failed(const json& reply) {
    auto it = reply.find("ok");
    return it != reply.end() && it->is_boolean() && !it->get<bool>();
}

// The last updates, one line each, with the time of each phase (us; "-":
// not reached). docs/benchmarks.md says what each phase covers.
void print_updates(const json& s) {
    auto u = s.find("updates");
    if (u == s.end() || !u->is_object()) return;
    auto last = u->find("last");
    if (last == u->end() || !last->is_array() || last->empty()) return;
    static const char* kPhases[] = {"gate", "freeze", "encode", "spawn", "transfer", "validate", "commit", "first_request"};
    std::cout << "\nUPDATES (last " << std::min<size_t>(last->size(), 5) << ", us)\n"
              << std::left << std::setw(7) << "KIND" << " " << std::setw(11) << "OUTCOME" << " "
              << std::setw(6) << "EPOCH" << " " << std::setw(9) << "BLACKOUT";
    for (const char* p : kPhases) std::cout << " " << std::setw(9) << (std::string(p) == "first_request" ? "first_req" : p);
    std::cout << "\n";
    for (size_t i = last->size() > 5 ? last->size() - 5 : 0; i < last->size(); i++) {
        const json& r = (*last)[i];
        if (!r.is_object()) continue;
        std::cout << std::left << std::setw(7) << str(r, "kind", "?") << " " << std::setw(11)
                  << str(r, "outcome", "?") << " " << std::setw(6) << num(r, "epoch") << " "
                  << std::setw(9) << num(r, "blackout_us", "-");
        auto ph = r.find("phases_us");
        for (const char* p : kPhases)
            std::cout << " " << std::setw(9) << (ph != r.end() && ph->is_object() ? num(*ph, p, "-") : "-");
        std::cout << "\n";
        if (std::string e = str(r, "error"); !e.empty()) std::cout << "    error: " << e << "\n";
    }
}

void print_status(const json& s) {
    std::cout << "daemon   pid " << num(s, "pid") << ", epoch " << num(s, "epoch");
    if (std::string v = str(s, "version"); !v.empty()) std::cout << ", version " << v;
    std::cout << "\n";
    if (std::string k = str(s, "kernel_release"); !k.empty())
        std::cout << "kernel   " << k << (flag(s, "strict") ? ", strict" : "")
                  << (flag(s, "agent_faults") ? ", agent faults allowed" : "") << "\n";
    std::cout << "gate     " << str(s, "gate", "?") << "\n";
    if (auto u = s.find("update"); u != s.end() && u->is_object()) {
        std::cout << "update   " << str(*u, "state", "?");
        if (std::string e = str(*u, "last_error"); !e.empty())
            std::cout << " (last error: " << e << ")";
        std::cout << "\n";
    }
    if (std::string h = str(s, "handoffs"); !h.empty()) std::cout << "hand-off " << h << "\n";
    if (auto c = s.find("control_connected"); c != s.end() && c->is_boolean())
        std::cout << "control  " << (c->get<bool>() ? "connected" : "not connected") << "\n";
    if (std::int64_t e = int_or(s, "deserialize_error", 0)) {
        std::cout
            << "deserialize error: " << e << " (" << std::strerror(static_cast<int>(e))
            << "): incoming state is leaked; control opens fail with EIO until a cold restart\n";
    }
    if (std::int64_t n = int_or(s, "leaked_fds", 0)) std::cout << "leaked fds: " << n << "\n";

    print_updates(s);

    auto sessions = s.find("sessions");
    if (sessions == s.end() || !sessions->is_array() || sessions->empty()) {
        std::cout << "\nno sessions\n";
        return;
    }
    std::size_t width = 7;  // "SESSION"
    for (const json& ss : *sessions)
        if (ss.is_object()) width = std::max(width, printable(str(ss, "name")).size());
    std::cout << "\n"
              << std::left << std::setw(static_cast<int>(width)) << "SESSION"
              << "  " << std::setw(10) << "DIRECTION"
              << "  " << std::setw(11) << "STATE"
              << "  " << std::setw(8) << "PID"
              << "  FILES\n";
    for (const json& ss : *sessions) {
        if (!ss.is_object()) continue;
        auto files = ss.find("files");
        bool has_files = files != ss.end() && files->is_array();
        std::cout << std::left << std::setw(static_cast<int>(width)) << printable(str(ss, "name"))
                  << "  " << std::setw(10) << str(ss, "direction", "?") << "  " << std::setw(11)
                  << str(ss, "state", "?") << "  " << std::setw(8) << num(ss, "pid", "-") << "  "
                  << (has_files ? files->size() : 0);
        if (auto w = ss.find("waiting_s"); w != ss.end() && w->is_number())
            std::cout << "  (waiting " << std::fixed << std::setprecision(1) << w->get<double>()
                      << std::defaultfloat << " s)";
        if (std::string l = str(ss, "last_handoff"); !l.empty()) std::cout << "  (last hand-off: " << l << ")";
        std::cout << "\n";
        if (!has_files) continue;
        for (const json& f : *files) {
            if (!f.is_object()) continue;
            std::ostringstream line;
            line << std::left << "    token " << std::setw(20) << num(f, "token") << "  "
                 << std::setw(8) << str(f, "handler", "?");
            if (f.contains("size")) line << "  size " << num(f, "size");
            if (auto r = f.find("retrieved"); r != f.end() && r->is_boolean())
                line << (r->get<bool>() ? "  retrieved" : "  not retrieved");
            std::string text = line.str();
            text.erase(text.find_last_not_of(' ') + 1);
            std::cout << text << "\n";
        }
    }
}

int cmd_status(bool as_json) {
    int rc = kOk;
    auto reply = request(json{{"op", "status"}}, rc, as_json);
    if (!reply) return rc;
    if (as_json) std::cout << reply->dump(2) << "\n";  // even on failure: it is the answer
    if (failed(*reply)) return reply_error(*reply, "status");
    if (!as_json) print_status(*reply);
    return kOk;
}

int cmd_metrics() {
    int rc = kOk;
    auto reply = request(json{{"op", "metrics"}}, rc, false);
    if (!reply) return rc;
    if (failed(*reply)) return reply_error(*reply, "metrics");
    std::cout << str(*reply, "text");
    return kOk;
}

struct RebootArgs {
    std::string op = "reboot";  // or "upgrade"
    std::string exec;
    int timeout = 30;
    bool dry_run = false;
    std::string fault;
    bool json = false;
    bool kexec = false;
};

// The pid the sandbox's supervisor put in the environment, or -1.
pid_t sandbox_pid() {
    const char* s = getenv(lu::ctl::kSandboxEnv);
    char* end = nullptr;
    long v = s ? strtol(s, &end, 10) : 0;
    return s && *s && *end == '\0' && v > 1 ? static_cast<pid_t>(v) : -1;
}

int cmd_reboot(const RebootArgs& a) {
    json req{{"op", a.op}, {"timeout", a.timeout}, {"dry_run", a.dry_run}};
    if (!a.exec.empty()) {
        // The daemon's working directory is not ours: send an absolute path.
        std::error_code ec;
        auto abs = std::filesystem::absolute(a.exec, ec).lexically_normal();
        req["exec"] = ec ? a.exec : abs.string();
    }
    if (!a.fault.empty()) req["fault"] = a.fault;

    // --kexec: the old instance's client ends, taken before the update and
    // again after it (the old instance lives until it has drained), so
    // that its holders can be ended as a kexec ends every process.
    lu::ctl::InstanceSockets old_sockets;
    pid_t old_pid = -1;
    if (a.kexec) {
        if (sandbox_pid() < 0) {
            std::cerr << "liveupdatectl: reboot --kexec ends processes: it works only inside "
                         "`liveupdatectl sandbox`\n";
            return kUsage;
        }
        int ignored = kOk;
        auto st = request(json{{"op", "status"}}, ignored, false);
        if (st) old_pid = static_cast<pid_t>(int_or(*st, "pid", -1));
        std::string why;
        if (old_pid > 0) lu::ctl::read_instance_sockets(old_pid, &old_sockets, &why);
        if (!why.empty()) std::cerr << "liveupdatectl: --kexec: " << why << "\n";
    }

    int rc = kOk;
    auto reply = request(req, rc, a.json);
    if (!reply) return rc;
    if (a.kexec && flag(*reply, "ok") && !flag(*reply, "dry_run")) {
        std::string why;
        lu::ctl::read_instance_sockets(old_pid, &old_sockets, &why);  // gone already: fine
        int killed = lu::ctl::kill_holders(sandbox_pid(), old_sockets);
        if (!a.json)
            std::cout << "kexec: ended " << killed
                      << " process(es) that held fds of the previous instance\n";
    }
    if (a.json) std::cout << reply->dump(2) << "\n";
    const bool upgrade = a.op == "upgrade";
    if (!flag(*reply, "ok"))
        return reply_error(*reply, a.dry_run ? "dry run" : upgrade ? "upgrade" : "live update");
    if (a.json) return kOk;
    if (auto d = reply->find("dropped"); d != reply->end() && d->is_array() && !d->empty()) {
        std::cout << (flag(*reply, "dry_run") ? "will drop " : "dropped ") << d->size()
                  << " incoming session(s) nobody retrieved:";
        for (const json& n : *d) std::cout << " " << printable(n.is_string() ? n.get<std::string>() : "?");
        std::cout << "\n";
    }
    if (upgrade && flag(*reply, "dry_run")) {
        std::cout << "dry run ok: the new binary took the whole state over and was stopped; the "
                     "running instance still serves\n";
    } else if (upgrade) {
        std::cout << "upgrade done: now pid " << num(*reply, "pid") << " (upgrade "
                  << num(*reply, "upgrades") << "), epoch " << num(*reply, "epoch")
                  << " unchanged, blackout " << num(*reply, "blackout_us")
                  << " us; every client kept its connections\n";
    } else if (flag(*reply, "dry_run")) {
        std::cout << "dry run ok: the new instance validated the handover; the running instance "
                     "still serves (epoch "
                  << num(*reply, "epoch") << ")\n";
    } else {
        std::cout << "live update done: now pid " << num(*reply, "pid") << ", epoch "
                  << num(*reply, "epoch") << ", blackout " << num(*reply, "blackout_us") << " us\n";
    }
    return kOk;
}

struct UpdateArgs {
    std::vector<std::string> sessions;
    std::string exec;
    pid_t pid = 0;
    double timeout = 30;
    bool dry_run = false;
    bool json = false;
};

// Runs `sh -c CMD` (the next version); its pid, or -errno.
pid_t spawn_shell(const std::string& cmd) {
    std::vector<std::string> args{"/bin/sh", "-c", cmd};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    int err = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    return err ? -err : pid;
}

// The hand-off of a service's sessions to its next version (docs/handoff.md).
// With --exec, the hand-off begins first, so CMD finds the sessions; then
// CMD runs and the daemon watches it: its exit before FINISH rolls back.
int cmd_update(const UpdateArgs& a) {
    json req{{"op", "update"}, {"sessions", a.sessions}, {"timeout", a.timeout}, {"dry_run", a.dry_run}};
    if (a.pid > 0) req["pid"] = a.pid;
    int rc = kOk;
    std::optional<json> reply;
    if (a.exec.empty()) {
        reply = request(req, rc, a.json);
    } else {
        req["wait"] = false;
        reply = request(req, rc, a.json);
        if (!reply) return rc;
        if (flag(*reply, "ok")) {
            std::uint64_t id = reply->value("id", std::uint64_t{0});
            pid_t next = spawn_shell(a.exec);
            if (next < 0) {
                std::cerr << "liveupdatectl: cannot run " << a.exec << ": " << std::strerror(-next) << "\n";
                reply = request(json{{"op", "update-abort"}, {"id", id}}, rc, a.json);
            } else {
                reply = request(json{{"op", "update-wait"}, {"id", id}, {"pid", next}}, rc, a.json);
            }
        }
    }
    if (!reply) return rc;
    if (a.json) std::cout << reply->dump(2) << "\n";
    if (auto list = reply->find("sessions"); !a.json && list != reply->end() && list->is_array())
        for (const json& s : *list)
            std::cout << printable(str(s, "name")) << ": " << str(s, "outcome", "?")
                      << (s.contains("error") ? " (" + str(s, "error") + ")" : "") << "\n";
    if (!flag(*reply, "ok")) return reply_error(*reply, a.dry_run ? "hand-off dry run" : "hand-off");
    if (!a.json)
        std::cout << (a.dry_run ? "dry run ok: the next version validated; nothing moved\n"
                                : "hand-off committed: the next version serves\n");
    return kOk;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"liveupdatectl: inspect liveupdated and run a live update", "liveupdatectl"};
    app.footer(kFooter);
    app.set_version_flag("--version", "liveupdatectl " LIVEUPDATE_VERSION);
    app.require_subcommand(1);

    std::string dir;
    app.add_option("--runtime-dir", dir,
                   "the daemon's runtime directory (overrides the environment)");

    bool status_json = false;
    auto* status = app.add_subcommand("status", "show the daemon, its sessions and their files");
    status->add_flag("--json", status_json, "print the daemon's JSON answer");
    auto* metrics = app.add_subcommand(
        "metrics", "print the daemon's counters and gauges in the OpenMetrics text format");

    RebootArgs ra;
    auto* reboot =
        app.add_subcommand("reboot", "live update: hand everything preserved to a new instance");
    reboot->add_option("--exec", ra.exec,
                       "the binary of the new instance (default: the running one)");
    reboot->add_option("--timeout", ra.timeout, "seconds the new instance has to report ready")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    reboot->add_flag("--dry-run", ra.dry_run,
                     "serialize and have the new instance validate, then keep serving");
    reboot->add_flag("--json", ra.json, "print the daemon's JSON answer");
    reboot->add_flag("--kexec", ra.kexec,
                     "inside `liveupdatectl sandbox`: after the commit, end every process of "
                     "the sandbox that held an fd of the old instance, as a kexec would");
    // Test-only: the daemon refuses it in release builds. Hidden from --help.
    reboot->add_option("--inject-fault", ra.fault, "fail the live update at STEP")->group("");

    RebootArgs upa;
    upa.op = "upgrade";
    auto* upgrade = app.add_subcommand(
        "upgrade", "replace the daemon's binary: every client keeps its connections and sessions");
    upgrade->add_option("--exec", upa.exec, "the new binary (default: the running one)");
    upgrade->add_option("--timeout", upa.timeout, "seconds the new binary has to take over")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    upgrade->add_flag("--dry-run", upa.dry_run,
                      "have the new binary take the state over, then keep the running one");
    upgrade->add_flag("--json", upa.json, "print the daemon's JSON answer");
    upgrade->add_option("--inject-fault", upa.fault, "fail the upgrade at STEP")->group("");

    UpdateArgs ua;
    auto* update = app.add_subcommand(
        "update", "hand-off: move sessions to the next version of their service, nothing else");
    update->add_option("NAME", ua.sessions, "the outgoing sessions to hand off")->required();
    update->add_option("--exec", ua.exec,
                       "run this shell command as the next version once the sessions wait for it");
    update->add_option("--pid", ua.pid, "the next version's pid, already running (watched)")
        ->check(CLI::PositiveNumber);
    update->add_option("--timeout", ua.timeout, "seconds the next version has to FINISH")
        ->check(CLI::Range(0.001, 3600.0))
        ->capture_default_str();
    update->add_flag("--dry-run", ua.dry_run,
                     "the next version retrieves and validates, then aborts: nothing moves");
    update->add_flag("--json", ua.json, "print the daemon's JSON answer");
    update->get_option("--pid")->excludes(update->get_option("--exec"));

    lu::ctl::SandboxOptions so;
    auto* sandbox = app.add_subcommand(
        "sandbox", "run CMD against a private liveupdated, with the compat library preloaded");
    sandbox->prefix_command();  // everything after CMD (or after --) is CMD's
    sandbox->add_option("--daemon", so.daemon, "the liveupdated binary (default: beside this one)");
    sandbox->add_option("--compat", so.compat,
                        "libliveupdate-compat.so (default: beside this binary)");
    sandbox->add_option("--daemon-arg", so.daemon_args, "one more liveupdated option (repeatable)");
    sandbox->add_option("--timeout", so.timeout_s, "kill CMD after this many seconds (exit 124)")
        ->check(CLI::NonNegativeNumber);
    sandbox->add_flag("--verbose", so.verbose, "the private daemon's log on stderr");

    lu::ctl::FaultArgs fa;  // agents' tests: tools/agent_cmds.cpp
    auto* fault = lu::ctl::add_fault_command(app, &fa);
    lu::ctl::TraceArgs ta;
    auto* trace = lu::ctl::add_trace_command(app, &ta);

    // sandbox ... -- CMD...: CMD is not ours to parse, whatever its options.
    std::vector<std::string> command;
    for (int i = 1, seen_sandbox = 0; i < argc; i++) {
        if (std::strcmp(argv[i], "sandbox") == 0) seen_sandbox = 1;
        if (seen_sandbox && std::strcmp(argv[i], "--") == 0) {
            command.assign(argv + i + 1, argv + argc);
            argc = i;
            break;
        }
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);  // prints help, or the usage error
        return code == 0 ? kOk : kUsage;
    }

    // The library reads the environment: the simplest way to override it.
    if (!dir.empty() && setenv("LIVEUPDATE_RUNTIME_DIR", dir.c_str(), 1) < 0) {
        std::perror("liveupdatectl: setenv");
        return kFailed;
    }
    if (*status) return cmd_status(status_json);
    if (*metrics) return cmd_metrics();
    if (*update) return cmd_update(ua);
    if (*fault) return lu::ctl::run_fault(fa);
    if (*trace) return lu::ctl::run_trace(ta);
    if (*sandbox) {
        so.command = command.empty() ? sandbox->remaining() : command;
        return lu::ctl::run_sandbox(so);
    }
    if (*upgrade) return cmd_reboot(upa);
    return cmd_reboot(ra);
}
