// SPDX-License-Identifier: Apache-2.0
// A fake liveupdated for the client tests: the test drives the server end
// of a socket by hand, message by message.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../../src/wire/wire.h"

namespace fake {

inline int count_open_fds() {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;  // the DIR's own fd
}

// Checks that a test leaves no fd open.
class FdLeakTest : public ::testing::Test {
  protected:
    void SetUp() override { fds_at_start_ = count_open_fds(); }
    void TearDown() override { EXPECT_EQ(count_open_fds(), fds_at_start_) << "fd leak"; }

  private:
    int fds_at_start_ = 0;
};

struct Pair {
    int client = -1, server = -1;
    Pair() {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        client = sv[0];
        server = sv[1];
    }
    ~Pair() {
        if (client >= 0) close(client);
        if (server >= 0) close(server);
    }
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;
};

inline void send_reply(int fd, int32_t err, const void* arg, uint32_t len,
                       const std::vector<int>& fds = {}, uint32_t magic = LU_WIRE_MAGIC) {
    lu_wire_reply hdr{magic, err, len, static_cast<uint32_t>(fds.size())};
    iovec iov[2] = {{&hdr, sizeof(hdr)}, {const_cast<void*>(arg), len}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = len ? 2 : 1;
    std::vector<char> ctl(CMSG_SPACE(sizeof(int) * fds.size()));
    if (!fds.empty()) {
        msg.msg_control = ctl.data();
        msg.msg_controllen = ctl.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_GE(sendmsg(fd, &msg, MSG_NOSIGNAL), 0) << strerror(errno);
}

struct Request {
    lu_wire_request hdr{};
    std::vector<uint8_t> arg;
    std::vector<int> fds;  // received; the caller closes them
    std::string text;      // the whole message, for admin requests
};

inline Request recv_request(int fd) {
    Request r;
    std::vector<uint8_t> buf(LU_WIRE_MAX_ADMIN + 64);
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 4)];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof(ctl);
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    EXPECT_GE(n, 0) << strerror(errno);
    if (n <= 0) return r;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            r.fds.push_back(f);
        }
    }
    r.text.assign(reinterpret_cast<char*>(buf.data()), static_cast<size_t>(n));
    if (static_cast<size_t>(n) >= sizeof(r.hdr)) {
        std::memcpy(&r.hdr, buf.data(), sizeof(r.hdr));
        r.arg.assign(buf.begin() + sizeof(r.hdr), buf.begin() + n);
    }
    return r;
}

// A runtime directory of our own, in LIVEUPDATE_RUNTIME_DIR for the test.
class RuntimeDir {
  public:
    RuntimeDir() {
        char tmpl[] = "/tmp/lu-client-test.XXXXXX";
        EXPECT_NE(mkdtemp(tmpl), nullptr);
        path_ = tmpl;
        setenv("LIVEUPDATE_RUNTIME_DIR", path_.c_str(), 1);
    }
    ~RuntimeDir() {
        unsetenv("LIVEUPDATE_RUNTIME_DIR");
        unlink((path_ + "/control").c_str());
        unlink((path_ + "/admin").c_str());
        rmdir(path_.c_str());
    }
    const std::string& path() const { return path_; }

    // A listening SOCK_SEQPACKET socket at <dir>/<name>; the caller closes it.
    int listen_at(const char* name) const {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", path_.c_str(), name);
        unlink(sa.sun_path);  // a socket file left by an earlier listener
        EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << strerror(errno);
        EXPECT_EQ(listen(fd, 4), 0);
        return fd;
    }

  private:
    std::string path_;
};

}  // namespace fake
