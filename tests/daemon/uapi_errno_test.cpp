// SPDX-License-Identifier: Apache-2.0
// Every uAPI errno path through the real daemon (docs/kernel-semantics.md#ioctl-order), with
// hand-built structs through lu_ioctl (size, tail bytes, command encodings
// under our control) and through the wrappers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

// A buffer for a struct plus an arbitrary tail, aligned like the struct.
struct ArgBuf {
    alignas(8) uint8_t b[4096] = {};
    template <typename T>
    T* as() {
        return reinterpret_cast<T*>(b);
    }
    void set_size(uint32_t size) { memcpy(b, &size, sizeof size); }
    int32_t fd() const {
        int32_t v;
        memcpy(&v, b + 4, sizeof v);
        return v;
    }
};

constexpr unsigned long kCreateIowr =
    _IOWR(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION, liveupdate_ioctl_create_session);

class UapiErrno : public ::testing::Test {
protected:
    void SetUp() override {
        int fd = lu_open();
        ASSERT_GE(fd, 0) << strerror(-fd);
        ctl_.reset(fd);
        EXPECT_TRUE(has_cloexec(ctl_.get()));
    }
    Fd create(const std::string& name) {
        int s = lu_create_session(ctl_.get(), name.c_str());
        EXPECT_GE(s, 0) << name << ": " << strerror(-s);
        if (s >= 0) {
            EXPECT_TRUE(has_cloexec(s)) << "session fd without FD_CLOEXEC";
        }
        return Fd(s < 0 ? -1 : s);
    }
    DaemonProcess d_;
    Fd ctl_;
};

// ---- the control fd ----

TEST_F(UapiErrno, ControlNrOutOfRangeIsEinval) {
    ArgBuf a;
    auto* c = a.as<liveupdate_ioctl_create_session>();
    c->size = sizeof *c;
    memcpy(c->name, "x", 1);
    EXPECT_EQ(lu_ioctl(ctl_.get(), _IO(LIVEUPDATE_IOCTL_TYPE, 2), &a), -EINVAL);
    EXPECT_EQ(lu_ioctl(ctl_.get(), _IO(LIVEUPDATE_IOCTL_TYPE, 0x40), &a), -EINVAL);
    EXPECT_EQ(lu_ioctl(ctl_.get(), _IO(LIVEUPDATE_IOCTL_TYPE, 0xff), &a), -EINVAL);
    // Step 1 comes before get_user(size): a NULL arg is still EINVAL.
    EXPECT_EQ(lu_ioctl(ctl_.get(), _IO(LIVEUPDATE_IOCTL_TYPE, 2), nullptr), -EINVAL);
    // Nothing was created.
    EXPECT_EQ(count_sessions(d_.status()), 0u);
}

TEST_F(UapiErrno, ControlFullCmdMismatchIsEnotty) {
    ArgBuf a;
    auto* c = a.as<liveupdate_ioctl_create_session>();
    c->size = sizeof *c;
    memcpy(c->name, "iowr", 4);
    EXPECT_EQ(lu_ioctl(ctl_.get(), kCreateIowr, &a), -ENOTTY);
    // ENOTTY (step 3) comes before the size check (step 4).
    c->size = 0;
    EXPECT_EQ(lu_ioctl(ctl_.get(), kCreateIowr, &a), -ENOTTY);
    // Another type byte, same nr.
    c->size = sizeof *c;
    EXPECT_EQ(lu_ioctl(ctl_.get(), _IO(0x12, LIVEUPDATE_CMD_RETRIEVE_SESSION), &a), -ENOTTY);
    EXPECT_EQ(count_sessions(d_.status()), 0u);
}

TEST_F(UapiErrno, ControlSizeChecks) {
    ArgBuf a;
    auto* c = a.as<liveupdate_ioctl_create_session>();
    memcpy(c->name, "sized", 5);
    for (uint32_t size : {0u, 4u, 8u, 71u}) {
        c->size = size;
        EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -EINVAL) << size;
    }
    // Above the struct, a non-zero tail byte: E2BIG, nothing created.
    c->size = 80;
    a.b[79] = 1;
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -E2BIG);
    a.b[79] = 0;
    a.b[72] = 0xff;
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -E2BIG);
    // Non-zero byte within the bytes the wire carries, near its end.
    a.b[72] = 0;
    c->size = 2048;
    a.b[LU_WIRE_MAX_ARG - 1] = 7;
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -E2BIG);
    a.b[LU_WIRE_MAX_ARG - 1] = 0;
    // size > LU_WIRE_MAX_ARG with a non-zero byte far out (not sent: flagged).
    c->size = 4096;
    a.b[4000] = 1;
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -E2BIG);
    EXPECT_EQ(count_sessions(d_.status()), 0u);
    a.b[4000] = 0;

    // Above the struct with a zero tail: OK, the fd is written back.
    c->size = 80;
    c->fd = -1;
    ASSERT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), 0);
    Fd s1(a.fd());
    ASSERT_TRUE(s1);
    EXPECT_TRUE(has_cloexec(s1.get()));
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(s1.get(), name), 0);
    EXPECT_STREQ(name, "sized");
    // Huge size, all zero past the struct: OK too.
    memset(c->name, 0, sizeof c->name);
    memcpy(c->name, "huge", 4);
    c->size = 4096;
    c->fd = -1;
    ASSERT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), 0);
    Fd s2(a.fd());
    ASSERT_TRUE(s2);
    EXPECT_TRUE(has_cloexec(s2.get()));
    // The reply wrote back only min(size, ksize) bytes: the tail is intact.
    for (size_t i = sizeof(liveupdate_ioctl_create_session); i < 4096; i++)
        ASSERT_EQ(a.b[i], 0) << i;
    json st = d_.status();
    EXPECT_TRUE(find_session(st, "sized"));
    EXPECT_TRUE(find_session(st, "huge"));
}

TEST_F(UapiErrno, ControlNullArgIsEfault) {
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, nullptr), -EFAULT);
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_RETRIEVE_SESSION, nullptr), -EFAULT);
    EXPECT_EQ(lu_create_session(ctl_.get(), nullptr), -EFAULT);
    // The connection is still fine.
    Fd s = create("after-efault");
    EXPECT_TRUE(s);
}

TEST_F(UapiErrno, ControlNames) {
    EXPECT_EQ(lu_create_session(ctl_.get(), ""), -EINVAL);
    ArgBuf a;
    auto* c = a.as<liveupdate_ioctl_create_session>();
    c->size = sizeof *c;
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -EINVAL);  // empty
    memset(c->name, 'n', sizeof c->name);  // 64 bytes, no NUL
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -EINVAL);
    EXPECT_EQ(lu_create_session(ctl_.get(), std::string(64, 'n').c_str()), -EINVAL);
    EXPECT_EQ(lu_create_session(ctl_.get(), std::string(100, 'n').c_str()), -EINVAL);
    EXPECT_EQ(count_sessions(d_.status()), 0u);

    // 63 bytes: the longest name.
    std::string longest(63, 'L');
    longest[0] = 'A';
    longest[62] = 'Z';
    Fd s = create(longest);
    ASSERT_TRUE(s);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(s.get(), name), 0);
    EXPECT_EQ(std::string(name), longest);
    EXPECT_TRUE(find_session(d_.status(), longest));

    // Bytes after the NUL do not count: "dup\0garbage" is "dup".
    Fd dup = create("dup");
    ASSERT_TRUE(dup);
    EXPECT_EQ(lu_create_session(ctl_.get(), "dup"), -EEXIST);
    memset(c->name, 0, sizeof c->name);
    memcpy(c->name, "dup\0garbage", 11);
    EXPECT_EQ(lu_ioctl(ctl_.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -EEXIST);
    // Retrieve: only incoming sessions, and there are none in epoch 0.
    EXPECT_EQ(lu_retrieve_session(ctl_.get(), "dup"), -ENOENT);
    EXPECT_EQ(lu_retrieve_session(ctl_.get(), "unknown"), -ENOENT);
    EXPECT_EQ(lu_retrieve_session(ctl_.get(), ""), -ENOENT);  // no name validation on retrieve
    EXPECT_EQ(count_sessions(d_.status()), 2u);
}

// Names are bytes (docs/kernel-semantics.md#session-names: no character set). Status is
// JSON: a name that is not UTF-8 must not take the daemon down.
TEST_F(UapiErrno, NonUtf8NameDoesNotBreakStatus) {
    pid_t pid = d_.pid();
    const std::string raw_name = "bin\xff\xfe\x80name";
    Fd s = create(raw_name);
    ASSERT_TRUE(s);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(s.get(), name), 0);
    EXPECT_EQ(std::string(name), raw_name);
    Fd ok = create("plain");
    json st = d_.status();
    ASSERT_TRUE(st.is_object()) << "status does not answer with a non-UTF-8 session name";
    EXPECT_EQ(st["pid"], pid);
    EXPECT_EQ(count_sessions(st), 2u);
    // The daemon still serves.
    EXPECT_EQ(lu_get_name(ok.get(), name), 0);
    EXPECT_EQ(lu_create_session(ctl_.get(), raw_name.c_str()), -EEXIST);
}

// ---- the session fd ----

TEST_F(UapiErrno, SessionNrRangeAndCmdMismatch) {
    Fd s = create("sess");
    ASSERT_TRUE(s);
    ArgBuf a;
    a.set_size(sizeof(liveupdate_session_get_name));
    // 0x80..0x82 are the hand-off (handoff_test.cpp; --strict: EINVAL as here).
    for (unsigned nr : {0x00u, 0x01u, 0x3fu, 0x44u, 0x83u, 0xffu})
        EXPECT_EQ(lu_ioctl(s.get(), _IO(LIVEUPDATE_IOCTL_TYPE, nr), &a), -EINVAL) << nr;
    // The control commands are not session commands.
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_IOCTL_CREATE_SESSION, &a), -EINVAL);
    EXPECT_EQ(lu_ioctl(s.get(), _IO(LIVEUPDATE_IOCTL_TYPE, 0x3f), nullptr), -EINVAL);  // before EFAULT
    // Full cmd mismatch: ENOTTY, before the type check and the size check.
    EXPECT_EQ(lu_ioctl(s.get(),
                       _IOWR(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME,
                             liveupdate_session_get_name),
                       &a),
              -ENOTTY);
    EXPECT_EQ(lu_ioctl(s.get(),
                       _IOW(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH,
                            liveupdate_session_finish),
                       &a),
              -ENOTTY);  // FINISH on outgoing would be EINVAL: ENOTTY comes first
    a.set_size(0);
    EXPECT_EQ(lu_ioctl(s.get(),
                       _IOWR(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
                             liveupdate_session_preserve_fd),
                       &a),
              -ENOTTY);
    // NULL arg on a valid nr: EFAULT (step 2).
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, nullptr), -EFAULT);
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, nullptr), -EFAULT);
    // Still usable.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(s.get(), name), 0);
    EXPECT_STREQ(name, "sess");
}

TEST_F(UapiErrno, SessionTypeCheckBeforeSize) {
    Fd s = create("outgoing");
    ASSERT_TRUE(s);
    ArgBuf a;
    for (uint32_t size : {16u, 8u, 0u}) {
        a.set_size(size);
        EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_FINISH, &a), -EINVAL) << size;
        EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_RETRIEVE_FD, &a), -EINVAL) << size;
    }
    // Even with a non-zero tail (E2BIG is step 6, the type check step 4).
    a.set_size(64);
    a.b[40] = 1;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_FINISH, &a), -EINVAL);
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_RETRIEVE_FD, &a), -EINVAL);
    EXPECT_EQ(lu_finish(s.get()), -EINVAL);
    EXPECT_EQ(lu_retrieve_fd(s.get(), 1), -EINVAL);
}

TEST_F(UapiErrno, SessionSizeChecks) {
    Fd s = create("sizes");
    ASSERT_TRUE(s);
    Fd m = make_memfd("content");
    ArgBuf a;
    auto* p = a.as<liveupdate_session_preserve_fd>();
    p->fd = m.get();
    p->token = 1;
    for (uint32_t size : {0u, 8u, 15u}) {
        p->size = size;
        EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &a), -EINVAL) << size;
    }
    p->size = 24;
    a.b[20] = 1;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &a), -E2BIG);
    a.b[20] = 0;
    p->size = 3000;
    a.b[2999] = 1;  // past LU_WIRE_MAX_ARG: the client flags it
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &a), -E2BIG);
    a.b[2999] = 0;
    // E2BIG (step 6) before EBADF (the operation).
    p->size = 24;
    p->fd = -1;
    a.b[23] = 9;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &a), -E2BIG);
    a.b[23] = 0;
    EXPECT_TRUE(find_session(d_.status(), "sizes").value()["files"].empty());

    // A zero tail: accepted.
    p->fd = m.get();
    p->size = 3000;
    ASSERT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &a), 0);
    EXPECT_EQ(p->fd, m.get());  // the whole struct is written back, inputs included
    EXPECT_EQ(p->token, 1u);

    // GET_NAME: size and reserved.
    ArgBuf g;
    auto* gn = g.as<liveupdate_session_get_name>();
    gn->size = 71;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), -EINVAL);
    gn->size = sizeof *gn;
    gn->reserved = 1;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), -EINVAL);
    gn->reserved = 0x80000000u;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), -EINVAL);
    // Bytes after the NUL are the caller's own (the kernel copied them in first).
    gn->reserved = 0;
    memset(gn->name, 'x', sizeof gn->name);
    ASSERT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), 0);
    EXPECT_EQ(memcmp(gn->name, "sizes\0", 6), 0);
    EXPECT_EQ(gn->name[6], 'x');
    EXPECT_EQ(gn->name[63], 'x');
    // A larger size with a zero tail: fine, and the tail stays zero.
    gn->size = 200;
    memset(gn->name, 0, sizeof gn->name);
    ASSERT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), 0);
    EXPECT_STREQ(reinterpret_cast<char*>(gn->name), "sizes");
    gn->size = 200;
    g.b[150] = 3;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), -E2BIG);
}

TEST_F(UapiErrno, PreserveFdErrors) {
    Fd s = create("files");
    Fd other = create("other");
    ASSERT_TRUE(s);
    ASSERT_TRUE(other);
    Fd m = make_memfd("memfd bytes");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    // Duplicate token: EEXIST, whatever the fd (EEXIST is checked first).
    Fd m2 = make_memfd("second");
    EXPECT_EQ(lu_preserve_fd(s.get(), m2.get(), 1), -EEXIST);
    EXPECT_EQ(lu_preserve_fd(s.get(), -1, 1), -EEXIST);
    EXPECT_EQ(lu_preserve_fd(s.get(), closed_fd_number(), 1), -EEXIST);
    Fd devnull(open("/dev/null", O_RDWR | O_CLOEXEC));
    EXPECT_EQ(lu_preserve_fd(s.get(), devnull.get(), 1), -EEXIST);
    // Bad fds.
    EXPECT_EQ(lu_preserve_fd(s.get(), -1, 2), -EBADF);
    EXPECT_EQ(lu_preserve_fd(s.get(), closed_fd_number(), 3), -EBADF);
    EXPECT_EQ(lu_preserve_fd(s.get(), 1 << 20, 3), -EBADF);
    // Unsupported files: ENOENT.
    EXPECT_EQ(lu_preserve_fd(s.get(), devnull.get(), 4), -ENOENT);
    char tmpl[] = "/tmp/lu-daemon-test-XXXXXX";
    Fd regular(mkstemp(tmpl));
    unlink(tmpl);
    EXPECT_EQ(lu_preserve_fd(s.get(), regular.get(), 4), -ENOENT);  // not shmem
    int pipefd[2];
    ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    Fd pr(pipefd[0]), pw(pipefd[1]);
    EXPECT_EQ(lu_preserve_fd(s.get(), pr.get(), 4), -ENOENT);
    // The same memfd twice: EBUSY, in this session or another one, also
    // through another fd of the same file.
    EXPECT_EQ(lu_preserve_fd(s.get(), m.get(), 5), -EBUSY);
    EXPECT_EQ(lu_preserve_fd(other.get(), m.get(), 1), -EBUSY);
    Fd mdup(fcntl(m.get(), F_DUPFD_CLOEXEC, 0));
    EXPECT_EQ(lu_preserve_fd(other.get(), mdup.get(), 6), -EBUSY);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", m.get());
    Fd reopened(open(path, O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(reopened);
    EXPECT_EQ(lu_preserve_fd(other.get(), reopened.get(), 7), -EBUSY);  // same inode
    // Another memfd: fine, any u64 token.
    EXPECT_EQ(lu_preserve_fd(s.get(), m2.get(), UINT64_MAX), 0);
    Fd m3 = make_memfd("");
    EXPECT_EQ(lu_preserve_fd(s.get(), m3.get(), 0), 0);

    // A listening TCP socket on loopback.
    Fd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(tcp.get(), 4), 0);
    EXPECT_EQ(lu_preserve_fd(s.get(), tcp.get(), 10), 0);
    EXPECT_EQ(lu_preserve_fd(other.get(), tcp.get(), 10), -EBUSY);

    // The daemon's own objects are not preservable: ENOENT.
    EXPECT_EQ(lu_preserve_fd(s.get(), s.get(), 20), -ENOENT);
    EXPECT_EQ(lu_preserve_fd(s.get(), other.get(), 21), -ENOENT);
    EXPECT_EQ(lu_preserve_fd(other.get(), s.get(), 22), -ENOENT);
    EXPECT_EQ(lu_preserve_fd(s.get(), ctl_.get(), 23), -ENOENT);
    Fd sdup(fcntl(s.get(), F_DUPFD_CLOEXEC, 0));
    EXPECT_EQ(lu_preserve_fd(other.get(), sdup.get(), 24), -ENOENT);
    // An admin connection is the daemon's too.
    Fd admin = raw_connect(d_.dir() + "/admin");
    ASSERT_TRUE(admin);
    EXPECT_EQ(lu_preserve_fd(s.get(), admin.get(), 25), -ENOENT);
    // Nor is any other Unix socket: its queue could hold a session's fd.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Fd u0(sv[0]), u1(sv[1]);
    EXPECT_EQ(lu_preserve_fd(s.get(), u0.get(), 26), -ENOENT);
    // An O_PATH fd opens nothing: EBADF, as the kernel's fget.
    Fd opath(open(path, O_PATH | O_CLOEXEC));
    ASSERT_TRUE(opath);
    EXPECT_EQ(lu_preserve_fd(s.get(), opath.get(), 27), -EBADF);

    // What is preserved, as status sees it.
    json st = d_.status();
    auto files = find_session(st, "files").value()["files"];
    ASSERT_EQ(files.size(), 4u);
    EXPECT_EQ(files[0]["token"], 1u);
    EXPECT_EQ(files[0]["handler"], "memfd-v2");
    EXPECT_EQ(files[0]["size"], 11);
    EXPECT_EQ(files[1]["token"], UINT64_MAX);
    EXPECT_EQ(files[2]["token"], 0u);
    EXPECT_EQ(files[3]["token"], 10u);
    EXPECT_EQ(files[3]["handler"], "socket-v1");
    EXPECT_TRUE(find_session(st, "other").value()["files"].empty());
}

TEST_F(UapiErrno, GetNameReservedIsEinval) {
    Fd s = create("named");
    ASSERT_TRUE(s);
    liveupdate_session_get_name g{};
    g.size = sizeof g;
    g.reserved = 2;
    EXPECT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), -EINVAL);
    EXPECT_EQ(g.name[0], 0);  // nothing written back on failure
    g.reserved = 0;
    ASSERT_EQ(lu_ioctl(s.get(), LIVEUPDATE_SESSION_GET_NAME, &g), 0);
    EXPECT_STREQ(reinterpret_cast<char*>(g.name), "named");
}

// ---- incoming sessions, after a live update ----

TEST(UapiIncoming, IncomingErrnos) {
    DaemonProcess d;
    const std::string alpha = "alpha contents", beta = "beta", gamma = "gamma!";
    // Kept across the update: the user's own fd to a preserved memfd, and a
    // TCP listener on loopback.
    Fd ma = make_memfd(alpha);
    Fd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(tcp.get(), 4), 0);
    socklen_t slen = sizeof sin;
    ASSERT_EQ(getsockname(tcp.get(), reinterpret_cast<sockaddr*>(&sin), &slen), 0);
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        Fd a(lu_create_session(ctl.get(), "a"));
        Fd b(lu_create_session(ctl.get(), "b"));
        Fd c(lu_create_session(ctl.get(), "c"));
        ASSERT_TRUE(a && b && c);
        Fd mb = make_memfd(beta), mc = make_memfd(gamma);
        ASSERT_EQ(lseek(ma.get(), 3, SEEK_SET), 3);  // the position is preserved too
        ASSERT_EQ(lu_preserve_fd(a.get(), ma.get(), 1), 0);
        ASSERT_EQ(lu_preserve_fd(a.get(), mb.get(), 2), 0);
        ASSERT_EQ(lu_preserve_fd(b.get(), mc.get(), 3), 0);
        ASSERT_EQ(lu_preserve_fd(b.get(), tcp.get(), 4), 0);
        pid_t old = d.pid();
        ctl.reset();
        // The session fds stay open across the update: they are what is preserved.
        ASSERT_EQ(d.reboot(), 0);
        EXPECT_NE(d.pid(), old);
        // The old instance's fds are dead.
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        EXPECT_EQ(lu_get_name(a.get(), name), -ESTALE);
    }
    json st = d.status();
    EXPECT_EQ(st["epoch"], 1);
    ASSERT_EQ(count_sessions(st), 3u);
    EXPECT_EQ(find_session(st, "a").value()["state"], "unretrieved");

    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd a(lu_retrieve_session(ctl.get(), "a"));
    ASSERT_TRUE(a) << strerror(-a.get());
    EXPECT_TRUE(has_cloexec(a.get()));
    // Retrieved once only.
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "a"), -EINVAL);
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "zzz"), -ENOENT);
    // An incoming name may be reused for an outgoing session.
    Fd a_out(lu_create_session(ctl.get(), "a"));
    ASSERT_TRUE(a_out) << strerror(-a_out.get());
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(a.get(), name), 0);
    EXPECT_STREQ(name, "a");

    // PRESERVE_FD needs an outgoing session: EINVAL, before the size check.
    Fd m = make_memfd("new");
    EXPECT_EQ(lu_preserve_fd(a.get(), m.get(), 99), -EINVAL);
    liveupdate_session_preserve_fd p{};
    p.size = 0;
    p.fd = m.get();
    EXPECT_EQ(lu_ioctl(a.get(), LIVEUPDATE_SESSION_PRESERVE_FD, &p), -EINVAL);
    // Unknown token.
    EXPECT_EQ(lu_retrieve_fd(a.get(), 42), -ENOENT);
    liveupdate_session_retrieve_fd r{};
    r.size = 15;
    r.token = 1;
    EXPECT_EQ(lu_ioctl(a.get(), LIVEUPDATE_SESSION_RETRIEVE_FD, &r), -EINVAL);

    // RETRIEVE_FD twice: one open file description, both FD_CLOEXEC.
    Fd f1(lu_retrieve_fd(a.get(), 1));
    Fd f2(lu_retrieve_fd(a.get(), 1));
    ASSERT_TRUE(f1) << strerror(-f1.get());
    ASSERT_TRUE(f2) << strerror(-f2.get());
    EXPECT_NE(f1.get(), f2.get());
    EXPECT_TRUE(has_cloexec(f1.get()));
    EXPECT_TRUE(has_cloexec(f2.get()));
    EXPECT_EQ(read_all_at(f1.get()), alpha);
    EXPECT_EQ(lseek(f1.get(), 0, SEEK_CUR), 3);  // where it was at the update
    // The same memory as the user's old fd (no copy), through a new open
    // file description (its own offset).
    ASSERT_EQ(pwrite(ma.get(), "A", 1, 0), 1);
    EXPECT_EQ(read_all_at(f1.get()), "Alpha contents");
    ASSERT_EQ(pwrite(ma.get(), "a", 1, 0), 1);
    ASSERT_EQ(lseek(f1.get(), 5, SEEK_SET), 5);
    EXPECT_EQ(lseek(ma.get(), 0, SEEK_CUR), 3);
    EXPECT_EQ(lseek(f2.get(), 0, SEEK_CUR), 5);
    char buf[3];
    ASSERT_EQ(read(f2.get(), buf, 3), 3);
    EXPECT_EQ(lseek(f1.get(), 0, SEEK_CUR), 8);
    Fd f3(lu_retrieve_fd(a.get(), 2));
    ASSERT_TRUE(f3);
    EXPECT_TRUE(has_cloexec(f3.get()));
    EXPECT_EQ(read_all_at(f3.get()), beta);
    // The retrieved file is writable, as a memfd is.
    ASSERT_EQ(pwrite(f3.get(), "B", 1, 0), 1);
    EXPECT_EQ(read_all_at(f3.get()), "Beta");
    // A retrieved memfd is busy for PRESERVE_FD until finish.
    EXPECT_EQ(lu_preserve_fd(a_out.get(), f1.get(), 1), -EBUSY);

    // FINISH, twice, then nothing is left; the name still answers.
    liveupdate_session_finish fin{};
    fin.size = sizeof fin;
    // Documented "must be zero", not checked (docs/kernel-semantics.md#ioctl-session).
    fin.reserved = 0xabcd;
    EXPECT_EQ(lu_ioctl(a.get(), LIVEUPDATE_SESSION_FINISH, &fin), 0);
    EXPECT_EQ(lu_finish(a.get()), 0);
    EXPECT_EQ(lu_retrieve_fd(a.get(), 1), -ENOENT);
    EXPECT_EQ(lu_retrieve_fd(a.get(), 2), -ENOENT);
    ASSERT_EQ(lu_get_name(a.get(), name), 0);
    EXPECT_STREQ(name, "a");
    // The user's fds stay valid, and the file is ours: preservable again.
    EXPECT_EQ(read_all_at(f2.get()), alpha);
    EXPECT_EQ(lu_preserve_fd(a_out.get(), f1.get(), 1), 0);
    st = d.status();
    EXPECT_EQ(find_session(st, "a").has_value(), true);

    // Close then retrieve: ENOENT (closing removed it).
    Fd b(lu_retrieve_session(ctl.get(), "b"));
    ASSERT_TRUE(b);
    Fd fb(lu_retrieve_fd(b.get(), 3));
    ASSERT_TRUE(fb);
    EXPECT_EQ(read_all_at(fb.get()), gamma);
    // The listener still listens on its port, and accepts.
    Fd lis(lu_retrieve_fd(b.get(), 4));
    ASSERT_TRUE(lis) << strerror(-lis.get());
    EXPECT_TRUE(has_cloexec(lis.get()));
    sockaddr_in now{};
    slen = sizeof now;
    ASSERT_EQ(getsockname(lis.get(), reinterpret_cast<sockaddr*>(&now), &slen), 0);
    EXPECT_EQ(now.sin_port, sin.sin_port);
    Fd cli(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(cli.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    Fd conn(accept4(lis.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_TRUE(conn) << strerror(errno);
    b.reset();
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "b"), -ENOENT);
    // The implicit finish released the file: preservable again at once.
    EXPECT_EQ(lu_preserve_fd(a_out.get(), fb.get(), 3), 0);
    // A session with no files: FINISH is 0 all the same.
    Fd c(lu_retrieve_session(ctl.get(), "c"));
    ASSERT_TRUE(c);
    EXPECT_EQ(lu_retrieve_fd(c.get(), 0), -ENOENT);
    EXPECT_EQ(lu_finish(c.get()), 0);
    c.reset();
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "c"), -ENOENT);
}

}  // namespace
}  // namespace lu::testing
