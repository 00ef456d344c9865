// SPDX-License-Identifier: Apache-2.0
#include "sandbox.hpp"

#include "procfs.hpp"

#include <fcntl.h>
#include <liveupdate/client.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

extern char** environ;

namespace lu::ctl {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A signal to the sandbox itself (Ctrl-C, a supervisor's SIGTERM) ends CMD
// and cleans up like any other end.
volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

constexpr int kSetupFailed = 125;  // as env(1) and timeout(1): the tool failed, not CMD
constexpr int kTimedOut = 124;     // as timeout(1)

// Where liveupdated and the compat library are, beside this binary: in a
// build tree (tools/ beside src/) or an installed prefix (bin/ beside sbin/
// and the library directory).
std::string beside_us(const std::vector<std::string>& candidates) {
    std::error_code ec;
    fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
    for (const auto& c : candidates) {
        fs::path p = (exe_dir / c).lexically_normal();
        if (fs::exists(p, ec)) return p.string();
    }
    return {};
}

std::string find_daemon(const SandboxOptions& o) {
    if (!o.daemon.empty()) return o.daemon;
    if (const char* e = getenv("LIVEUPDATED"); e && *e) return e;
    return beside_us({"../src/daemon/liveupdated", "../sbin/liveupdated", "liveupdated"});
}

std::string find_compat(const SandboxOptions& o) {
    if (!o.compat.empty()) return o.compat;
    return beside_us({"../src/compat/libliveupdate-compat.so",
                      std::string("../") + LU_INSTALL_LIBDIR + "/libliveupdate-compat.so"});
}

pid_t spawn(const std::vector<std::string>& args, int stderr_fd) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stderr_fd, 2);
    pid_t pid = -1;
    int r = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    return r == 0 ? pid : -r;
}

// The command, in a process group of its own so that what it starts can be
// ended with it; its environment reaches the private daemon.
pid_t spawn_command(const std::vector<std::string>& cmd) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    std::vector<char*> argv;
    for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    std::cerr << "liveupdatectl sandbox: cannot run " << cmd[0] << ": " << strerror(errno) << "\n";
    _exit(errno == ENOENT ? 127 : 126);
}

bool daemon_answers() {
    char* reply = nullptr;
    int r = lu_admin_request(R"({"op":"status"})", &reply);
    lu_free(reply);
    return r == 0;
}

std::vector<pid_t> our_children() {
    std::vector<pid_t> out;
    for (pid_t p : all_pids())
        if (parent_of(p) == getpid()) out.push_back(p);
    return out;
}

// Ends every process left in the sandbox: daemons with SIGTERM (a clean
// stop), everything else with SIGKILL; as a subreaper we are the parent of
// every orphan, so reaping them all until none is left is the whole job.
void end_everything(pid_t cmd_pgid, const std::string& daemon_path) {
    if (cmd_pgid > 0) kill(-cmd_pgid, SIGKILL);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    std::set<pid_t> termed;
    for (;;) {
        while (waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        std::vector<pid_t> left = our_children();
        if (left.empty()) {
            // None alive: any left is a zombie (parent_of skips them); reap it
            // so that nothing of the sandbox outlives this call.
            while (waitpid(-1, nullptr, WNOHANG) > 0) {
            }
            return;
        }
        for (pid_t p : left) {
            std::error_code ec;
            bool daemon = fs::read_symlink("/proc/" + std::to_string(p) + "/exe", ec) ==
                          fs::path(daemon_path);
            if (daemon && !termed.count(p) && Clock::now() < deadline) {
                kill(p, SIGTERM);
                termed.insert(p);
            } else if (!daemon || Clock::now() >= deadline) {
                kill(p, SIGKILL);
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

int exit_status_of(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return kSetupFailed;
}

}  // namespace

// 1. Become the subreaper: every process of the sandbox stays below us.
// 2. A temporary directory; the daemon's runtime directory inside it.
// 3. Start the daemon and wait until it answers.
// 4. Run CMD with LIVEUPDATE_RUNTIME_DIR, LD_PRELOAD and LIVEUPDATE_SANDBOX.
// 5. Whatever CMD's end (exit, signal, timeout): end every process of the
//    sandbox, remove the directory, return CMD's status.
int run_sandbox(const SandboxOptions& o) {
    if (o.command.empty()) {
        std::cerr << "liveupdatectl sandbox: no command (liveupdatectl sandbox -- CMD...)\n";
        return 2;
    }
    std::string daemon = find_daemon(o), compat = find_compat(o);
    if (daemon.empty() || access(daemon.c_str(), X_OK) != 0) {
        std::cerr << "liveupdatectl sandbox: no liveupdated found (use --daemon PATH)\n";
        return kSetupFailed;
    }
    if (compat.empty() || access(compat.c_str(), R_OK) != 0) {
        std::cerr << "liveupdatectl sandbox: no libliveupdate-compat.so found (use --compat PATH)\n";
        return kSetupFailed;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
    std::string tmpl = (fs::temp_directory_path() / "liveupdate-sandbox-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
        std::cerr << "liveupdatectl sandbox: mkdtemp: " << strerror(errno) << "\n";
        return kSetupFailed;
    }
    const std::string top = tmpl, run_dir = top + "/run", log = top + "/liveupdated.log";
    setenv("LIVEUPDATE_RUNTIME_DIR", run_dir.c_str(), 1);
    setenv(kSandboxEnv, std::to_string(getpid()).c_str(), 1);
    std::string preload = compat;
    if (const char* p = getenv("LD_PRELOAD"); p && *p) preload += std::string(":") + p;

    int log_fd = o.verbose ? -1 : open(log.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    std::vector<std::string> dargs{daemon, "--runtime-dir", run_dir};
    dargs.insert(dargs.end(), o.daemon_args.begin(), o.daemon_args.end());
    pid_t dpid = spawn(dargs, log_fd);
    if (log_fd >= 0) close(log_fd);
    int status = kSetupFailed;
    pid_t cmd = -1;
    bool ready = false;
    for (int i = 0; dpid > 0 && i < 1000 && !ready; i++) {  // 10 s
        ready = daemon_answers();
        if (!ready && waitpid(dpid, nullptr, WNOHANG) == dpid) break;
        if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!ready) {
        std::cerr << "liveupdatectl sandbox: the private liveupdated did not start\n";
        std::ifstream f(log);
        std::cerr << f.rdbuf();
    } else {
        setenv("LD_PRELOAD", preload.c_str(), 1);
        cmd = spawn_command(o.command);
        unsetenv("LD_PRELOAD");
        auto deadline = Clock::now() + std::chrono::duration<double>(o.timeout_s);
        int st = 0;
        for (;;) {
            pid_t r = waitpid(cmd, &st, WNOHANG);
            if (r == cmd) {
                status = exit_status_of(st);
                break;
            }
            if (r < 0 && errno != EINTR) break;
            if (g_stop_signal) {
                kill(-cmd, SIGKILL);
                waitpid(cmd, &st, 0);
                status = 128 + g_stop_signal;
                break;
            }
            if (o.timeout_s > 0 && Clock::now() >= deadline) {
                std::cerr << "liveupdatectl sandbox: " << o.command[0] << " ran past "
                          << o.timeout_s << " s: killed\n";
                kill(-cmd, SIGKILL);
                waitpid(cmd, &st, 0);
                status = kTimedOut;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }
    end_everything(cmd, daemon);
    std::error_code ec;
    fs::remove_all(top, ec);
    return status;
}

}  // namespace lu::ctl
