// SPDX-License-Identifier: Apache-2.0
// The header-only C++ layer: ownership, errors as exceptions, helpers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <liveupdate/client.hpp>

#include "fake_server.hpp"

namespace {

using fake::Pair;
using fake::recv_request;
using fake::send_reply;

class CppLayerTest : public fake::FdLeakTest {};

// A Session over the client end of a fake pair; the Session owns it.
liveupdate::Session session_on(Pair& p) {
    return liveupdate::Session(liveupdate::UniqueFd(std::exchange(p.client, -1)));
}

TEST_F(CppLayerTest, ErrorsCarryTheErrno) {
    Pair p;
    auto s = session_on(p);
    send_reply(p.server, EEXIST, nullptr, 0);
    try {
        s.preserve(0, 1);
        FAIL() << "no exception";
    } catch (const liveupdate::Error& e) {
        EXPECT_EQ(e.errno_value(), EEXIST);
        EXPECT_EQ(e.code(), std::errc::file_exists);
        EXPECT_NE(std::strstr(e.what(), "preserve"), nullptr);
    }
    for (int f : recv_request(p.server).fds) close(f);
}

TEST_F(CppLayerTest, RetrieveReturnsAnOwnedFd) {
    Pair p;
    auto s = session_on(p);
    int file = memfd_create("x", MFD_CLOEXEC);
    liveupdate_session_retrieve_fd back{};
    back.size = sizeof(back);
    send_reply(p.server, 0, &back, sizeof(back), {file});
    {
        liveupdate::UniqueFd fd = s.retrieve(7);
        EXPECT_TRUE(fd);
    }  // closed here: FdLeakTest checks it
    close(file);
}

TEST_F(CppLayerTest, MovedSessionOwnsTheFd) {
    Pair p;
    auto s = session_on(p);
    int fd = s.fd();
    liveupdate::Session t = std::move(s);
    EXPECT_FALSE(s);
    EXPECT_EQ(t.fd(), fd);
    t.close();
    EXPECT_FALSE(t);
    char c;
    EXPECT_EQ(recv(p.server, &c, 1, 0), 0);  // the daemon sees the release
}

TEST_F(CppLayerTest, CreateSessionWithLongStringViewIsUnterminated) {
    Pair p;
    liveupdate::Orchestrator o{liveupdate::UniqueFd(std::exchange(p.client, -1))};
    send_reply(p.server, EINVAL, nullptr, 0);
    std::string name(70, 'n');
    EXPECT_THROW(o.create_session(name), liveupdate::Error);
    auto req = recv_request(p.server);
    liveupdate_ioctl_create_session sent;
    std::memcpy(&sent, req.arg.data(), sizeof(sent));
    for (uint8_t c : sent.name) EXPECT_EQ(c, 'n');
}

TEST_F(CppLayerTest, Name) {
    Pair p;
    auto s = session_on(p);
    liveupdate_session_get_name back{};
    back.size = sizeof(back);
    std::strcpy(reinterpret_cast<char*>(back.name), "cache");
    send_reply(p.server, 0, &back, sizeof(back));
    EXPECT_EQ(s.name(), "cache");
    recv_request(p.server);
}

TEST_F(CppLayerTest, PreserveMemfdRegion) {
    Pair p;
    auto s = session_on(p);
    send_reply(p.server, 0, nullptr, 0);
    liveupdate::UniqueFd fd = liveupdate::preserve_memfd_region(s, 9, "region", 1 << 20);
    struct stat st;
    ASSERT_EQ(fstat(fd.get(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
    EXPECT_TRUE(fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
    EXPECT_EQ(fcntl(fd.get(), F_GET_SEALS), 0);  // sealable: no F_SEAL_SEAL
    auto req = recv_request(p.server);
    ASSERT_EQ(req.fds.size(), 1u);
    close(req.fds[0]);
}

TEST_F(CppLayerTest, PreserveListeningSocketChecksAcceptConn) {
    Pair p;
    auto s = session_on(p);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    try {
        liveupdate::preserve_listening_socket(s, 1, sock);
        FAIL() << "no exception";
    } catch (const liveupdate::Error& e) {
        EXPECT_EQ(e.errno_value(), EINVAL);
    }
    char c;
    EXPECT_TRUE(recv(p.server, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);  // nothing sent

    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;  // autobind in the abstract namespace
    ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&sa), sizeof(sa_family_t)), 0);
    ASSERT_EQ(listen(sock, 1), 0);
    send_reply(p.server, 0, nullptr, 0);
    liveupdate::preserve_listening_socket(s, 1, sock);
    auto req = recv_request(p.server);
    ASSERT_EQ(req.fds.size(), 1u);
    close(req.fds[0]);
    close(sock);
}

}  // namespace
