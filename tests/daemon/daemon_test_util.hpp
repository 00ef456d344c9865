// SPDX-License-Identifier: Apache-2.0
// Helpers for the daemon integration tests: liveupdated runs as a
// real process (support/daemon_process.hpp) and every check goes through its
// real sockets, either through libliveupdate or raw (hostile clients).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "liveupdate/client.h"
#include "liveupdate/uapi.h"
#include "support/daemon_process.hpp"
#include "wire.h"

namespace lu::testing {

// An owned fd for test code: closes on scope exit.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(o.release());
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) close(fd_);
        fd_ = fd;
    }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// A forked child that is killed and reaped if the test ends early.
struct ChildGuard {
    pid_t pid = -1;
    ChildGuard() = default;
    explicit ChildGuard(pid_t p) : pid(p) {}
    ChildGuard(const ChildGuard&) = delete;
    ChildGuard& operator=(const ChildGuard&) = delete;
    ~ChildGuard() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    // Waits for the child; its wait status.
    int wait() {
        int status = -1;
        if (pid > 0 && waitpid(pid, &status, 0) == pid) pid = -1;
        return status;
    }
};

inline bool has_cloexec(int fd) {
    int f = fcntl(fd, F_GETFD);
    return f >= 0 && (f & FD_CLOEXEC);
}

// A memfd holding `content`, its offset left at 0.
inline Fd make_memfd(const std::string& content, const char* name = "lu-test") {
    Fd fd(memfd_create(name, MFD_CLOEXEC));
    EXPECT_TRUE(fd) << strerror(errno);
    size_t off = 0;
    while (fd && off < content.size()) {
        ssize_t n = pwrite(fd.get(), content.data() + off, content.size() - off,
                           static_cast<off_t>(off));
        if (n <= 0) {
            ADD_FAILURE() << "pwrite: " << strerror(errno);
            break;
        }
        off += static_cast<size_t>(n);
    }
    return fd;
}

inline std::string read_all_at(int fd, size_t max = 1 << 20) {
    std::string s;
    char buf[4096];
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, static_cast<off_t>(s.size()));
        if (n <= 0) break;
        s.append(buf, static_cast<size_t>(n));
        if (s.size() >= max) break;
    }
    return s;
}

// An fd number that is certainly closed right now.
inline int closed_fd_number() {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(fd);
    return fd;
}

// Number of fds the process holds, from /proc/PID/fd.
inline size_t proc_fd_count(pid_t pid) {
    size_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        n++;
    return n;
}

// Round trips on a session fd: the daemon is single-threaded, handles every
// event of a wakeup before it waits again, and handles pending hangups of
// client connections before their requests. So once a few requests sent one
// after the other have been answered, every close and every admin request
// that happened before the first one is fully processed, and the fd count
// is stable.
inline size_t settled_fd_count(pid_t pid, int sync_session) {
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    for (int i = 0; i < 3; i++) EXPECT_EQ(lu_get_name(sync_session, name), 0);
    return proc_fd_count(pid);
}

// The status "sessions" entry named `name`, if listed.
// Synchronizes with the daemon through the control connection: once this
// answers, every hangup that was pending before it has been handled.
inline void control_round_trip(int ctl) {
    EXPECT_EQ(lu_retrieve_session(ctl, "\x01no-such-session"), -ENOENT);
}

inline std::optional<nlohmann::json> find_session(const nlohmann::json& status,
                                                  const std::string& name) {
    if (!status.is_object() || !status.contains("sessions")) return std::nullopt;
    for (const auto& s : status["sessions"])
        if (s.value("name", std::string()) == name) return s;
    return std::nullopt;
}

inline size_t count_sessions(const nlohmann::json& status) {
    if (!status.is_object() || !status.contains("sessions") || !status["sessions"].is_array())
        return 0;
    return status["sessions"].size();
}

// ---- raw wire access, bypassing the library ----

struct RawReply {
    bool got = false;  // a reply arrived (false: EOF or error)
    ssize_t len = 0;
    lu_wire_reply hdr{};
    std::vector<uint8_t> arg;
    std::vector<Fd> fds;
    int recv_errno = 0;
};

inline int raw_send(int sock, const void* data, size_t len, const std::vector<int>& fds = {},
                    int flags = 0) {
    iovec iov{const_cast<void*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<uint8_t> ctl;
    if (!fds.empty()) {
        ctl.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
        msg.msg_control = ctl.data();
        msg.msg_controllen = ctl.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
    return n < 0 ? -errno : 0;
}

inline RawReply raw_recv(int sock, int flags = 0) {
    RawReply r;
    std::vector<uint8_t> buf(64 * 1024);
    alignas(cmsghdr) uint8_t ctl[CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        r.recv_errno = errno;
        return r;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            r.fds.emplace_back(fd);
        }
    }
    r.len = n;
    if (n == 0) return r;  // EOF
    if (static_cast<size_t>(n) >= sizeof r.hdr) {
        memcpy(&r.hdr, buf.data(), sizeof r.hdr);
        r.arg.assign(buf.begin() + sizeof r.hdr, buf.begin() + n);
        r.got = true;
    }
    return r;
}

// A request message: header plus the struct bytes, arg_len consistent.
inline std::vector<uint8_t> wire_request(uint32_t cmd, const void* arg, uint32_t arg_len,
                                         uint32_t flags = 0) {
    lu_wire_request req{LU_WIRE_MAGIC, cmd, flags, arg_len};
    std::vector<uint8_t> m(sizeof req + arg_len);
    memcpy(m.data(), &req, sizeof req);
    if (arg_len) memcpy(m.data() + sizeof req, arg, arg_len);
    return m;
}

inline Fd raw_connect(const std::string& path) {
    Fd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    EXPECT_LT(path.size(), sizeof sa.sun_path);
    memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        ADD_FAILURE() << "connect " << path << ": " << strerror(errno);
        fd.reset();
    }
    return fd;
}

// A raw control connection with its hello read; *hello_err gets its errno.
inline Fd raw_control(const std::string& dir, int* hello_err = nullptr) {
    Fd fd = raw_connect(dir + "/control");
    if (!fd) return fd;
    RawReply hello = raw_recv(fd.get());
    EXPECT_TRUE(hello.got);
    EXPECT_EQ(hello.hdr.magic, LU_WIRE_MAGIC);
    EXPECT_EQ(hello.hdr.arg_len, 0u);
    EXPECT_TRUE(hello.fds.empty());
    if (hello_err) {
        *hello_err = hello.hdr.err;
    } else {
        EXPECT_EQ(hello.hdr.err, 0);
    }
    return fd;
}

inline liveupdate_ioctl_create_session create_arg(const std::string& name) {
    liveupdate_ioctl_create_session a{};
    a.size = sizeof a;
    a.fd = -1;
    memcpy(a.name, name.data(), std::min(name.size(), sizeof a.name));
    return a;
}

// An outgoing session created through a short-lived control connection.
inline Fd create_session_now(const std::string& name) {
    Fd ctl(lu_open());
    EXPECT_TRUE(ctl) << "lu_open: " << strerror(-ctl.get());
    if (!ctl) return Fd();
    int s = lu_create_session(ctl.get(), name.c_str());
    EXPECT_GE(s, 0) << "create " << name << ": " << strerror(-s);
    return Fd(s < 0 ? -1 : s);
}

}  // namespace lu::testing
