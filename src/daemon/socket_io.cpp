// SPDX-License-Identifier: Apache-2.0
#include "socket_io.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace lu {

namespace {

// Room to receive into, kept from call to call and never zeroed: a message
// is copied out at its own size. A vector sized to the largest message
// anew on each call zero-filled it (64 KiB for a keeper record of 64 bytes).
struct RecvRoom {
    std::unique_ptr<uint8_t[]> bytes, control;
    size_t bytes_size = 0, control_size = 0;
    void reserve(size_t b, size_t c) {
        if (b > bytes_size) bytes.reset(new uint8_t[bytes_size = b]);
        if (c > control_size) control.reset(new uint8_t[control_size = c]);
    }
};

}  // namespace

int recv_message(int sock, size_t max_bytes, size_t max_fds, Message* out) {
    out->fds.clear();
    out->truncated = false;
    out->pid = 0;
    // Room for the fds and for the sender's credentials (SO_PASSCRED).
    const size_t control_size =
        CMSG_SPACE(sizeof(int) * std::max<size_t>(max_fds, 1)) + CMSG_SPACE(sizeof(ucred));
    thread_local RecvRoom room;
    room.reserve(std::max<size_t>(max_bytes, 1), control_size);
    iovec iov{room.bytes.get(), max_bytes};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = room.control.get();
    msg.msg_controllen = control_size;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    // Take ownership of every fd that arrived before judging anything, so a
    // malformed message can never leak one.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
            c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
            ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof cred);
            out->pid = cred.pid;
            continue;
        }
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfds; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            out->fds.emplace_back(fd);
        }
    }
    if (n == 0 && out->fds.empty()) {
        // On SOCK_SEQPACKET an empty message also reads as 0: only a peer
        // that is gone (POLLHUP: its last copy closed) is an end of file.
        pollfd p{sock, POLLRDHUP, 0};
        poll_now(&p, 1);
        if (p.revents & POLLHUP) return 0;
        if (p.revents & POLLRDHUP) return -ESHUTDOWN;  // a holder shut its sending side
    }
    out->bytes.assign(room.bytes.get(), room.bytes.get() + n);
    out->truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || out->fds.size() > max_fds;
    return 1;
}

int send_message(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<uint8_t> control;
    if (!fds.empty()) {
        if (fds.size() > kMaxFdsPerMessage) return -EINVAL;
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return 0;
}

int poll_now(pollfd* fds, size_t n) {
    int r;
    while ((r = poll(fds, n, 0)) < 0 && errno == EINTR) {
    }
    return r;
}

int send_message_retrying(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
    int r;
    for (int tries = 0; transient(r = send_message(sock, bytes, fds)); tries++) {
        if (tries == 1000) break;
        usleep(1000);
    }
    return r;
}

bool unix_seqpacket(int fd) {
    int domain = 0, type = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX) return false;
    len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
}

}  // namespace lu
