// SPDX-License-Identifier: Apache-2.0
// SocketHandler through the FileHandler interface, without the engine:
// preserve on the outgoing side, traffic while "in transit", then retrieve
// from a dup of the engine's fd (what crosses the handover) with the bytes
// preserve produced. Every socket binds to loopback only.
#include "handlers/socket_handler.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "handler_test_util.hpp"
#include "unique_fd.hpp"

namespace lu {
namespace {

using testing::Incoming;
using testing::Outgoing;
using testing::preserve;
using testing::retrieve;

// The whole trip for one socket, as the engine does it: the caller's and the
// old instance's fds are closed, only the retrieved one is left.
int round_trip(FileHandler& h, UniqueFd& sock, Incoming& in) {
    Outgoing out;
    if (int r = preserve(h, sock.get(), out); r < 0) return r;
    if (int r = h.freeze(out.args); r < 0) return r;
    sock.reset();
    return retrieve(h, out.fd.get(), out.args.serialized_data, in);
}

// A guard against a hang, not a timing assertion.
bool wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 30000) == 1;
}

std::string recv_exactly(int fd, size_t n) {
    std::string s;
    char buf[4096];
    while (s.size() < n && wait_readable(fd)) {
        const ssize_t r = recv(fd, buf, std::min(sizeof buf, n - s.size()), 0);
        if (r <= 0) break;
        s.append(buf, static_cast<size_t>(r));
    }
    return s;
}

bool send_all(int fd, const std::string& s) {
    return send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
}

UniqueFd make_socket(int family, int type) {
    return UniqueFd(socket(family, type | SOCK_CLOEXEC, 0));
}

UniqueFd tcp_listener(sockaddr_in* addr) {
    UniqueFd s = make_socket(AF_INET, SOCK_STREAM);
    *addr = sockaddr_in{};
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (!s || bind(s.get(), reinterpret_cast<sockaddr*>(addr), sizeof *addr) < 0 ||
        listen(s.get(), 16) < 0 ||
        getsockname(s.get(), reinterpret_cast<sockaddr*>(addr), &len) < 0)
        s.reset();
    return s;
}

UniqueFd tcp_connect(const sockaddr_in& addr) {
    UniqueFd c = make_socket(AF_INET, SOCK_STREAM);
    if (c && connect(c.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) c.reset();
    return c;
}

UniqueFd accept_one(int listener) {
    if (!wait_readable(listener)) return UniqueFd();
    return UniqueFd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// A temporary directory for unix socket paths, removed with what is in it.
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/lu-socket-test-XXXXXX";
        if (mkdtemp(tmpl)) path_ = tmpl;
    }
    ~TempDir() {
        for (const auto& f : files_) unlink(f.c_str());
        if (!path_.empty()) rmdir(path_.c_str());
    }
    sockaddr_un addr(const char* name) {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        files_.push_back(path_ + "/" + name);
        std::strncpy(a.sun_path, files_.back().c_str(), sizeof a.sun_path - 1);
        return a;
    }
    bool ok() const { return !path_.empty(); }

  private:
    std::string path_;
    std::vector<std::string> files_;
};

TEST(SocketHandlerTest, CompatibleIsSocketV1) {
    EXPECT_EQ(SocketHandler().compatible(), "socket-v1");
}

TEST(SocketHandlerTest, TcpListenerKeepsItsQueueAndKeepsAccepting) {
    SocketHandler h;
    sockaddr_in addr;
    UniqueFd listener = tcp_listener(&addr);
    ASSERT_TRUE(listener);
    ASSERT_TRUE(h.can_preserve(listener.get()));
    Outgoing out;
    ASSERT_EQ(preserve(h, listener.get(), out), 0);
    ASSERT_EQ(h.freeze(out.args), 0);
    listener.reset();

    // In transit: nobody accepts, the kernel queues the connection.
    UniqueFd early = tcp_connect(addr);
    ASSERT_TRUE(early);
    ASSERT_TRUE(send_all(early.get(), "queued"));

    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    out.fd.reset();
    EXPECT_EQ(fcntl(in.file.get(), F_GETFD), FD_CLOEXEC);
    UniqueFd served = accept_one(in.file.get());
    ASSERT_TRUE(served);
    EXPECT_EQ(recv_exactly(served.get(), 6), "queued");

    UniqueFd late = tcp_connect(addr);
    ASSERT_TRUE(late);
    UniqueFd served2 = accept_one(in.file.get());
    ASSERT_TRUE(served2);
    ASSERT_TRUE(send_all(served2.get(), "hello"));
    EXPECT_EQ(recv_exactly(late.get(), 5), "hello");
    h.finish(in.args);
}

TEST(SocketHandlerTest, TcpConnectionLosesNoByte) {
    SocketHandler h;
    sockaddr_in addr;
    UniqueFd listener = tcp_listener(&addr);
    ASSERT_TRUE(listener);
    UniqueFd client = tcp_connect(addr);
    ASSERT_TRUE(client);
    UniqueFd server = accept_one(listener.get());
    ASSERT_TRUE(server);

    ASSERT_TRUE(send_all(client.get(), "before|"));
    ASSERT_TRUE(send_all(server.get(), "BEFORE|"));
    Outgoing out_c, out_s;
    ASSERT_EQ(preserve(h, client.get(), out_c), 0);
    ASSERT_EQ(preserve(h, server.get(), out_s), 0);
    // After preserve: the old instance's holders may still write.
    ASSERT_TRUE(send_all(client.get(), "during|"));
    ASSERT_TRUE(send_all(server.get(), "DURING|"));
    ASSERT_EQ(h.freeze(out_c.args), 0);
    ASSERT_EQ(h.freeze(out_s.args), 0);
    client.reset();
    server.reset();

    Incoming in_c, in_s;
    ASSERT_EQ(retrieve(h, out_c.fd.get(), out_c.args.serialized_data, in_c), 0);
    ASSERT_EQ(retrieve(h, out_s.fd.get(), out_s.args.serialized_data, in_s), 0);
    out_c.fd.reset();
    out_s.fd.reset();
    ASSERT_TRUE(send_all(in_c.file.get(), "after"));
    ASSERT_TRUE(send_all(in_s.file.get(), "AFTER"));
    EXPECT_EQ(recv_exactly(in_s.file.get(), 19), "before|during|after");
    EXPECT_EQ(recv_exactly(in_c.file.get(), 19), "BEFORE|DURING|AFTER");
    h.finish(in_c.args);
    h.finish(in_s.args);
}

TEST(SocketHandlerTest, Ipv6Listener) {
    SocketHandler h;
    UniqueFd s = make_socket(AF_INET6, SOCK_STREAM);
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_loopback;
    if (!s || bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        GTEST_SKIP() << "no IPv6 loopback: " << std::strerror(errno);
    socklen_t len = sizeof addr;
    ASSERT_EQ(listen(s.get(), 4), 0);
    ASSERT_EQ(getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    Incoming in;
    ASSERT_EQ(round_trip(h, s, in), 0);
    UniqueFd c = make_socket(AF_INET6, SOCK_STREAM);
    ASSERT_TRUE(c);
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_TRUE(accept_one(in.file.get()));
    h.finish(in.args);
}

TEST(SocketHandlerTest, UnixStreamListener) {
    SocketHandler h;
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    sockaddr_un addr = dir.addr("listener");
    UniqueFd s = make_socket(AF_UNIX, SOCK_STREAM);
    ASSERT_TRUE(s);
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(listen(s.get(), 4), 0);
    Incoming in;
    ASSERT_EQ(round_trip(h, s, in), 0);
    UniqueFd c = make_socket(AF_UNIX, SOCK_STREAM);
    ASSERT_TRUE(c);
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    UniqueFd served = accept_one(in.file.get());
    ASSERT_TRUE(served);
    ASSERT_TRUE(send_all(c.get(), "unix"));
    EXPECT_EQ(recv_exactly(served.get(), 4), "unix");
    h.finish(in.args);
}

TEST(SocketHandlerTest, UnixDatagramBound) {
    SocketHandler h;
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    sockaddr_un addr = dir.addr("dgram");
    UniqueFd s = make_socket(AF_UNIX, SOCK_DGRAM);
    ASSERT_TRUE(s);
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    Outgoing out;
    ASSERT_EQ(preserve(h, s.get(), out), 0);
    s.reset();
    UniqueFd sender = make_socket(AF_UNIX, SOCK_DGRAM);
    ASSERT_TRUE(sender);
    ASSERT_EQ(
        sendto(sender.get(), "in transit", 10, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr),
        10);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    out.fd.reset();
    EXPECT_EQ(recv_exactly(in.file.get(), 10), "in transit");
    h.finish(in.args);
}

TEST(SocketHandlerTest, UnixSeqpacketPair) {
    SocketHandler h;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    Outgoing out;
    ASSERT_EQ(preserve(h, a.get(), out), 0);
    a.reset();
    ASSERT_TRUE(send_all(b.get(), "one"));
    ASSERT_TRUE(send_all(b.get(), "two"));
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    out.fd.reset();
    char buf[16];
    ASSERT_TRUE(wait_readable(in.file.get()));
    EXPECT_EQ(recv(in.file.get(), buf, sizeof buf, 0), 3);  // boundaries kept
    EXPECT_EQ(recv(in.file.get(), buf, sizeof buf, 0), 3);
    EXPECT_EQ(std::string(buf, 3), "two");
    ASSERT_TRUE(send_all(in.file.get(), "back"));
    EXPECT_EQ(recv_exactly(b.get(), 4), "back");
    h.finish(in.args);
}

TEST(SocketHandlerTest, UdpBound) {
    SocketHandler h;
    UniqueFd s = make_socket(AF_INET, SOCK_DGRAM);
    ASSERT_TRUE(s);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    Outgoing out;
    ASSERT_EQ(preserve(h, s.get(), out), 0);
    s.reset();
    UniqueFd sender = make_socket(AF_INET, SOCK_DGRAM);
    ASSERT_TRUE(sender);
    ASSERT_EQ(sendto(sender.get(), "udp", 3, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr),
              3);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    out.fd.reset();
    EXPECT_EQ(recv_exactly(in.file.get(), 3), "udp");
    h.finish(in.args);
}

// A connection reset in transit reports no peer any more: still retrievable,
// the application sees the reset itself.
TEST(SocketHandlerTest, ConnectionResetInTransitIsRetrievable) {
    SocketHandler h;
    sockaddr_in addr;
    UniqueFd listener = tcp_listener(&addr);
    ASSERT_TRUE(listener);
    UniqueFd client = tcp_connect(addr);
    ASSERT_TRUE(client);
    UniqueFd server = accept_one(listener.get());
    ASSERT_TRUE(server);
    Outgoing out;
    ASSERT_EQ(preserve(h, server.get(), out), 0);
    server.reset();
    linger lg{1, 0};  // close with RST
    ASSERT_EQ(setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    client.reset();
    ASSERT_TRUE(wait_readable(out.fd.get()));
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    char c;
    EXPECT_EQ(recv(in.file.get(), &c, 1, 0), -1);
    EXPECT_EQ(errno, ECONNRESET);
    h.finish(in.args);
}

TEST(SocketHandlerTest, CanPreserveRefusals) {
    SocketHandler h;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    UniqueFd r(p[0]), w(p[1]);
    EXPECT_FALSE(h.can_preserve(r.get()));
    UniqueFd mfd(memfd_create("lu-test", MFD_CLOEXEC));
    ASSERT_TRUE(mfd);
    EXPECT_FALSE(h.can_preserve(mfd.get()));
    UniqueFd nl(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    ASSERT_TRUE(nl);
    EXPECT_FALSE(h.can_preserve(nl.get()));
    EXPECT_FALSE(h.can_preserve(-1));
}

TEST(SocketHandlerTest, CanPreserveRefusesRawSocket) {
    UniqueFd raw(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
    if (!raw) GTEST_SKIP() << "cannot create a raw socket: " << std::strerror(errno);
    EXPECT_FALSE(SocketHandler().can_preserve(raw.get()));
}

// A Unix socket could hold a session's own fd in its queue, and the daemon
// holding it would keep that session alive by itself: refused, whatever its
// type or state.
TEST(SocketHandlerTest, CanPreserveRefusesUnixSockets) {
    SocketHandler h;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    EXPECT_FALSE(h.can_preserve(a.get()));
    for (int type : {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET}) {
        UniqueFd s = make_socket(AF_UNIX, type);
        ASSERT_TRUE(s);
        EXPECT_FALSE(h.can_preserve(s.get())) << type;
    }
    UniqueFd tcp = make_socket(AF_INET, SOCK_STREAM);
    EXPECT_TRUE(h.can_preserve(tcp.get()));
}

TEST(SocketHandlerTest, CanPreserveRefusesOwnObjects) {
    sockaddr_in addr{};
    UniqueFd own = tcp_listener(&addr);
    UniqueFd other = make_socket(AF_INET, SOCK_STREAM);
    ASSERT_TRUE(own && other);
    struct stat own_st;
    ASSERT_EQ(fstat(own.get(), &own_st), 0);
    // As the daemon does: by inode, so any dup of its socket is refused too.
    SocketHandler h([&](int fd) {
        struct stat st;
        return fstat(fd, &st) == 0 && st.st_ino == own_st.st_ino && st.st_dev == own_st.st_dev;
    });
    UniqueFd own_dup(dup(own.get()));
    EXPECT_FALSE(h.can_preserve(own.get()));
    EXPECT_FALSE(h.can_preserve(own_dup.get()));
    EXPECT_TRUE(h.can_preserve(other.get()));
    EXPECT_TRUE(SocketHandler().can_preserve(own.get()));
}

class SocketRetrieveRefusalTest : public ::testing::Test {
  protected:
    void SetUp() override {
        listener_ = tcp_listener(&addr_);
        ASSERT_TRUE(listener_);
        ASSERT_EQ(preserve(h_, listener_.get(), out_), 0);
        ASSERT_EQ(out_.args.serialized_data.size(), sizeof(SocketSer));
        std::memcpy(&ser_, out_.args.serialized_data.data(), sizeof ser_);
    }
    int retrieve_with(int fd, std::vector<uint8_t> bytes) {
        Incoming in;
        const int r = retrieve(h_, fd, std::move(bytes), in);
        if (r < 0) {
            EXPECT_EQ(in.args.file, -1);
        }
        h_.finish(in.args);
        return r;
    }
    int retrieve_with(const SocketSer& s) {
        const auto* p = reinterpret_cast<const uint8_t*>(&s);
        return retrieve_with(out_.fd.get(), {p, p + sizeof s});
    }

    SocketHandler h_;
    sockaddr_in addr_;
    UniqueFd listener_;
    Outgoing out_;
    SocketSer ser_{};
};

TEST_F(SocketRetrieveRefusalTest, BaselineSucceeds) {
    EXPECT_EQ(ser_.flags, kSocketListening);
    EXPECT_EQ(ser_.family, AF_INET);
    EXPECT_EQ(ser_.type, SOCK_STREAM);
    EXPECT_EQ(ser_.protocol, IPPROTO_TCP);
    EXPECT_EQ(ser_.local_len, sizeof(sockaddr_in));
    EXPECT_EQ(retrieve_with(ser_), 0);
}

TEST_F(SocketRetrieveRefusalTest, WrongLengthOrGarbage) {
    auto bytes = out_.args.serialized_data;
    bytes.pop_back();
    EXPECT_EQ(retrieve_with(out_.fd.get(), bytes), -EINVAL);
    EXPECT_EQ(retrieve_with(out_.fd.get(), {}), -EINVAL);
    EXPECT_EQ(retrieve_with(out_.fd.get(), std::vector<uint8_t>(sizeof(SocketSer), 0xA5)), -EINVAL);
}

TEST_F(SocketRetrieveRefusalTest, InconsistentFields) {
    auto expect_einval = [&](auto mutate) {
        SocketSer s = ser_;
        mutate(s);
        EXPECT_EQ(retrieve_with(s), -EINVAL);
    };
    expect_einval([](SocketSer& s) { s.version = 2; });
    expect_einval([](SocketSer& s) { s.flags |= 1u << 5; });
    expect_einval([](SocketSer& s) { s.pad = 1; });
    expect_einval([](SocketSer& s) { s.family = AF_NETLINK; });
    expect_einval([](SocketSer& s) { s.type = SOCK_RAW; });
    expect_einval([](SocketSer& s) { s.local_len = sizeof(sockaddr_storage) + 1; });
    expect_einval([](SocketSer& s) { s.local_len = 1; });
    expect_einval([](SocketSer& s) { s.local[0] ^= 0xff; });                // address family
    expect_einval([](SocketSer& s) { s.local[sizeof(sockaddr_in)] = 1; });  // past the length
    expect_einval([](SocketSer& s) { s.peer_len = sizeof(sockaddr_in); });  // without the flag
    expect_einval([](SocketSer& s) { s.flags |= kSocketHasPeer; });         // without a peer
    // Well-formed but not this socket.
    expect_einval([](SocketSer& s) { s.flags &= ~kSocketListening; });
    expect_einval([](SocketSer& s) { s.protocol = IPPROTO_UDP; });
    expect_einval([](SocketSer& s) { s.local[2] ^= 1; });  // the port
}

TEST_F(SocketRetrieveRefusalTest, MismatchingSocket) {
    sockaddr_in other_addr;
    UniqueFd other = tcp_listener(&other_addr);  // another port
    ASSERT_TRUE(other);
    EXPECT_EQ(retrieve_with(other.get(), out_.args.serialized_data), -EINVAL);
    UniqueFd udp = make_socket(AF_INET, SOCK_DGRAM);
    ASSERT_TRUE(udp);
    EXPECT_EQ(retrieve_with(udp.get(), out_.args.serialized_data), -EINVAL);
    // The same listener, no longer listening (shut down in transit).
    ASSERT_EQ(shutdown(listener_.get(), SHUT_RDWR), 0);
    EXPECT_EQ(retrieve_with(out_.fd.get(), out_.args.serialized_data), -EINVAL);
}

TEST_F(SocketRetrieveRefusalTest, NotASocket) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    UniqueFd r(p[0]), w(p[1]);
    EXPECT_EQ(retrieve_with(r.get(), out_.args.serialized_data), -EINVAL);
    UniqueFd mfd(memfd_create("lu-test", MFD_CLOEXEC));
    ASSERT_TRUE(mfd);
    EXPECT_EQ(retrieve_with(mfd.get(), out_.args.serialized_data), -EINVAL);
}

TEST(SocketHandlerTest, RetrieveRefusesADifferentPeer) {
    SocketHandler h;
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    sockaddr_un addr = dir.addr("server");
    UniqueFd server = make_socket(AF_UNIX, SOCK_DGRAM), c1 = make_socket(AF_UNIX, SOCK_DGRAM);
    ASSERT_TRUE(server && c1);
    ASSERT_EQ(bind(server.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(connect(c1.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    Outgoing out;
    ASSERT_EQ(preserve(h, c1.get(), out), 0);
    // Reconnected elsewhere in transit by a holder in the old instance.
    sockaddr_un other = dir.addr("other");
    UniqueFd server2 = make_socket(AF_UNIX, SOCK_DGRAM);
    ASSERT_TRUE(server2);
    ASSERT_EQ(bind(server2.get(), reinterpret_cast<sockaddr*>(&other), sizeof other), 0);
    ASSERT_EQ(connect(c1.get(), reinterpret_cast<sockaddr*>(&other), sizeof other), 0);
    Incoming in;
    EXPECT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), -EINVAL);
    h.finish(in.args);
}

TEST(SocketHandlerTest, FinishLeavesTheFdsAlone) {
    SocketHandler h;
    sockaddr_in addr;
    UniqueFd listener = tcp_listener(&addr);
    ASSERT_TRUE(listener);
    Outgoing out;
    ASSERT_EQ(preserve(h, listener.get(), out), 0);
    for (int status : {0, -EINVAL}) {
        FileOpArgs args;
        args.handler = &h;
        args.preserved = out.fd.get();
        args.serialized_data = out.args.serialized_data;
        args.retrieve_status = status;
        EXPECT_TRUE(h.can_finish(args));
        h.finish(args);
        EXPECT_EQ(fcntl(out.fd.get(), F_GETFD), FD_CLOEXEC);
    }
    h.unpreserve(out.args);
    EXPECT_EQ(fcntl(out.fd.get(), F_GETFD), FD_CLOEXEC);
}

}  // namespace
}  // namespace lu
