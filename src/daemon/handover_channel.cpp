// SPDX-License-Identifier: Apache-2.0
#include "handover_channel.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstddef>
#include <ctime>
#include <iterator>

#include "bounded_read.hpp"

namespace lu {

namespace {

std::span<const uint8_t> bytes_of(const ChannelMsg& m) {
    return {reinterpret_cast<const uint8_t*>(&m), sizeof m};
}

// Bounds what the next instance allocates for before it has checked anything.
constexpr uint64_t kMaxFds = 16u << 20;

}  // namespace

namespace {

socklen_t abstract_addr(const std::string& name, sockaddr_un* a) {
    *a = {};
    a->sun_family = AF_UNIX;
    memcpy(a->sun_path + 1, name.data(), std::min(name.size(), sizeof a->sun_path - 1));
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 +
                                  std::min(name.size(), sizeof a->sun_path - 1));
}

}  // namespace

int listen_for_next(UniqueFd* listener, std::string* name) {
    uint64_t nonce[2] = {};
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce) return -EIO;
    char buf[80];
    snprintf(buf, sizeof buf, "liveupdate-handover/%d/%016llx%016llx", getpid(),
             static_cast<unsigned long long>(nonce[0]), static_cast<unsigned long long>(nonce[1]));
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un a;
    socklen_t len = abstract_addr(buf, &a);
    if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len) < 0 || listen(fd.get(), 4) < 0)
        return -errno;
    *listener = std::move(fd);
    *name = buf;
    return 0;
}

int accept_next(int listener, pid_t pgid, UniqueFd* channel, pid_t* peer) {
    for (;;) {
        UniqueFd c(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) return errno == EINTR || errno == ECONNABORTED ? -EAGAIN : -errno;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid() &&
            getpgid(cred.pid) == pgid) {
            *channel = std::move(c);
            *peer = cred.pid;
            return 0;
        }
        // Not ours: closed unanswered; another may be queued behind it.
    }
}

int connect_to_previous(const std::string& name, UniqueFd* channel) {
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un a;
    socklen_t len = abstract_addr(name, &a);
    if (!fd || name.empty() || name.size() >= sizeof a.sun_path) return -EINVAL;
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), len) < 0) return -errno;
    *channel = std::move(fd);
    return 0;
}

uint64_t monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

ChannelMsg channel_msg(ChannelType type, int err, const std::string& text) {
    ChannelMsg m;
    m.type = type;
    m.err = err;
    snprintf(m.text, sizeof m.text, "%s", text.c_str());
    return m;
}

bool parse_channel_msg(const std::vector<uint8_t>& bytes, ChannelMsg* m) {
    if (bytes.size() != sizeof *m) return false;
    memcpy(m, bytes.data(), sizeof *m);
    m->text[sizeof m->text - 1] = 0;
    return m->magic == ChannelMsg{}.magic;
}

int send_on_channel(int channel, const ChannelMsg& m, std::span<const int> fds) {
    return send_message_retrying(channel, bytes_of(m), fds);
}

int send_state(int channel, const OutgoingState& s) {
    const std::vector<int>& fds = *s.fds;
    ChannelMsg hello = channel_msg(ChannelType::Hello);
    hello.nr_fds = static_cast<uint32_t>(fds.size());
    hello.t0_ns = s.t0_ns;
    hello.value = s.blob_size;
    hello.kind = static_cast<uint32_t>(s.kind);
    hello.nr_stale = static_cast<uint32_t>(s.nr_stale);
    snprintf(hello.text, sizeof hello.text, "%llu %llu", static_cast<unsigned long long>(s.freeze_ns),
             static_cast<unsigned long long>(s.encode_ns));
    const int first[] = {s.blob_fd, s.control_listener, s.admin_listener, s.keeper_link};
    int err = send_on_channel(channel, hello, std::span<const int>(first, s.keeper_link >= 0 ? 4 : 3));
    for (size_t i = 0; !err && i < fds.size(); i += kMaxFdsPerMessage) {
        ChannelMsg batch = channel_msg(ChannelType::Fds);
        size_t n = std::min(kMaxFdsPerMessage, fds.size() - i);
        batch.nr_fds = static_cast<uint32_t>(n);
        err = send_on_channel(channel, batch, std::span<const int>(fds.data() + i, n));
    }
    return err;
}

int recv_on_channel(int channel, Message* m, size_t max_fds, int timeout_ms) {
    return recv_message_within(channel, sizeof(ChannelMsg), max_fds, timeout_ms, m);
}

int receive_state(int channel, Incoming* in, std::string* why) {
    constexpr int kTimeoutMs = 30000;
    Message m;
    ChannelMsg hello;
    if (recv_on_channel(channel, &m, 4, kTimeoutMs) != 1 || m.truncated ||
        !parse_channel_msg(m.bytes, &hello) || hello.type != ChannelType::Hello ||
        m.fds.size() < 3) {
        *why = "no valid hello from the previous instance";
        return -EPROTO;
    }
    in->blob_fd = std::move(m.fds[0]);
    in->control_listener = std::move(m.fds[1]);
    in->admin_listener = std::move(m.fds[2]);
    if (m.fds.size() == 4) in->keeper_link = std::move(m.fds[3]);
    in->t0_ns = hello.t0_ns;
    // The old instance's marks: kept only if they are in the order they are
    // made (gate, freeze, encode) and not in the future; else none.
    unsigned long long freeze = 0, encode = 0;
    if (sscanf(hello.text, "%llu %llu", &freeze, &encode) == 2 && hello.t0_ns <= freeze &&
        freeze <= encode && encode <= monotonic_ns()) {
        in->freeze_ns = freeze;
        in->encode_ns = encode;
    }
    if (hello.kind > static_cast<uint32_t>(HandoverKind::Upgrade)) {
        *why = "unknown kind of handover " + std::to_string(hello.kind);
        return -EPROTONOSUPPORT;
    }
    in->kind = static_cast<HandoverKind>(hello.kind);
    if (hello.nr_fds > kMaxFds || hello.nr_stale > hello.nr_fds) {
        *why = "fd count out of range";
        return -EINVAL;
    }
    in->fds.reserve(hello.nr_fds);
    while (in->fds.size() < hello.nr_fds) {
        ChannelMsg batch;
        if (recv_on_channel(channel, &m, kMaxFdsPerMessage, kTimeoutMs) != 1 || m.truncated ||
            !parse_channel_msg(m.bytes, &batch) || batch.type != ChannelType::Fds ||
            batch.nr_fds != m.fds.size() || in->fds.size() + m.fds.size() > hello.nr_fds) {
            *why = "malformed fd batch";
            return -EPROTO;
        }
        for (auto& fd : m.fds) in->fds.push_back(std::move(fd));
    }
    in->stale.assign(std::make_move_iterator(in->fds.end() - hello.nr_stale),
                     std::make_move_iterator(in->fds.end()));
    in->fds.resize(in->fds.size() - hello.nr_stale);
    in->received_ns = monotonic_ns();
    return 0;
}

}  // namespace lu
