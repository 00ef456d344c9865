// SPDX-License-Identifier: Apache-2.0
// The socket file handler, compatible "socket-v1": a userspace extension (the
// kernel's LUO cannot keep sockets). The socket itself travels to the next
// instance as the engine's fd, so a listener keeps its port and its accept
// queue, and a connection keeps every byte in flight: nothing is closed or
// re-created.
//
// Accepted: AF_INET and AF_INET6 sockets of type SOCK_STREAM, SOCK_DGRAM or
// SOCK_SEQPACKET. Not AF_UNIX: a Unix socket can hold fds in its queue
// (SCM_RIGHTS, in a message or in a connection not yet accepted), among them
// a session's own fd, and once the daemon holds that socket the session is
// kept alive by itself: no close can end it. Refusing the family is the one
// rule that no later send can get around. The daemon's own sockets (control,
// admin, session connections) are named by is_own_object as well, a second
// line: they are LUO's objects, as the kernel's session anon inodes. Either
// way the engine answers ENOENT, as for any file no handler takes. The
// mechanics below (preserve, retrieve) are family-agnostic; can_preserve is
// the policy.
//
// Differences from the kernel's file model (for docs/kernel-differences.md):
// - The retrieved fd shares the preserved open file description
//   (F_DUPFD_CLOEXEC): a socket cannot be reopened through /proc/self/fd
//   (ENXIO). So its status flags (O_NONBLOCK) are the ones it had, and a
//   process of the old instance that still holds the socket shares it with
//   the retriever. FD_CLOEXEC is set on the new fd.
// - Retrieve checks the recorded state against the live socket (family, type,
//   protocol, local address, listening; the peer address when one was
//   recorded and one is still reported). A connection may legitimately end in
//   transit: a reset or closed TCP connection reports no peer (ENOTCONN), and
//   that is accepted, so the application sees the end on its next read or
//   write, as it would have without a live update. A peer that appeared in
//   transit (a non-blocking connect completing) is accepted too. Anything
//   else that differs is EINVAL.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <utility>

#include "file_handler.hpp"

namespace lu {

// serialized_data: exactly these 288 bytes, native-endian (the handover never
// leaves the machine). Address bytes past their length are zero. Retrieve
// refuses any other length or version, unknown flags, a non-zero pad, a family
// or type outside the accepted sets, an address length above 128 or below
// sizeof(sa_family_t), an address family other than `family`, a peer length
// that disagrees with kSocketHasPeer, or non-zero bytes past a length: EINVAL.
struct SocketSer {
    uint32_t version;    // kSocketSerVersion
    uint32_t flags;      // kSocketListening | kSocketHasPeer
    int32_t family;      // SO_DOMAIN
    int32_t type;        // SO_TYPE
    int32_t protocol;    // SO_PROTOCOL
    uint32_t local_len;  // getsockname() length
    uint32_t peer_len;   // getpeername() length; 0 without a peer
    uint32_t pad;        // 0
    uint8_t local[sizeof(sockaddr_storage)];
    uint8_t peer[sizeof(sockaddr_storage)];
};
static_assert(sizeof(SocketSer) == 288);
inline constexpr uint32_t kSocketSerVersion = 1;
inline constexpr uint32_t kSocketListening = 1u << 0;  // SO_ACCEPTCONN
inline constexpr uint32_t kSocketHasPeer = 1u << 1;    // getpeername() succeeded

class SocketHandler final : public FileHandler {
  public:
    // is_own_object(fd) is true for the daemon's own sockets; may be empty.
    explicit SocketHandler(std::function<bool(int fd)> is_own_object = {})
        : is_own_object_(std::move(is_own_object)) {}

    std::string_view compatible() const override { return "socket-v1"; }
    bool can_preserve(int fd) override;
    int preserve(FileOpArgs& args) override;
    void unpreserve(FileOpArgs&) override {}
    int retrieve(FileOpArgs& args) override;
    // A never-retrieved socket is closed when the engine closes its fd.
    void finish(FileOpArgs&) override {}

  private:
    std::function<bool(int fd)> is_own_object_;
};

}  // namespace lu
