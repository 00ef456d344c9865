// SPDX-License-Identifier: Apache-2.0
// liveupdatectl sandbox -- CMD...: a private liveupdated for one command, as
// the kernel's LUO selftests boot a VM for one test. docs/testing-luo-agents.md.
#pragma once

#include <string>
#include <vector>

namespace lu::ctl {

struct SandboxOptions {
    std::vector<std::string> command;       // CMD and its arguments
    std::vector<std::string> daemon_args;   // more liveupdated options (--strict, ...)
    std::string daemon;                     // liveupdated; default: beside this binary
    std::string compat;                     // libliveupdate-compat.so; default: likewise
    double timeout_s = 0;                   // CMD is killed after this; 0: never
    bool verbose = false;                   // the daemon's log on our stderr, as it runs
};

// The environment variable that tells a process (liveupdatectl reboot
// --kexec) which sandbox it is in: the pid of the sandbox's supervisor.
inline constexpr const char* kSandboxEnv = "LIVEUPDATE_SANDBOX";

// Runs CMD against a private daemon in a temporary runtime directory and
// removes every process and file of the sandbox when CMD ends, whatever
// its end. Returns CMD's exit status (128 + signal if killed, 124 if the
// timeout ended it), or 125 when the sandbox itself could not be set up.
int run_sandbox(const SandboxOptions& o);

}  // namespace lu::ctl
