// SPDX-License-Identifier: Apache-2.0
#include "next_instance_report.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace lu {

ExecCheck check_executable(const std::string& exe) {
    if (access(exe.c_str(), X_OK) == 0) return {};
    int err = errno;
    struct stat st{};
    // EACCES from access() also means a parent directory is not searchable:
    // stat tells that case (it fails too) from a file that lacks the x bit.
    if (err == EACCES && stat(exe.c_str(), &st) == 0) {
        // ENOEXEC: the file is there and reachable but cannot be run; EACCES
        // would read as "you may not do this", which is not the problem.
        if (!S_ISREG(st.st_mode))
            return {ENOEXEC, "cannot execute " + exe + ": not a regular file"};
        char mode[8];
        snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return {ENOEXEC, "cannot execute " + exe + ": not executable (mode " + mode + ")"};
    }
    return {err, "cannot execute " + exe + ": " + strerror(err)};
}

StderrCapture capture_next_stderr() {
    StderrCapture c;
    const std::string prefix = std::string(kStderrFdEnv) + "=";
    for (char** e = environ; *e; e++)
        if (strncmp(*e, prefix.c_str(), prefix.size()) != 0) c.envp.push_back(*e);
    int p[2];
    // Without a stderr of our own there is nothing to hand on (and dup2 of
    // fd 2 would fail the spawn): the next instance inherits ours as is.
    if (fcntl(STDERR_FILENO, F_GETFD) >= 0 && pipe2(p, O_CLOEXEC) == 0) {
        c.read_end.reset(p[0]);
        // Above the fds the spawn dup2s to (2, 3, kStderrFd), so that no
        // action overwrites the source of another.
        c.write_end.reset(fcntl(p[1], F_DUPFD_CLOEXEC, 10));
        close(p[1]);
        if (!c.write_end) c.read_end.reset();
    }
    if (c.read_end) {
        fcntl(c.read_end.get(), F_SETFL, O_NONBLOCK);
        c.env_storage.push_back(prefix + std::to_string(kStderrFd));
        c.envp.push_back(c.env_storage.back().data());
    }
    c.envp.push_back(nullptr);
    return c;
}

std::string wait_and_describe_exit(pid_t pid, int grace_ms, bool* reaped) {
    *reaped = false;
    int status = 0;
    // It closed the channel because it is exiting: that takes microseconds.
    // A program that closes the channel and lives on is killed by the caller.
    for (int waited = 0; waited <= grace_ms; waited++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            *reaped = true;
            break;
        }
        if (r < 0 && errno != EINTR) return "";
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!*reaped) return "";
    if (WIFEXITED(status)) return " (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    if (WIFSIGNALED(status)) {
        const char* abbrev = sigabbrev_np(WTERMSIG(status));
        return " (killed by signal " +
               (abbrev ? "SIG" + std::string(abbrev) : std::to_string(WTERMSIG(status))) + ")";
    }
    return "";
}

std::string relay_next_stderr(int read_end) {
    if (read_end < 0) return "";
    std::string text;
    char buf[4096];
    // Bounded: only what came before the next instance's main() is here.
    while (text.size() < 64 * 1024) {
        ssize_t n = read(read_end, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    std::string last;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        start = end + 1;
        if (line.empty()) continue;
        spdlog::error("next instance stderr: {}", line);
        last = line;
    }
    return last;
}

void take_back_stderr() {
    const char* v = getenv(kStderrFdEnv);
    if (!v) return;
    int fd = atoi(v);
    unsetenv(kStderrFdEnv);  // not for the instance after this one
    if (fd > STDERR_FILENO && dup2(fd, STDERR_FILENO) == STDERR_FILENO) close(fd);
}

}  // namespace lu
