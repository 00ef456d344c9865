// SPDX-License-Identifier: Apache-2.0
// Message I/O with fds on SOCK_SEQPACKET sockets: one message, its bytes and
// its SCM_RIGHTS fds, received close-on-exec so nothing leaks into a child.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <span>
#include <vector>

#include "unique_fd.hpp"

namespace lu {

inline constexpr size_t kMaxFdsPerMessage = 253;  // SCM_MAX_FD

struct Message {
    std::vector<uint8_t> bytes;
    std::vector<UniqueFd> fds;
    bool truncated = false;  // bytes or fds did not fit: a malformed message
    pid_t pid = 0;  // the sender, on a socket with SO_PASSCRED (trace.hpp); else 0
};

// 1 a message (possibly empty), 0 EOF (the peer's last copy is closed),
// -ESHUTDOWN the peer shut its sending side but is still open, -EAGAIN
// nothing pending, other -errno.
int recv_message(int sock, size_t max_bytes, size_t max_fds, Message* out);
// Non-blocking unless the socket is blocking. 0 or -errno.
int send_message(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {});
// send_message, retrying a transient ENOBUFS/ENOMEM (no buffer or memory for
// the message right now) for up to a second: for the messages that must not
// be lost for so little (the live update's, admin replies). Never for client
// replies, which are held instead (backpressure).
// A send or receive refused for want of a buffer or memory right now: the
// message was not sent, or is still queued; retry rather than give up.
inline bool transient(int err) { return err == -ENOBUFS || err == -ENOMEM; }

// poll() that returns at once, retrying EINTR: a readiness check that a
// signal must not turn into "nothing ready".
int poll_now(pollfd* fds, size_t n);
int send_message_retrying(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {});

// An AF_UNIX SOCK_SEQPACKET socket: what every client connection is.
bool unix_seqpacket(int fd);

}  // namespace lu
