// SPDX-License-Identifier: Apache-2.0
// The compat conformance suite's driver: runs the agent (agents/luo_agent.c,
// a program written for the kernel's uAPI only) as a child process with
// LD_PRELOAD=libliveupdate-compat.so against a real liveupdated
// (support/daemon_process.hpp), and checks its exit status and output.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/daemon_process.hpp"

extern char** environ;

namespace lu::compat_test {

using lu::testing::DaemonProcess;

struct AgentRun {
    int status = -1;     // wait status
    std::string output;  // stdout and stderr
    bool ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
    std::string describe() const {
        std::ostringstream os;
        if (WIFEXITED(status))
            os << "exit " << WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            os << "signal " << WTERMSIG(status);
        else
            os << "not run";
        return os.str() + "; output:\n" + output;
    }
};

// Waits for pid, at most `limit_ms` (a liveness bound, not a timing
// assertion: the agents take milliseconds); a hung agent is killed.
inline int wait_bounded(pid_t pid, int limit_ms = 60000) {
    int pfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pfd >= 0) {
        pollfd p{pfd, POLLIN, 0};
        int r;
        while ((r = poll(&p, 1, limit_ms)) < 0 && errno == EINTR) {
        }
        if (r == 0) {
            ADD_FAILURE() << "agent " << pid << " still running after " << limit_ms << " ms: killed";
            kill(pid, SIGKILL);
        }
        close(pfd);
    }
    int status = -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

// Runs the agent with args; its environment is ours (LIVEUPDATE_RUNTIME_DIR
// is the daemon's) plus LD_PRELOAD of the compat library and `env`.
inline AgentRun run_agent(const std::vector<std::string>& args,
                          const std::vector<std::string>& env = {}) {
    char out_tmpl[] = "/tmp/lu-compat-out-XXXXXX";
    int out = mkstemp(out_tmpl);
    EXPECT_GE(out, 0);
    std::vector<std::string> envs;
    auto overridden = [&](const std::string& kv) {
        std::string key = kv.substr(0, kv.find('=') + 1);
        if (key == "LD_PRELOAD=") return true;
        for (const auto& e : env)
            if (e.compare(0, key.size(), key) == 0) return true;
        return false;
    };
    for (char** e = environ; *e; e++)
        if (!overridden(*e)) envs.emplace_back(*e);
    envs.emplace_back(std::string("LD_PRELOAD=") + LU_COMPAT_LIB);
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);

    std::vector<std::string> argv_s{LU_COMPAT_AGENT};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    posix_spawn_file_actions_adddup2(&fa, out, 2);
    AgentRun run;
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    close(out);
    EXPECT_EQ(rc, 0) << "posix_spawn " << argv[0] << ": " << strerror(rc);
    if (rc == 0) run.status = wait_bounded(pid);
    std::ifstream f(out_tmpl);
    std::stringstream ss;
    ss << f.rdbuf();
    run.output = ss.str();
    unlink(out_tmpl);
    return run;
}

// How the suite's daemon is started: as it comes, or --strict (only what
// the kernel has: docs/kernel-differences.md, "Strict mode").
struct DaemonMode {
    const char* name;
    std::vector<std::string> args;
};
inline const auto kDaemonModes =
    ::testing::Values(DaemonMode{"Default", {}}, DaemonMode{"Strict", {"--strict"}});
inline void PrintTo(const DaemonMode& m, std::ostream* os) { *os << m.name; }
inline std::string daemon_mode_name(const ::testing::TestParamInfo<DaemonMode>& info) {
    return info.param.name;
}

// The process stage 1 left behind to hold its session fds. Stage 1 has
// exited, so the holder is re-parented to us (DaemonProcess makes this
// process a subreaper): we kill and reap it when the test ends.
class Holder {
public:
    explicit Holder(pid_t pid) : pid_(pid) {}
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() {
        // Only a live child of ours: never a recycled pid.
        siginfo_t si{};
        if (pid_ > 0 &&
            waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    pid_t pid() const { return pid_; }
    // True while it runs: a holder that died early released the sessions.
    bool alive() const {
        siginfo_t si{};
        return pid_ > 0 &&
               waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
               si.si_pid == 0;
    }

private:
    pid_t pid_;
};

// The holder pid stage 1 printed ("HOLDER <pid>"), or -1.
inline pid_t holder_pid(const std::string& output) {
    auto at = output.find("HOLDER ");
    return at == std::string::npos ? -1 : static_cast<pid_t>(atoi(output.c_str() + at + 7));
}

}  // namespace lu::compat_test
