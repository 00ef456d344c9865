// SPDX-License-Identifier: Apache-2.0
// liveupdated: the Live Update Orchestrator as a userspace daemon. This file
// reads the arguments; daemon.hpp builds the instance, cold or from a
// handover (reboot_receiver.hpp).
#include <grp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <filesystem>

#include "agent_mode.hpp"
#include "crash_recovery.hpp"
#include "daemon.hpp"
#include "event_loop.hpp"
#include "handover_channel.hpp"
#include "keeper.hpp"
#include "keeper_link.hpp"
#include "liveupdate/client.h"
#include "next_instance_report.hpp"
#include "reboot_receiver.hpp"

using namespace lu;

namespace {

// Every preserved file is an fd we hold: take all the kernel allows us,
// and keep room for session sockets and connections.
Limits fd_budget() {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    Limits l;
    constexpr rlim_t kReserve = 1024;
    l.files = rl.rlim_cur > 2 * kReserve ? static_cast<size_t>(rl.rlim_cur - kReserve)
                                         : static_cast<size_t>(rl.rlim_cur / 2);
    spdlog::info("fd limit {}: up to {} preserved files", rl.rlim_cur, l.files);
    return l;
}

void set_up_logging(const std::string& level, const std::string& name) {
    auto log = spdlog::stderr_color_mt(name);
    spdlog::set_default_logger(log);
    spdlog::set_level(spdlog::level::from_str(level));
    // journald adds its own timestamps and process tag.
    if (getenv("JOURNAL_STREAM")) spdlog::set_pattern("<%l> %v");
    else spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %l: %v");
}

// The runtime directory and the group, resolved. False (logged) if not.
bool resolve(const std::string& dir_arg, DaemonConfig* config) {
    std::string dir = dir_arg;
    if (dir.empty()) {
        char buf[PATH_MAX];
        if (lu_runtime_dir(buf, sizeof buf) < 0) {
            spdlog::critical("no runtime directory: set LIVEUPDATE_RUNTIME_DIR or --runtime-dir");
            return false;
        }
        dir = buf;
    }
    std::error_code ec;
    config->runtime_dir = std::filesystem::absolute(dir, ec).string();
    config->self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (!config->group_name.empty()) {
        struct group* g = getgrnam(config->group_name.c_str());
        if (!g) {
            spdlog::critical("no such group: {}", config->group_name);
            return false;
        }
        config->group = g->gr_gid;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const uint64_t started_ns = monotonic_ns();  // a next instance's spawn phase ends here
    CLI::App app{"liveupdated: the Live Update Orchestrator daemon"};
    app.set_version_flag("--version", "liveupdated " LIVEUPDATE_VERSION);
    DaemonConfig config;
    std::string runtime_dir, fault;
    std::string handover_socket;
    bool validate_only = false;
    bool keeper = false, recover = false, no_keeper = false;
    app.add_option("--runtime-dir", runtime_dir,
                   "where the sockets live (default: $LIVEUPDATE_RUNTIME_DIR, /run/liveupdate for "
                   "root, $XDG_RUNTIME_DIR/liveupdate otherwise)");
    app.add_option("--log-level", config.log_level,
                   "least severe messages logged: trace, debug, info, warn, error, critical, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
        ->capture_default_str();
    app.add_option("--group", config.group_name, "a group whose members may use the control socket");
    app.add_option("--handover-socket", handover_socket)->group("");  // set by the previous instance
    app.add_flag("--validate-only", validate_only)->group("");
    app.add_flag("--no-keeper", no_keeper,
                 "no keeper process: a crash of the daemon loses every session, as a kernel "
                 "panic does (docs/crash-safety.md)");
    app.add_flag("--keeper", keeper)->group("");    // started by an instance: keeper.hpp
    app.add_flag("--recover", recover)->group("");  // started by the keeper: crash_recovery.hpp
    app.add_option("--fault", fault)->group("");
#ifdef LU_FAULT_INJECTION
    app.add_flag("--test-handler", config.test_handler)->group("");
#endif
    AgentOptions agent_options;  // agent tests: --strict, --kernel-release, --agent-faults
    add_agent_options(app, &agent_options);
    app.footer(
        "Exit status:\n"
        "  0  stopped by SIGTERM or SIGINT (the state is dropped), or handed over\n"
        "  1  cannot serve (a socket, or a handover the next instance refused)\n"
        "  2  usage or configuration error");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;  // --help and --version are not errors
    }
    take_back_stderr();  // a next instance: its stderr was a pipe until now

    set_up_logging(config.log_level, keeper ? "liveupdated-keeper" : "liveupdated");
    if (keeper) return run_keeper();
    config.keeper = !no_keeper;
    if (std::string e = apply_agent_options(agent_options, config.test_handler); !e.empty()) {
        spdlog::critical("{}", e);  // agent tests (agent_mode.hpp)
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    // SIGTERM and SIGINT are read by the event loop (a signalfd), which
    // stops cleanly; until it runs they wait, pending.
    sigset_t stop = stop_signals();
    sigprocmask(SIG_BLOCK, &stop, nullptr);

#ifndef LU_FAULT_INJECTION
    if (!fault.empty()) {
        spdlog::critical("fault injection is compiled out of this build");
        return 2;
    }
#endif
    if (!resolve(runtime_dir, &config)) return 2;
    config.limits = fd_budget();

    if (recover) {
        std::unique_ptr<Daemon> daemon = recover_from_keeper(config);
        return daemon ? daemon->run() : 1;
    }
    if (!handover_socket.empty()) {
        NextSideOutcome next = run_next_side(handover_socket, config, fault, validate_only, started_ns);
        return next.daemon ? next.daemon->run() : next.exit_code();
    }
    if (validate_only) {
        spdlog::critical("--validate-only needs a handover");
        return 2;
    }
    unsetenv(kUpdateEnv);  // a cold start measures afresh
    std::string why;
    std::unique_ptr<Daemon> daemon = Daemon::cold_start(config, &why);
    if (!daemon) {
        spdlog::critical("{}", why);
        return 1;
    }
    unsetenv(kCrashesEnv);
    if (config.keeper) {
        if (daemon->protect(UniqueFd(), false, CrashCount{}, &why) == 0) daemon->commit_protection();
        else spdlog::error("{}: a crash of this instance would lose its state", why);
    }
    daemon->notify_ready("serving epoch 0");
    spdlog::info("serving epoch 0 (cold start) in {}", config.runtime_dir);
    return daemon->run();
}
