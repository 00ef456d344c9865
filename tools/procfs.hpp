// SPDX-License-Identifier: Apache-2.0
// The process tree as /proc shows it: what the sandbox needs to end its
// processes and what reboot --kexec needs to find the holders among them.
#pragma once

#include <sys/types.h>

#include <vector>

namespace lu::ctl {

// Every pid in /proc.
std::vector<pid_t> all_pids();

// The parent of a live process; -1 if it is gone or a zombie (it holds no
// fds any more, and its parent only has to reap it).
pid_t parent_of(pid_t pid);

}  // namespace lu::ctl
