// liveupdated: the Live Update Orchestrator as a userspace daemon.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "liveupdate/client.h"
#include "agent_mode.hpp"
#include "engine.hpp"
#include "handlers/memfd_handler.hpp"
#include "handlers/socket_handler.hpp"
#include "live_update.hpp"
#include "next_instance_report.hpp"
#include "runtime_dir.hpp"
#include "server.hpp"
#include "socket_activation.hpp"
#ifdef LU_FAULT_INJECTION
#include "testing/test_flb.hpp"
#include "testing/test_handler.hpp"
#endif

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

}  // namespace

namespace {

// What the previous instance measured of the update that started us, taken
// from the environment (and removed from it: it is for us alone). Anything
// malformed is dropped: the numbers start afresh, nothing else changes.
std::pair<UpdateHistory, UpdateMeter> take_update_measurements() {
    const char* env = getenv(kUpdateEnv);
    std::pair<UpdateHistory, UpdateMeter> out;
    if (env) {
        auto j = nlohmann::json::parse(env, nullptr, false);
        if (j.is_object() && j.contains("history") && j.contains("meter")) {
            auto h = UpdateHistory::from_json(j["history"]);
            auto m = UpdateMeter::from_json(j["meter"]);
            if (h && m) out = {std::move(*h), std::move(*m)};
        }
        if (!out.second.started()) spdlog::warn("the previous instance's update measurements were malformed: dropped");
    }
    unsetenv(kUpdateEnv);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    const uint64_t started_ns = monotonic_ns();
    CLI::App app{"liveupdated: the Live Update Orchestrator daemon"};
    app.set_version_flag("--version", "liveupdated " LIVEUPDATE_VERSION);
    std::string runtime_dir, group_name, fault;
    int handover_fd = -1;
    bool validate_only = false, test_handler = false;
    app.add_option("--runtime-dir", runtime_dir,
                   "where the sockets live (default: $LIVEUPDATE_RUNTIME_DIR, /run/liveupdate for "
                   "root, $XDG_RUNTIME_DIR/liveupdate otherwise)");
    app.add_option("--group", group_name, "a group whose members may use the control socket");
    app.add_option("--handover-fd", handover_fd)->group("");  // set by the previous instance
    app.add_flag("--validate-only", validate_only)->group("");
    app.add_option("--fault", fault)->group("");
#ifdef LU_FAULT_INJECTION
    app.add_flag("--test-handler", test_handler)->group("");
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

    auto log = spdlog::stderr_color_mt("liveupdated");
    spdlog::set_default_logger(log);
    // journald adds its own timestamps and process tag.
    if (getenv("JOURNAL_STREAM")) spdlog::set_pattern("<%l> %v");
    else spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e liveupdated[%P] %l: %v");
    if (std::string e = apply_agent_options(agent_options, test_handler); !e.empty()) {
        spdlog::critical("{}", e);  // agent tests (agent_mode.hpp)
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    // SIGTERM and SIGINT are read by the server loop (a signalfd), which
    // stops cleanly; until it runs they wait, pending.
    sigset_t stop = stop_signals();
    sigprocmask(SIG_BLOCK, &stop, nullptr);

#ifndef LU_FAULT_INJECTION
    if (!fault.empty()) {
        spdlog::critical("fault injection is compiled out of this build");
        return 2;
    }
#endif

    if (runtime_dir.empty()) {
        char buf[PATH_MAX];
        int r = lu_runtime_dir(buf, sizeof buf);
        if (r < 0) {
            spdlog::critical("no runtime directory: set LIVEUPDATE_RUNTIME_DIR or --runtime-dir");
            return 2;
        }
        runtime_dir = buf;
    }
    std::error_code ec;
    runtime_dir = std::filesystem::absolute(runtime_dir, ec).string();

    std::optional<gid_t> group;
    if (!group_name.empty()) {
        struct group* g = getgrnam(group_name.c_str());
        if (!g) {
            spdlog::critical("no such group: {}", group_name);
            return 2;
        }
        group = g->gr_gid;
    }

    Engine engine(fd_budget(), *agent_mode().profile);
    TestHandler* th = nullptr;
    Server* server_ptr = nullptr;
    engine.register_file_handler(std::make_unique<MemfdHandler>());
    if (!agent_mode().strict)  // --strict: the kernel has no socket handler
        engine.register_file_handler(std::make_unique<SocketHandler>(
            [&server_ptr](int fd) { return server_ptr && server_ptr->is_own_object(fd); }));
#ifdef LU_FAULT_INJECTION
    static TestFlb test_flb;
    if (test_handler) {
        auto h = std::make_unique<TestHandler>();
        th = h.get();
        engine.register_file_handler(std::move(h));
        engine.register_flb(th, &test_flb);
    }
#endif

    UniqueFd control, admin;
    Incoming incoming;
    bool live = handover_fd >= 0;
    if (live) {
        UniqueFd channel(handover_fd);
        fcntl(handover_fd, F_SETFD, FD_CLOEXEC);
        int r = receive_handover(channel.get(), fault, validate_only, &incoming);
        if (r >= 0) return r;
        control = std::move(incoming.control_listener);
        admin = std::move(incoming.admin_listener);
        // test-only, or armed by an agent's test (--agent-faults): a handler this instance lacks
        if (fault == "deserialize" || agent_mode().fail_deserialize) {
            for (auto& sess : incoming.image.sessions)
                if (!sess.files.empty()) sess.files.back().compatible = "missing-v1";
        }
        // Past validation: a failure here is the kernel's "Note on error
        // handling" case: leak, and answer EIO until a cold restart.
        int err = engine.deserialize(std::move(incoming.image), std::move(incoming.fds));
        if (err)
            spdlog::error("deserializing the handover failed: {}; the state is kept but "
                          "unreachable, control connections get EIO until a cold restart",
                          strerror(-err));
        Server server(engine, Access{geteuid(), group}, std::move(control), std::move(admin));
        if (!server.ok()) return 1;  // the old instance rolls back
        server_ptr = &server;
        DaemonConfig cfg{std::filesystem::read_symlink("/proc/self/exe", ec).string(), runtime_dir,
                         group_name, test_handler};
        LiveUpdate lu(server, cfg, th);
        server.set_live_update(&lu);
        // Until the old instance reads this, it may roll back and kill us:
        // no client is accepted before it is sent.
        auto [history, meter] = take_update_measurements();
        const uint64_t serving_ns = monotonic_ns();
        if (int e = report_serving(channel.get(), (serving_ns - incoming.t0_ns) / 1000)) {
            spdlog::error("reporting that this instance serves failed: {}", strerror(-e));
            return 1;
        }
        meter.mark_at(Phase::Spawn, started_ns);
        meter.mark_at(Phase::Transfer, incoming.received_ns);
        meter.mark_at(Phase::Validate, incoming.ready_ns);
        meter.mark_at(Phase::Commit, serving_ns);
        lu.continue_update(std::move(history), std::move(meter));
        channel.reset();
        sd_notifyf(0, "MAINPID=%d\nREADY=1\nSTATUS=serving epoch %llu", getpid(),
                   static_cast<unsigned long long>(engine.liveupdate_num()));
        spdlog::info("serving epoch {} in {} ({} incoming sessions)", engine.liveupdate_num(),
                     runtime_dir, engine.incoming().size());
        return server.run();
    }

    if (validate_only) {
        spdlog::critical("--validate-only needs a handover");
        return 2;
    }
    unsetenv(kUpdateEnv);  // a cold start measures afresh
    std::string why;
    UniqueFd dir = open_runtime_dir(runtime_dir, group, &why);
    mode_t sock_mode = group ? 0660 : 0600;
    // systemd's sockets, if it made them; else our own, in our directory.
    ActivatedListeners activated = take_activated_listeners();
    if (!activated.error.empty()) {
        spdlog::critical("{}", activated.error);
        return 1;
    }
    control = std::move(activated.control);
    admin = std::move(activated.admin);
    if (!control && dir) control = listen_in(dir.get(), "control", sock_mode, group, &why);
    if (!admin && dir && control) admin = listen_in(dir.get(), "admin", sock_mode, group, &why);
    if (!control || !admin) {
        spdlog::critical("{}", why);
        return 1;
    }

    Server server(engine, Access{geteuid(), group}, std::move(control), std::move(admin));
    if (!server.ok()) return 1;
    server_ptr = &server;
    DaemonConfig cfg{std::filesystem::read_symlink("/proc/self/exe", ec).string(), runtime_dir,
                     group_name, test_handler};
    LiveUpdate lu(server, cfg, th);
    server.set_live_update(&lu);
    sd_notifyf(0, "READY=1\nSTATUS=serving epoch 0");
    spdlog::info("serving epoch 0 (cold start) in {}", runtime_dir);
    return server.run();
}
