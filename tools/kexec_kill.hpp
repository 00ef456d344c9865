// What a kexec does to processes, inside a sandbox: after a live update
// commits, every process of the sandbox that still holds an fd of the old
// daemon instance is killed, so what stage 1 left behind cannot reach into
// stage 2. The holders are found by their sockets: the daemon's own sockets
// are read from /proc/PID/fd, their peers (the client ends) from the kernel's
// unix socket diagnostics (sock_diag, as `ss -x` does), and a process holds
// the old instance if any of its fds is one of those client ends.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>

namespace lu::ctl {

// The inodes of the client ends of every connection daemon_pid holds
// (control, session and admin sockets). Empty with *why set on failure.
std::set<ino_t> client_ends_of(pid_t daemon_pid, std::string* why);

// SIGKILLs every process below sandbox_pid (its descendants, orphans it
// adopted as a subreaper included), except the caller, that holds one of
// `ends`; waits until each is gone. Returns how many were killed.
int kill_holders(pid_t sandbox_pid, const std::set<ino_t>& ends);

}  // namespace lu::ctl
