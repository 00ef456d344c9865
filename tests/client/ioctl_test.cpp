// SPDX-License-Identifier: Apache-2.0
// lu_ioctl and its wrappers against a fake daemon on a socketpair. A reply
// can be queued before the request is sent (the socket buffers it), so most
// tests need no thread: queue the reply, call, then read what was sent.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liveupdate/client.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "fake_server.hpp"

namespace {

using fake::Pair;
using fake::recv_request;
using fake::send_reply;

class IoctlTest : public fake::FdLeakTest {};

bool same_file(int a, int b) {
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int new_memfd() {
    return memfd_create("lu-client-test", MFD_CLOEXEC);
}

bool nothing_sent(int server) {
    char c;
    return recv(server, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

TEST_F(IoctlTest, CreateSessionSendsTheStructAndPatchesTheReceivedFd) {
    Pair p;
    int sess = new_memfd();  // stands in for the session socket
    liveupdate_ioctl_create_session back{};
    back.size = sizeof(back);
    back.fd = 999;  // the daemon's number for it: meaningless here
    std::strcpy(reinterpret_cast<char*>(back.name), "db");
    send_reply(p.server, 0, &back, sizeof(back), {sess});

    int fd = lu_create_session(p.client, "db");
    ASSERT_GE(fd, 0);
    EXPECT_NE(fd, 999);
    EXPECT_TRUE(same_file(fd, sess));
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);

    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.magic, LU_WIRE_MAGIC);
    EXPECT_EQ(req.hdr.cmd, LIVEUPDATE_IOCTL_CREATE_SESSION);
    EXPECT_EQ(req.hdr.flags, 0u);
    ASSERT_EQ(req.hdr.arg_len, sizeof(liveupdate_ioctl_create_session));
    ASSERT_EQ(req.arg.size(), sizeof(liveupdate_ioctl_create_session));
    liveupdate_ioctl_create_session sent;
    std::memcpy(&sent, req.arg.data(), sizeof(sent));
    EXPECT_EQ(sent.size, sizeof(sent));
    EXPECT_STREQ(reinterpret_cast<char*>(sent.name), "db");
    for (size_t i = 2; i < sizeof(sent.name); i++) EXPECT_EQ(sent.name[i], 0);
    EXPECT_TRUE(req.fds.empty());
    close(fd);
    close(sess);
}

TEST_F(IoctlTest, RawIoctlWritesBackTheReplyBytes) {
    Pair p;
    int file = new_memfd();
    liveupdate_session_retrieve_fd back{};
    back.size = sizeof(back);
    back.fd = -7;
    back.token = 0xfeedULL;  // what the daemon writes back is what we see
    send_reply(p.server, 0, &back, sizeof(back), {file});

    liveupdate_session_retrieve_fd a{};
    a.size = sizeof(a);
    a.fd = -1;
    a.token = 42;
    ASSERT_EQ(lu_ioctl(p.client, LIVEUPDATE_SESSION_RETRIEVE_FD, &a), 0);
    EXPECT_EQ(a.token, 0xfeedULL);
    ASSERT_GE(a.fd, 0);
    EXPECT_TRUE(same_file(a.fd, file));
    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.cmd, LIVEUPDATE_SESSION_RETRIEVE_FD);
    liveupdate_session_retrieve_fd sent;
    std::memcpy(&sent, req.arg.data(), sizeof(sent));
    EXPECT_EQ(sent.token, 42u);
    close(a.fd);
    close(file);
}

TEST_F(IoctlTest, PreserveFdAttachesTheFd) {
    Pair p;
    int file = new_memfd();
    send_reply(p.server, 0, nullptr, 0);
    EXPECT_EQ(lu_preserve_fd(p.client, file, 0x1122334455667788ULL), 0);

    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.cmd, LIVEUPDATE_SESSION_PRESERVE_FD);
    liveupdate_session_preserve_fd sent;
    ASSERT_EQ(req.arg.size(), sizeof(sent));
    std::memcpy(&sent, req.arg.data(), sizeof(sent));
    EXPECT_EQ(sent.fd, file);
    EXPECT_EQ(sent.token, 0x1122334455667788ULL);
    ASSERT_EQ(req.fds.size(), 1u);
    EXPECT_TRUE(same_file(req.fds[0], file));
    close(req.fds[0]);
    close(file);
}

TEST_F(IoctlTest, PreserveOfABadFdSendsNoFdAndTheDaemonSaysEBADF) {
    Pair p;
    for (int bad : {-1, 4000}) {
        send_reply(p.server, EBADF, nullptr, 0);
        EXPECT_EQ(lu_preserve_fd(p.client, bad, 1), -EBADF);
        auto req = recv_request(p.server);
        EXPECT_TRUE(req.fds.empty());
        liveupdate_session_preserve_fd sent;
        std::memcpy(&sent, req.arg.data(), sizeof(sent));
        EXPECT_EQ(sent.fd, bad);  // the struct goes as the caller filled it
    }
}

TEST_F(IoctlTest, ErrorReplyClosesAnyFdItCarried) {
    Pair p;
    int file = new_memfd();
    send_reply(p.server, EEXIST, nullptr, 0, {file});
    EXPECT_EQ(lu_create_session(p.client, "dup"), -EEXIST);
    close(file);
    // FdLeakTest checks that the fd received with the error was closed.
}

TEST_F(IoctlTest, ExtraFdsAreClosed) {
    Pair p;
    int a = new_memfd(), b = new_memfd();
    liveupdate_session_retrieve_fd back{};
    back.size = sizeof(back);
    send_reply(p.server, 0, &back, sizeof(back), {a, b});
    int fd = lu_retrieve_fd(p.client, 1);
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(same_file(fd, a));
    close(fd);
    close(a);
    close(b);
}

// A daemon that closes without answering died: never the ESTALE of a hand-over.
TEST_F(IoctlTest, PeerGoneIsEOWNERDEAD) {
    {
        Pair p;  // closed before the request: EPIPE on send
        close(p.server);
        p.server = -1;
        EXPECT_EQ(lu_finish(p.client), -EOWNERDEAD);
    }
    {
        Pair p;  // closed after reading the request: EOF on receive
        std::thread daemon([&] {
            auto req = recv_request(p.server);
            EXPECT_EQ(req.hdr.cmd, LIVEUPDATE_SESSION_FINISH);
            close(p.server);
            p.server = -1;
        });
        EXPECT_EQ(lu_finish(p.client), -EOWNERDEAD);
        daemon.join();
    }
}

TEST_F(IoctlTest, NullArgIsSentAsFaultSize) {
    Pair p;
    send_reply(p.server, EFAULT, nullptr, 0);
    EXPECT_EQ(lu_ioctl(p.client, LIVEUPDATE_SESSION_FINISH, nullptr), -EFAULT);
    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.flags, LU_WIRE_FAULT_SIZE);
    EXPECT_EQ(req.hdr.arg_len, 0u);
    EXPECT_TRUE(req.arg.empty());
}

TEST_F(IoctlTest, OversizedStructSendsMaxArgAndReportsTheTail) {
    Pair p;
    std::vector<uint8_t> big(2048, 0);
    uint32_t size = static_cast<uint32_t>(big.size());
    std::memcpy(big.data(), &size, sizeof(size));

    send_reply(p.server, 0, nullptr, 0);
    EXPECT_EQ(lu_ioctl(p.client, LIVEUPDATE_SESSION_FINISH, big.data()), 0);
    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.flags, 0u);
    EXPECT_EQ(req.hdr.arg_len, LU_WIRE_MAX_ARG);
    EXPECT_EQ(req.arg.size(), LU_WIRE_MAX_ARG);

    big[1500] = 1;
    send_reply(p.server, E2BIG, nullptr, 0);
    EXPECT_EQ(lu_ioctl(p.client, LIVEUPDATE_SESSION_FINISH, big.data()), -E2BIG);
    req = recv_request(p.server);
    EXPECT_EQ(req.hdr.flags, LU_WIRE_TAIL_NONZERO);
    EXPECT_EQ(req.hdr.arg_len, LU_WIRE_MAX_ARG);
}

TEST_F(IoctlTest, SmallSizeIsSentAsIs) {
    Pair p;  // the daemon answers EINVAL for size < min, at the kernel's step
    liveupdate_session_preserve_fd a{};
    a.size = 4;
    a.fd = 0;  // beyond the 4 bytes sent: must not be read nor attached
    send_reply(p.server, EINVAL, nullptr, 0);
    EXPECT_EQ(lu_ioctl(p.client, LIVEUPDATE_SESSION_PRESERVE_FD, &a), -EINVAL);
    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.arg_len, 4u);
    EXPECT_TRUE(req.fds.empty());
}

TEST_F(IoctlTest, LongNameGoesUnterminatedAndNullNameIsEFAULT) {
    Pair p;
    std::string name(100, 'x');
    send_reply(p.server, EINVAL, nullptr, 0);
    EXPECT_EQ(lu_create_session(p.client, name.c_str()), -EINVAL);
    auto req = recv_request(p.server);
    liveupdate_ioctl_create_session sent;
    std::memcpy(&sent, req.arg.data(), sizeof(sent));
    for (uint8_t c : sent.name) EXPECT_EQ(c, 'x');

    EXPECT_EQ(lu_create_session(p.client, nullptr), -EFAULT);
    EXPECT_EQ(lu_retrieve_session(p.client, nullptr), -EFAULT);
    EXPECT_EQ(lu_get_name(p.client, nullptr), -EFAULT);
    EXPECT_TRUE(nothing_sent(p.server));
}

TEST_F(IoctlTest, GetName) {
    Pair p;
    liveupdate_session_get_name back{};
    back.size = sizeof(back);
    std::strcpy(reinterpret_cast<char*>(back.name), "my-session");
    send_reply(p.server, 0, &back, sizeof(back));
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(p.client, name), 0);
    EXPECT_STREQ(name, "my-session");
    auto req = recv_request(p.server);
    EXPECT_EQ(req.hdr.cmd, LIVEUPDATE_SESSION_GET_NAME);
    EXPECT_EQ(req.hdr.arg_len, sizeof(back));
}

TEST_F(IoctlTest, MalformedRepliesAreEPROTO) {
    Pair p;
    liveupdate_session_finish fin{};
    fin.size = sizeof(fin);

    send_reply(p.server, 0, nullptr, 0, {}, 0xdeadbeef);  // bad magic
    EXPECT_EQ(lu_finish(p.client), -EPROTO);
    recv_request(p.server);

    uint8_t more[16] = {};  // writes back more than was sent
    send_reply(p.server, 0, more, sizeof(more));
    EXPECT_EQ(lu_finish(p.client), -EPROTO);
    recv_request(p.server);

    lu_wire_reply lying{LU_WIRE_MAGIC, 0, 8, 0};  // says 8 bytes, has none
    ASSERT_EQ(send(p.server, &lying, sizeof(lying), 0), (ssize_t)sizeof(lying));
    EXPECT_EQ(lu_finish(p.client), -EPROTO);
    recv_request(p.server);

    ASSERT_EQ(send(p.server, "x", 1, 0), 1);  // shorter than a header
    EXPECT_EQ(lu_finish(p.client), -EPROTO);
    recv_request(p.server);

    lu_wire_reply fd_missing{LU_WIRE_MAGIC, 0, 0, 1};  // nr_fds 1, no fd came
    ASSERT_EQ(send(p.server, &fd_missing, sizeof(fd_missing), 0), (ssize_t)sizeof(fd_missing));
    EXPECT_EQ(lu_finish(p.client), -EMFILE);
}

TEST_F(IoctlTest, BadFdsFailCleanly) {
    liveupdate_session_finish fin{};
    fin.size = sizeof(fin);
    EXPECT_EQ(lu_ioctl(-1, LIVEUPDATE_SESSION_FINISH, &fin), -EBADF);
    EXPECT_EQ(lu_finish(-1), -EBADF);
    int pipefd[2];
    ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    EXPECT_EQ(lu_finish(pipefd[0]), -ENOTSOCK);
    close(pipefd[0]);
    close(pipefd[1]);
}

TEST_F(IoctlTest, NonBlockingSocketStillWaitsForTheReply) {
    Pair p;
    ASSERT_EQ(fcntl(p.client, F_SETFL, O_NONBLOCK), 0);
    std::thread daemon([&] {
        recv_request(p.server);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        send_reply(p.server, ENOENT, nullptr, 0);
    });
    EXPECT_EQ(lu_retrieve_fd(p.client, 5), -ENOENT);
    daemon.join();
}

}  // namespace
