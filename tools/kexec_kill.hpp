// SPDX-License-Identifier: Apache-2.0
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

// The old instance's sockets: its own (the listeners among them, which the
// next instance shares) and the client ends of its connections.
struct InstanceSockets {
    std::set<ino_t> own;
    std::set<ino_t> client_ends;
};

// Reads them for daemon_pid into *s (adding to what is there). False with
// *why set if the daemon's fds could not be read.
bool read_instance_sockets(pid_t daemon_pid, InstanceSockets* s, std::string* why);

// SIGKILLs every process below sandbox_pid (its descendants, orphans it
// adopted as a subreaper included), except the caller and the daemon
// instances (they hold the old instance's own sockets: the listeners, and
// the handover channel's other end), that holds a client end; waits until
// each is gone. Returns how many were killed.
int kill_holders(pid_t sandbox_pid, const InstanceSockets& s);

}  // namespace lu::ctl
