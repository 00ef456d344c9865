// SPDX-License-Identifier: Apache-2.0
// What a next instance that failed before serving leaves behind, turned into
// the words an operator needs: whether its binary can be executed at all, how
// it ended (exit status or signal), and what it wrote to stderr before its
// main() ran, which is where the dynamic loader says why it gave up
// ("error while loading shared libraries: ...").
//
// The stderr part: the old instance starts the next one with a pipe as its
// stderr and its own stderr as fd kStderrFd, named in LIVEUPDATE_STDERR_FD.
// The next instance takes its real stderr back as soon as its main() runs
// (take_back_stderr), so the pipe holds only what came before: the loader's
// message, an exec'd script's complaint, or an argument its parser rejected.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "unique_fd.hpp"

namespace lu {

inline constexpr int kStderrFd = 4;
inline constexpr const char* kStderrFdEnv = "LIVEUPDATE_STDERR_FD";

// Whether `exe` can be started; else its errno and a message that names the
// problem ("not executable", not "permission denied", for a file without
// execute permission: that is what the operator must fix).
struct ExecCheck {
    int err = 0;
    std::string message;
};
ExecCheck check_executable(const std::string& exe);

// The pipe that becomes the next instance's stderr (`write_end`, to dup2 to
// fd 2 in the child and close in the parent), and the environment that tells
// it where its real stderr is. `read_end` is empty when this instance has no
// stderr to hand on: the next one then inherits ours as before.
struct StderrCapture {
    UniqueFd read_end, write_end;
    std::vector<std::string> env_storage;
    std::vector<char*> envp;  // environ plus LIVEUPDATE_STDERR_FD, null-terminated
};
StderrCapture capture_next_stderr();

// Waits (at most grace_ms) for `pid`, which closed its end of the channel,
// to exit on its own, and reaps it. " (exit status N)", " (killed by signal
// SIGSEGV)", or "" with *reaped false when it still runs.
std::string wait_and_describe_exit(pid_t pid, int grace_ms, bool* reaped);

// Reads what the next instance wrote to the pipe, logs every line, and
// returns the last non-empty one ("" if none). Never blocks.
std::string relay_next_stderr(int read_end);

// The next instance's side: stderr becomes the real one again.
void take_back_stderr();

}  // namespace lu
