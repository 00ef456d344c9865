// SPDX-License-Identifier: Apache-2.0
#include "socket_handler.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lu {

namespace {

bool family_ok(int family) {
    return family == AF_INET || family == AF_INET6 || family == AF_UNIX;
}

bool type_ok(int type) {
    return type == SOCK_STREAM || type == SOCK_DGRAM || type == SOCK_SEQPACKET;
}

int get_int_opt(int fd, int opt, int32_t* value) {
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) < 0) return -errno;
    *value = v;
    return 0;
}

// What we record of a socket, and what retrieve compares with the record.
int describe(int fd, SocketSer* ser) {
    *ser = SocketSer{};
    ser->version = kSocketSerVersion;
    int32_t listening = 0;
    if (int r = get_int_opt(fd, SO_DOMAIN, &ser->family); r < 0) return r;
    if (int r = get_int_opt(fd, SO_TYPE, &ser->type); r < 0) return r;
    if (int r = get_int_opt(fd, SO_PROTOCOL, &ser->protocol); r < 0) return r;
    if (int r = get_int_opt(fd, SO_ACCEPTCONN, &listening); r < 0) return r;
    if (listening) ser->flags |= kSocketListening;

    socklen_t len = sizeof ser->local;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(ser->local), &len) < 0) return -errno;
    if (len > sizeof ser->local) return -EINVAL;  // truncated: not a family we take
    ser->local_len = len;

    len = sizeof ser->peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(ser->peer), &len) == 0) {
        if (len > sizeof ser->peer) return -EINVAL;
        ser->peer_len = len;
        ser->flags |= kSocketHasPeer;
    } else if (errno != ENOTCONN) {
        return -errno;
    }
    return 0;
}

sa_family_t addr_family(const uint8_t* addr) {
    sa_family_t f;
    std::memcpy(&f, addr, sizeof f);
    return f;
}

// An address field: a sane length, the socket's family, zeros past the end.
bool addr_ok(const uint8_t (&addr)[sizeof(sockaddr_storage)], uint32_t len, int family) {
    if (len < sizeof(sa_family_t) || len > sizeof addr) return false;
    if (addr_family(addr) != family) return false;
    return std::all_of(addr + len, addr + sizeof addr, [](uint8_t b) { return b == 0; });
}

bool ser_valid(const SocketSer& s) {
    if (s.version != kSocketSerVersion || s.pad != 0) return false;
    if (s.flags & ~(kSocketListening | kSocketHasPeer)) return false;
    if (!family_ok(s.family) || !type_ok(s.type)) return false;
    if (!addr_ok(s.local, s.local_len, s.family)) return false;
    if (s.flags & kSocketHasPeer) return addr_ok(s.peer, s.peer_len, s.family);
    return s.peer_len == 0 &&
           std::all_of(std::begin(s.peer), std::end(s.peer), [](uint8_t b) { return b == 0; });
}

}  // namespace

bool SocketHandler::can_preserve(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return false;
    int32_t family = 0, type = 0;
    // Not AF_UNIX: it could carry a session's own fd (see the header).
    if (get_int_opt(fd, SO_DOMAIN, &family) < 0 || (family != AF_INET && family != AF_INET6))
        return false;
    if (get_int_opt(fd, SO_TYPE, &type) < 0 || !type_ok(type)) return false;
    return !(is_own_object_ && is_own_object_(fd));
}

int SocketHandler::preserve(FileOpArgs& args) {
    SocketSer ser;
    if (int r = describe(args.file, &ser); r < 0) return r;
    const auto* p = reinterpret_cast<const uint8_t*>(&ser);
    args.serialized_data.assign(p, p + sizeof ser);
    return 0;
}

int SocketHandler::retrieve(FileOpArgs& args) {
    // The bytes and the fd both come from the previous instance: check both.
    SocketSer rec;
    if (args.serialized_data.size() != sizeof rec) return -EINVAL;
    std::memcpy(&rec, args.serialized_data.data(), sizeof rec);
    if (!ser_valid(rec)) return -EINVAL;

    struct stat st;
    SocketSer now;
    if (fstat(args.preserved, &st) < 0 || !S_ISSOCK(st.st_mode)) return -EINVAL;
    if (describe(args.preserved, &now) < 0) return -EINVAL;
    if (now.family != rec.family || now.type != rec.type || now.protocol != rec.protocol ||
        (now.flags & kSocketListening) != (rec.flags & kSocketListening) ||
        now.local_len != rec.local_len || std::memcmp(now.local, rec.local, rec.local_len) != 0)
        return -EINVAL;
    // A peer that went away in transit is fine (see the header); a different one is not.
    if ((rec.flags & kSocketHasPeer) && (now.flags & kSocketHasPeer) &&
        (now.peer_len != rec.peer_len || std::memcmp(now.peer, rec.peer, rec.peer_len) != 0))
        return -EINVAL;

    // Sockets cannot be reopened through /proc (ENXIO): share the description.
    const int fd = fcntl(args.preserved, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return -errno;
    args.file = fd;
    return 0;
}

}  // namespace lu
