// SPDX-License-Identifier: Apache-2.0
// Exclusivity of the control connection and the lifetime of sessions: a
// session belongs to its open file description, shared by dup, fork and
// SCM_RIGHTS, and is released on the last close, synchronously for the
// closer (docs/kernel-differences.md, "A close is synchronous for the closer").
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

TEST(Exclusivity, SecondOpenIsBusyAndCloseIsSynchronous) {
    DaemonProcess d;
    int first = lu_open();
    ASSERT_GE(first, 0) << strerror(-first);
    EXPECT_TRUE(has_cloexec(first));
    EXPECT_EQ(lu_open(), -EBUSY);
    EXPECT_EQ(lu_open(), -EBUSY);
    EXPECT_TRUE(d.status()["control_connected"].get<bool>());
    Fd s(lu_create_session(first, "survivor"));
    ASSERT_TRUE(s);
    close(first);
    // No sleep: the close is done for the closer.
    for (int i = 0; i < 20; i++) {
        int again = lu_open();
        ASSERT_GE(again, 0) << "round " << i << ": " << strerror(-again);
        EXPECT_EQ(lu_open(), -EBUSY);
        close(again);
    }
    // Closing the control fd does not touch sessions.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(s.get(), name), 0);
    EXPECT_STREQ(name, "survivor");
    Fd m = make_memfd("still works");
    EXPECT_EQ(lu_preserve_fd(s.get(), m.get(), 5), 0);
    json st = d.status();
    auto sess = find_session(st, "survivor");
    ASSERT_TRUE(sess);
    EXPECT_EQ((*sess)["direction"], "outgoing");
    EXPECT_EQ((*sess)["state"], "open");
    ASSERT_EQ((*sess)["files"].size(), 1u);
    EXPECT_EQ((*sess)["files"][0]["token"], 5);
    // A new control connection sees the name taken.
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    EXPECT_EQ(lu_create_session(ctl.get(), "survivor"), -EEXIST);
}

TEST(Exclusivity, BelongsToTheOpenFileDescription) {
    DaemonProcess d;
    int first = lu_open();
    ASSERT_GE(first, 0);
    int dup1 = fcntl(first, F_DUPFD_CLOEXEC, 0);
    close(first);
    // The dup keeps the connection: still exclusive.
    EXPECT_EQ(lu_open(), -EBUSY);
    // And it works.
    Fd s(lu_create_session(dup1, "via-dup"));
    EXPECT_TRUE(s);
    close(dup1);
    Fd again(lu_open());
    EXPECT_GE(again.get(), 0) << strerror(-again.get());
}

TEST(Exclusivity, RefusedOpensLeakNothing) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd sync(lu_create_session(ctl.get(), "sync"));
    ASSERT_TRUE(sync);
    pid_t pid = d.pid();
    size_t base = settled_fd_count(pid, sync.get());
    for (int i = 0; i < 100; i++) ASSERT_EQ(lu_open(), -EBUSY);
    EXPECT_EQ(settled_fd_count(pid, sync.get()), base);
}

// Session fd handed to a child with SCM_RIGHTS; the child preserves into it.
TEST(SessionLifetime, PassedWithScmRightsLivesUntilLastClose) {
    DaemonProcess d;
    // The child is forked before anything of the daemon's is open here, so
    // the only copy it gets is the one passed with SCM_RIGHTS.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    Fd parent_end(sv[0]), child_end(sv[1]);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // The child: receive the session, preserve a memfd of its own into
        // it, report, and hold the session until told to exit.
        close(sv[0]);
        RawReply got = raw_recv(sv[1]);
        if (got.fds.size() != 1) _exit(10);
        int sess = got.fds[0].release();
        if (!has_cloexec(sess)) _exit(11);
        int mfd = memfd_create("child", MFD_CLOEXEC);
        if (mfd < 0 || write(mfd, "child data", 10) != 10) _exit(12);
        int rc = lu_preserve_fd(sess, mfd, 2);
        if (rc) _exit(20 + (-rc & 0x3f));
        if (lu_preserve_fd(sess, mfd, 3) != -EBUSY) _exit(13);
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        if (lu_get_name(sess, name) != 0 || strcmp(name, "shared") != 0) _exit(14);
        close(mfd);  // the daemon holds its own copy
        char ok = 'k';
        if (write(sv[1], &ok, 1) != 1) _exit(15);
        char cmd;
        if (read(sv[1], &cmd, 1) != 1) _exit(16);  // "exit now"
        _exit(0);
    }
    ChildGuard guard(child);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "shared"));
    ASSERT_TRUE(s);
    Fd m = make_memfd("parent's");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    child_end.reset();
    ASSERT_EQ(raw_send(parent_end.get(), "s", 1, {s.get()}), 0);
    char ack = 0;
    ASSERT_EQ(read(parent_end.get(), &ack, 1), 1) << "child failed early";
    EXPECT_EQ(ack, 'k');

    // Both copies open: the session has both files.
    auto sess = find_session(d.status(), "shared");
    ASSERT_TRUE(sess);
    ASSERT_EQ((*sess)["files"].size(), 2u);
    EXPECT_EQ((*sess)["files"][1]["token"], 2);
    EXPECT_EQ((*sess)["files"][1]["size"], 10);

    // The parent's copy works alongside the child's.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(s.get(), name), 0);
    EXPECT_STREQ(name, "shared");
    // The parent closes its copy: the child's keeps the session alive.
    s.reset();
    control_round_trip(ctl.get());
    sess = find_session(d.status(), "shared");
    ASSERT_TRUE(sess) << "released while the child still holds a copy";
    EXPECT_EQ((*sess)["files"].size(), 2u);
    EXPECT_EQ(lu_create_session(ctl.get(), "shared"), -EEXIST);
    // The parent's memfd is still preserved by it.
    Fd other(lu_create_session(ctl.get(), "other"));
    ASSERT_TRUE(other);
    EXPECT_EQ(lu_preserve_fd(other.get(), m.get(), 1), -EBUSY);

    // The last copy goes with the child.
    ASSERT_EQ(write(parent_end.get(), "x", 1), 1);
    int status = guard.wait();
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "child exit code (20+errno: preserve failed)";
    control_round_trip(ctl.get());
    EXPECT_FALSE(find_session(d.status(), "shared")) << "not released on the last close";
    // The name is free and the memfd unpreserved, at once.
    Fd again(lu_create_session(ctl.get(), "shared"));
    EXPECT_TRUE(again) << strerror(-again.get());
    EXPECT_EQ(lu_preserve_fd(other.get(), m.get(), 1), 0);
}

// A copy in flight (inside an SCM_RIGHTS message nobody has received yet)
// is a reference too.
TEST(SessionLifetime, InFlightCopyKeepsSessionAlive) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "flying"));
    ASSERT_TRUE(s);
    Fd m = make_memfd("aboard");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    Fd a(sv[0]), b(sv[1]);
    ASSERT_EQ(raw_send(a.get(), "s", 1, {s.get()}), 0);
    s.reset();
    control_round_trip(ctl.get());
    EXPECT_TRUE(find_session(d.status(), "flying")) << "released while a copy is in flight";
    EXPECT_EQ(lu_create_session(ctl.get(), "flying"), -EEXIST);
    RawReply got = raw_recv(b.get());
    ASSERT_EQ(got.fds.size(), 1u);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(got.fds[0].get(), name), 0);
    EXPECT_STREQ(name, "flying");
    got.fds.clear();
    // A copy dropped in flight (the carrying socket closed unread) is a close.
    Fd s2(lu_create_session(ctl.get(), "flying"));
    ASSERT_TRUE(s2) << strerror(-s2.get());
    ASSERT_EQ(lu_preserve_fd(s2.get(), m.get(), 1), 0);
    ASSERT_EQ(raw_send(a.get(), "s", 1, {s2.get()}), 0);
    s2.reset();
    b.reset();
    Fd s3(lu_create_session(ctl.get(), "flying"));
    EXPECT_TRUE(s3) << strerror(-s3.get());
    EXPECT_EQ(lu_preserve_fd(s3.get(), m.get(), 1), 0);
}

// The same without the round trip: the closer's very next request must see
// the release done (create the same name, no EEXIST).
TEST(SessionLifetime, NameReusableRightAfterLastClose) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    for (int i = 0; i < 50; i++) {
        int s = lu_create_session(ctl.get(), "again");
        ASSERT_GE(s, 0) << "round " << i << ": " << strerror(-s);
        Fd m = make_memfd("x");
        ASSERT_EQ(lu_preserve_fd(s, m.get(), 1), 0);
        close(s);
    }
    // A dup keeps it alive.
    int s = lu_create_session(ctl.get(), "duped");
    ASSERT_GE(s, 0);
    int s2 = fcntl(s, F_DUPFD_CLOEXEC, 0);
    close(s);
    EXPECT_EQ(lu_create_session(ctl.get(), "duped"), -EEXIST);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(s2, name), 0);
    close(s2);
    Fd s3(lu_create_session(ctl.get(), "duped"));
    EXPECT_TRUE(s3);
}

TEST(SessionLifetime, ReleaseOnLastCloseUnpreserves) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd keep(lu_create_session(ctl.get(), "keep"));
    ASSERT_TRUE(keep);
    Fd m = make_memfd("preserve me twice");
    Fd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(tcp.get(), 1), 0);
    for (int i = 0; i < 20; i++) {
        Fd s(lu_create_session(ctl.get(), "first"));
        ASSERT_TRUE(s);
        ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
        ASSERT_EQ(lu_preserve_fd(s.get(), tcp.get(), 2), 0);
        EXPECT_EQ(lu_preserve_fd(keep.get(), m.get(), 1), -EBUSY);
        s.reset();
        // Immediately: no EBUSY, in a session that already existed...
        ASSERT_EQ(lu_preserve_fd(keep.get(), m.get(), 1), 0) << "round " << i;
        ASSERT_EQ(lu_preserve_fd(keep.get(), tcp.get(), 2), 0) << "round " << i;
        // ... or in a new one once that one is gone.
        keep.reset();
        Fd s2(lu_create_session(ctl.get(), "second"));
        ASSERT_TRUE(s2);
        ASSERT_EQ(lu_preserve_fd(s2.get(), m.get(), 7), 0) << "round " << i;
        s2.reset();
        keep.reset(lu_create_session(ctl.get(), "keep"));
        ASSERT_TRUE(keep);
    }
    // The user's files were never touched.
    EXPECT_EQ(read_all_at(m.get()), "preserve me twice");
    int sv = 0;
    socklen_t len = sizeof sv;
    ASSERT_EQ(getsockopt(tcp.get(), SOL_SOCKET, SO_ACCEPTCONN, &sv, &len), 0);
    EXPECT_EQ(sv, 1);
    json st = d.status();
    EXPECT_EQ(count_sessions(st), 1u);
    EXPECT_EQ(st["preserved_files"], 0);
}

}  // namespace
}  // namespace lu::testing
