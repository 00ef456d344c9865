// SPDX-License-Identifier: Apache-2.0
// Hostile clients on raw sockets, bypassing the library: malformed messages,
// stray fds, disconnects mid-request, floods. The daemon answers EPROTO or
// drops the connection, never crashes, never keeps an fd, and well-behaved
// clients keep getting correct answers.
#include <poll.h>

#include <thread>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

class Hostile : public ::testing::Test {
protected:
    void SetUp() override {
        pid_ = d_.pid();
        ASSERT_GT(pid_, 0);
        sync_ = create_session_now("sync");
        ASSERT_TRUE(sync_);
    }
    // Several round trips: hangups the daemon causes itself while handling
    // one (sessions it made for a peer that is gone) are handled by the next.
    size_t settled() {
        settled_fd_count(pid_, sync_.get());
        return settled_fd_count(pid_, sync_.get());
    }
    // Status, allowing for admin connections of earlier steps that the
    // daemon has not reaped yet (it serves at most 16 at once: EBUSY).
    json status() {
        json st = d_.status();
        for (int i = 0; i < 200 && !st.is_object(); i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            st = d_.status();
        }
        return st;
    }
    void expect_alive() {
        json st = status();
        ASSERT_TRUE(st.is_object()) << "the daemon does not answer status";
        EXPECT_EQ(st["pid"], pid_) << "the daemon was restarted?";
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        ASSERT_EQ(lu_get_name(sync_.get(), name), 0);
        EXPECT_STREQ(name, "sync");
    }
    std::vector<uint8_t> create_msg(const std::string& name, uint32_t flags = 0) {
        auto a = create_arg(name);
        return wire_request(LIVEUPDATE_IOCTL_CREATE_SESSION, &a, sizeof a, flags);
    }
    // A valid CREATE on a raw control connection succeeds: the connection
    // is still in sync with its replies.
    void expect_create_works(int raw, const std::string& name) {
        auto m = create_msg(name);
        ASSERT_EQ(raw_send(raw, m.data(), m.size()), 0);
        RawReply r = raw_recv(raw);
        ASSERT_TRUE(r.got) << "no reply: " << strerror(r.recv_errno);
        EXPECT_EQ(r.hdr.magic, LU_WIRE_MAGIC);
        EXPECT_EQ(r.hdr.err, 0) << strerror(r.hdr.err);
        EXPECT_EQ(r.hdr.nr_fds, 1u);
        ASSERT_EQ(r.fds.size(), 1u);
        EXPECT_TRUE(has_cloexec(r.fds[0].get()));
        ASSERT_EQ(r.arg.size(), sizeof(liveupdate_ioctl_create_session));
        liveupdate_ioctl_create_session back;
        memcpy(&back, r.arg.data(), sizeof back);
        EXPECT_EQ(back.size, sizeof back);
        EXPECT_EQ(std::string(reinterpret_cast<char*>(back.name)), name);
        char got[LIVEUPDATE_SESSION_NAME_LENGTH];
        ASSERT_EQ(lu_get_name(r.fds[0].get(), got), 0);
        EXPECT_EQ(std::string(got), name);
    }
    // Sends `bytes` and expects exactly an EPROTO reply with nothing attached.
    void expect_eproto(int sock, const void* bytes, size_t len, const std::vector<int>& fds = {}) {
        ASSERT_EQ(raw_send(sock, bytes, len, fds), 0);
        RawReply r = raw_recv(sock);
        ASSERT_TRUE(r.got) << "no reply (len " << r.len << "): " << strerror(r.recv_errno);
        EXPECT_EQ(r.hdr.magic, LU_WIRE_MAGIC);
        EXPECT_EQ(r.hdr.err, EPROTO);
        EXPECT_EQ(r.hdr.arg_len, 0u);
        EXPECT_EQ(r.hdr.nr_fds, 0u);
        EXPECT_TRUE(r.fds.empty());
        EXPECT_TRUE(r.arg.empty());
    }
    int get_name_raw(int session, std::string* name, const std::vector<int>& fds = {}) {
        liveupdate_session_get_name g{};
        g.size = sizeof g;
        auto m = wire_request(LIVEUPDATE_SESSION_GET_NAME, &g, sizeof g);
        if (raw_send(session, m.data(), m.size(), fds) != 0) return -1;
        RawReply r = raw_recv(session);
        if (!r.got) return -2;
        if (r.hdr.err == 0 && r.arg.size() == sizeof g) {
            memcpy(&g, r.arg.data(), sizeof g);
            *name = reinterpret_cast<char*>(g.name);
        }
        return r.hdr.err;
    }

    DaemonProcess d_;
    pid_t pid_ = -1;
    Fd sync_;
};

TEST_F(Hostile, MalformedControlRequestsGetEproto) {
    const size_t base = settled();
    Fd raw = raw_control(d_.dir());
    ASSERT_TRUE(raw);
    auto good = create_msg("x");
    // Shorter than the header.
    expect_eproto(raw.get(), good.data(), 8);
    expect_eproto(raw.get(), good.data(), sizeof(lu_wire_request) - 1);
    expect_eproto(raw.get(), good.data(), 1);
    expect_create_works(raw.get(), "after-short");
    // Wrong magic.
    auto bad = good;
    bad[0] ^= 0xff;
    expect_eproto(raw.get(), bad.data(), bad.size());
    // arg_len inconsistent with the message length, both ways.
    bad = good;
    uint32_t len = 40;
    memcpy(bad.data() + 12, &len, 4);
    expect_eproto(raw.get(), bad.data(), bad.size());
    len = 100;
    memcpy(bad.data() + 12, &len, 4);
    expect_eproto(raw.get(), bad.data(), bad.size());
    expect_eproto(raw.get(), good.data(), good.size() - 1);
    // arg_len above LU_WIRE_MAX_ARG, consistent with the length.
    std::vector<uint8_t> arg(LU_WIRE_MAX_ARG + 8, 0);
    uint32_t size = static_cast<uint32_t>(arg.size());
    memcpy(arg.data(), &size, 4);
    arg[8] = 'y';
    auto big = wire_request(LIVEUPDATE_IOCTL_CREATE_SESSION, arg.data(), size);
    expect_eproto(raw.get(), big.data(), big.size());
    // Unknown flag bits.
    auto flagged = create_msg("flagged", 0x80);
    expect_eproto(raw.get(), flagged.data(), flagged.size());
    expect_create_works(raw.get(), "after-malformed");
    // Nothing malformed created anything.
    settled();
    json st = status();
    EXPECT_EQ(count_sessions(st), 1u);  // "sync": the created ones were closed
    raw.reset();
    EXPECT_EQ(settled(), base);
}

TEST_F(Hostile, MalformedSessionRequestsGetEproto) {
    Fd raw = raw_control(d_.dir());
    ASSERT_TRUE(raw);
    Fd s(lu_create_session(raw.get(), "victim"));  // the library works on a raw socket too
    ASSERT_TRUE(s);
    liveupdate_session_get_name g{};
    g.size = sizeof g;
    auto good = wire_request(LIVEUPDATE_SESSION_GET_NAME, &g, sizeof g);
    expect_eproto(s.get(), good.data(), 3);
    auto bad = good;
    bad[3] = 0;
    expect_eproto(s.get(), bad.data(), bad.size());
    bad = good;
    uint32_t len = 8;
    memcpy(bad.data() + 12, &len, 4);
    expect_eproto(s.get(), bad.data(), bad.size());
    // A malformed PRESERVE_FD with a memfd attached: the fd is not taken.
    Fd m = make_memfd("attached");
    liveupdate_session_preserve_fd p{};
    p.size = sizeof p;
    p.token = 1;
    auto pm = wire_request(LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof p);
    pm[1] ^= 1;
    expect_eproto(s.get(), pm.data(), pm.size(), {m.get()});
    std::string name;
    EXPECT_EQ(get_name_raw(s.get(), &name), 0);
    EXPECT_EQ(name, "victim");
    EXPECT_TRUE(find_session(status(), "victim").value()["files"].empty());
    EXPECT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
}

// A zero-length message is a message, not EOF: SOCK_SEQPACKET keeps
// boundaries, and recvmsg returning 0 for one must not be taken for a hangup.
TEST_F(Hostile, EmptyMessageOnControlIsMalformedNotEof) {
    Fd raw = raw_control(d_.dir());
    ASSERT_TRUE(raw);
    expect_eproto(raw.get(), "", 0);
    expect_create_works(raw.get(), "after-empty");
}

TEST_F(Hostile, EmptyMessageOnSessionDoesNotReleaseIt) {
    Fd s = create_session_now("target");
    ASSERT_TRUE(s);
    Fd m = make_memfd("kept");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    ASSERT_EQ(raw_send(s.get(), "", 0), 0);
    RawReply r = raw_recv(s.get());
    // Whatever the answer, the session fd is open: it must still be there.
    EXPECT_TRUE(r.got) << "the daemon hung up the session (len " << r.len << ")";
    EXPECT_EQ(r.hdr.err, EPROTO);
    EXPECT_TRUE(find_session(status(), "target")) << "released while its fd is open";
    EXPECT_EQ(lu_create_session(ctl.get(), "target"), -EEXIST);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(s.get(), name), 0);
}

TEST_F(Hostile, OversizedMessages) {
    const size_t base = settled();
    std::vector<uint8_t> huge(64 * 1024, 0xab);
    lu_wire_request hdr{LU_WIRE_MAGIC, LIVEUPDATE_IOCTL_CREATE_SESSION, 0,
                        static_cast<uint32_t>(huge.size() - sizeof hdr)};
    memcpy(huge.data(), &hdr, sizeof hdr);
    {
        Fd raw = raw_control(d_.dir());
        ASSERT_TRUE(raw);
        ASSERT_EQ(raw_send(raw.get(), huge.data(), huge.size()), 0);
        RawReply r = raw_recv(raw.get());
        if (r.got) {
            EXPECT_EQ(r.hdr.err, EPROTO);
            EXPECT_TRUE(r.fds.empty());
            expect_create_works(raw.get(), "after-huge");
        } else {
            EXPECT_EQ(r.len, 0) << "neither a reply nor EOF: " << strerror(r.recv_errno);
        }
    }
    expect_alive();
    Fd ctl(lu_open());
    EXPECT_GE(ctl.get(), 0) << strerror(-ctl.get());
    // The same on a session socket.
    Fd s(lu_create_session(ctl.get(), "big"));
    ASSERT_TRUE(s);
    hdr.cmd = LIVEUPDATE_SESSION_GET_NAME;
    memcpy(huge.data(), &hdr, sizeof hdr);
    ASSERT_EQ(raw_send(s.get(), huge.data(), huge.size()), 0);
    RawReply r = raw_recv(s.get());
    if (r.got) {
        EXPECT_EQ(r.hdr.err, EPROTO);
        std::string name;
        EXPECT_EQ(get_name_raw(s.get(), &name), 0);
        EXPECT_EQ(name, "big");
    }
    s.reset();
    ctl.reset();
    expect_alive();
    EXPECT_EQ(settled(), base);
}

TEST_F(Hostile, UnknownCommandNumbers) {
    Fd raw = raw_control(d_.dir());
    ASSERT_TRUE(raw);
    auto a = create_arg("cmd");
    struct Case {
        uint32_t cmd;
        int err;
    };
    for (Case c : {Case{0xBA02, EINVAL}, Case{0xBA05, EINVAL}, Case{0xBA40, EINVAL},
                   Case{0xdeadbeef, EINVAL}, Case{0xffffffff, EINVAL}, Case{0, ENOTTY},
                   Case{0x1201, ENOTTY}, Case{0xC048BA00, ENOTTY}}) {
        auto m = wire_request(c.cmd, &a, sizeof a);
        ASSERT_EQ(raw_send(raw.get(), m.data(), m.size()), 0);
        RawReply r = raw_recv(raw.get());
        ASSERT_TRUE(r.got);
        EXPECT_EQ(r.hdr.err, c.err) << std::hex << c.cmd;
        EXPECT_TRUE(r.fds.empty());
    }
    expect_create_works(raw.get(), "cmd");
    Fd s(lu_create_session(raw.get(), "sess"));
    ASSERT_TRUE(s);
    liveupdate_session_get_name g{};
    g.size = sizeof g;
    for (Case c : {Case{0xBA44, EINVAL}, Case{0xBA99, EINVAL}, Case{0, EINVAL},
                   Case{0xBA3F, EINVAL}, Case{0xffffffff, EINVAL}, Case{0x1243, ENOTTY},
                   Case{0x4000BA43, ENOTTY}}) {
        auto m = wire_request(c.cmd, &g, sizeof g);
        ASSERT_EQ(raw_send(s.get(), m.data(), m.size()), 0);
        RawReply r = raw_recv(s.get());
        ASSERT_TRUE(r.got);
        EXPECT_EQ(r.hdr.err, c.err) << std::hex << c.cmd;
    }
    std::string name;
    EXPECT_EQ(get_name_raw(s.get(), &name), 0);
    EXPECT_EQ(name, "sess");
}

TEST_F(Hostile, FdsAttachedToControlRequestsAreClosed) {
    Fd raw = raw_control(d_.dir());
    ASSERT_TRUE(raw);
    Fd m = make_memfd("stray");
    Fd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int pp[2];
    ASSERT_EQ(pipe2(pp, O_CLOEXEC | O_NONBLOCK), 0);
    Fd pr(pp[0]), pw(pp[1]);
    // Warm up the paths once, then measure.
    auto dup_name = create_msg("sync");  // exists: EEXIST
    ASSERT_EQ(raw_send(raw.get(), dup_name.data(), dup_name.size(), {m.get()}), 0);
    EXPECT_EQ(raw_recv(raw.get()).hdr.err, EEXIST);
    const size_t base = settled();
    std::vector<int> three{m.get(), devnull.get(), pr.get()};
    std::vector<int> ten(10, m.get());
    auto empty_name = create_msg("");
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(raw_send(raw.get(), dup_name.data(), dup_name.size(), three), 0);
        RawReply r = raw_recv(raw.get());
        ASSERT_TRUE(r.got);
        EXPECT_EQ(r.hdr.err, EEXIST);
        EXPECT_TRUE(r.fds.empty());
        ASSERT_EQ(raw_send(raw.get(), empty_name.data(), empty_name.size(), {pw.get()}), 0);
        EXPECT_EQ(raw_recv(raw.get()).hdr.err, EINVAL);
        // More fds than a request may carry: malformed, all closed.
        ASSERT_EQ(raw_send(raw.get(), dup_name.data(), dup_name.size(), ten), 0);
        r = raw_recv(raw.get());
        ASSERT_TRUE(r.got);
        EXPECT_TRUE(r.hdr.err == EPROTO || r.hdr.err == EEXIST) << r.hdr.err;
    }
    // A successful CREATE with fds attached: the fds are dropped, not kept.
    auto ok = create_msg("with-fds");
    ASSERT_EQ(raw_send(raw.get(), ok.data(), ok.size(), three), 0);
    RawReply r = raw_recv(raw.get());
    ASSERT_EQ(r.hdr.err, 0);
    ASSERT_EQ(r.fds.size(), 1u);  // only the session
    r.fds.clear();
    EXPECT_EQ(settled(), base);
    // The daemon's copies are gone: the pipe sees EOF once ours is closed.
    pw.reset();
    char c;
    EXPECT_EQ(read(pr.get(), &c, 1), 0) << "the daemon still holds the pipe's write end";
    json st = status();
    EXPECT_EQ(st["preserved_files"], 0);
}

TEST_F(Hostile, FdsAttachedToSessionRequestsAreClosed) {
    Fd s = create_session_now("target");
    ASSERT_TRUE(s);
    Fd m = make_memfd("stray");
    std::string name;
    ASSERT_EQ(get_name_raw(s.get(), &name, {m.get()}), 0);  // warm-up
    const size_t base = settled();
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(get_name_raw(s.get(), &name, {m.get(), m.get()}), 0);
        EXPECT_EQ(name, "target");
    }
    EXPECT_EQ(settled(), base);
    EXPECT_TRUE(find_session(status(), "target").value()["files"].empty());
    EXPECT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);  // not held by anyone
}

// PRESERVE_FD carries one fd; with several, none is taken: EBADF.
TEST_F(Hostile, PreserveWithTwoToFourFdsIsEbadf) {
    Fd s = create_session_now("target");
    ASSERT_TRUE(s);
    std::vector<Fd> ms;
    std::vector<int> fds;
    for (int i = 0; i < 4; i++) {
        ms.push_back(make_memfd("m" + std::to_string(i)));
        fds.push_back(ms.back().get());
    }
    liveupdate_session_preserve_fd p{};
    p.size = sizeof p;
    p.fd = fds[0];
    p.token = 1;
    auto msg = wire_request(LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof p);
    const size_t base = settled();
    for (size_t n = 2; n <= 4; n++) {
        std::vector<int> some(fds.begin(), fds.begin() + static_cast<long>(n));
        ASSERT_EQ(raw_send(s.get(), msg.data(), msg.size(), some), 0);
        RawReply r = raw_recv(s.get());
        ASSERT_TRUE(r.got);
        EXPECT_EQ(r.hdr.err, EBADF) << n << " fds: got " << strerror(r.hdr.err);
    }
    EXPECT_EQ(settled(), base);
    EXPECT_TRUE(find_session(status(), "target").value()["files"].empty());
    for (int i = 0; i < 4; i++) EXPECT_EQ(lu_preserve_fd(s.get(), fds[i], uint64_t(i)), 0);
}

TEST_F(Hostile, PreserveWithFiveFdsIsEbadfAndKeepsNone) {
    Fd s = create_session_now("target");
    ASSERT_TRUE(s);
    std::vector<Fd> ms;
    std::vector<int> fds;
    for (int i = 0; i < 5; i++) {
        ms.push_back(make_memfd("m" + std::to_string(i)));
        fds.push_back(ms.back().get());
    }
    liveupdate_session_preserve_fd p{};
    p.size = sizeof p;
    p.fd = fds[0];
    p.token = 1;
    auto msg = wire_request(LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof p);
    const size_t base = settled();
    ASSERT_EQ(raw_send(s.get(), msg.data(), msg.size(), fds), 0);
    RawReply r = raw_recv(s.get());
    ASSERT_TRUE(r.got);
    EXPECT_EQ(r.hdr.err, EBADF) << "got " << strerror(r.hdr.err);
    EXPECT_EQ(settled(), base) << "an attached fd was kept";
    EXPECT_TRUE(find_session(status(), "target").value()["files"].empty());
    for (int i = 0; i < 5; i++) EXPECT_EQ(lu_preserve_fd(s.get(), fds[i], uint64_t(i)), 0);
}

TEST_F(Hostile, RequestThenDisconnect) {
    const size_t base = settled();
    // On the control connection: CREATE, then gone before the reply.
    for (int i = 0; i < 20; i++) {
        Fd raw = raw_control(d_.dir());
        ASSERT_TRUE(raw);
        auto m = create_msg("ghost");
        ASSERT_EQ(raw_send(raw.get(), m.data(), m.size()), 0);
        if (i % 2) {
            ASSERT_EQ(raw_send(raw.get(), m.data(), m.size()), 0);  // and one more
            auto other = create_msg("ghost-" + std::to_string(i));
            ASSERT_EQ(raw_send(raw.get(), other.data(), other.size()), 0);
        }
    }
    // The control is free again and the sessions made for the dead
    // connections are gone: their names can be created.
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
    Fd ghost(lu_create_session(ctl.get(), "ghost"));
    EXPECT_TRUE(ghost) << strerror(-ghost.get());
    ghost.reset();
    // On a session: PRESERVE_FD, then the last copy is closed before the
    // reply. Whether the preserve ran or not, the release undoes it.
    Fd m = make_memfd("in flight");
    Fd keep(lu_create_session(ctl.get(), "keep"));
    ASSERT_TRUE(keep);
    for (int i = 0; i < 20; i++) {
        Fd s(lu_create_session(ctl.get(), "dying"));
        ASSERT_TRUE(s) << strerror(-s.get());
        liveupdate_session_preserve_fd p{};
        p.size = sizeof p;
        p.fd = m.get();
        p.token = 9;
        auto msg = wire_request(LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof p);
        ASSERT_EQ(raw_send(s.get(), msg.data(), msg.size(), {m.get()}), 0);
        s.reset();
        ASSERT_EQ(lu_preserve_fd(keep.get(), m.get(), 1), 0) << "round " << i;
        keep.reset();
        keep.reset(lu_create_session(ctl.get(), "keep"));
        ASSERT_TRUE(keep);
    }
    keep.reset();
    ctl.reset();
    expect_alive();
    EXPECT_EQ(count_sessions(status()), 1u);
    EXPECT_EQ(settled(), base);
}

// One client floods without reading its replies; another keeps working.
TEST_F(Hostile, FloodDoesNotStarveOthers) {
    Fd good;
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        good.reset(lu_create_session(ctl.get(), "good"));
        ASSERT_TRUE(good);
    }
    const size_t base = settled();
    Fd flooder = raw_control(d_.dir());
    ASSERT_TRUE(flooder);
    Fd flood_session(lu_create_session(flooder.get(), "flood-session"));
    ASSERT_TRUE(flood_session);
    ASSERT_EQ(fcntl(flooder.get(), F_SETFL, O_NONBLOCK), 0);
    ASSERT_EQ(fcntl(flood_session.get(), F_SETFL, O_NONBLOCK), 0);
    liveupdate_session_get_name g{};
    g.size = sizeof g;
    auto get_name = wire_request(LIVEUPDATE_SESSION_GET_NAME, &g, sizeof g);

    size_t sent = 0, refused = 0, token = 100;
    for (int i = 0; i < 10000; i++) {
        // Alternately: CREATE requests (each reply carries a new session fd)
        // on the control connection, and GET_NAME on the session.
        int rc;
        if (i % 2 == 0) {
            auto m = create_msg("flood-" + std::to_string(i));
            rc = raw_send(flooder.get(), m.data(), m.size(), {}, MSG_DONTWAIT);
        } else {
            rc = raw_send(flood_session.get(), get_name.data(), get_name.size(), {},
                          MSG_DONTWAIT);
        }
        if (rc == 0) sent++;
        else if (rc == -EAGAIN) refused++;
        else FAIL() << "send: " << strerror(-rc);
        if (i % 100 == 0) {
            // The well-behaved client gets correct answers throughout.
            char name[LIVEUPDATE_SESSION_NAME_LENGTH];
            ASSERT_EQ(lu_get_name(good.get(), name), 0) << "at " << i;
            ASSERT_STREQ(name, "good");
            Fd m = make_memfd("good " + std::to_string(i));
            ASSERT_EQ(lu_preserve_fd(good.get(), m.get(), token), 0) << "at " << i;
            ASSERT_EQ(lu_preserve_fd(good.get(), m.get(), token), -EEXIST);
            ASSERT_EQ(lu_retrieve_fd(good.get(), token), -EINVAL);
            token++;
        }
    }
    EXPECT_GT(refused, 0u) << "the flood never filled the socket";
    std::cerr << "[ flood    ] " << sent << " requests queued, " << refused << " sends refused\n";
    // Status still answers during the flood.
    json st = status();
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(find_session(st, "good").value()["files"].size(), token - 100);
    // The flooder goes away without reading anything.
    flooder.reset();
    flood_session.reset();
    expect_alive();
    EXPECT_EQ(settled(), base + (token - 100)) << "fds left behind by the flood";
    st = status();
    EXPECT_EQ(count_sessions(st), 2u);  // "sync" and "good"
    EXPECT_FALSE(find_session(st, "flood-session"));
    EXPECT_FALSE(st["control_connected"].get<bool>());
    Fd ctl(lu_open());
    EXPECT_GE(ctl.get(), 0) << strerror(-ctl.get());
    Fd again(lu_create_session(ctl.get(), "flood-0"));
    EXPECT_TRUE(again);
}

// ---- the admin socket ----

// One raw admin exchange: the JSON answer, or null when the daemon closed
// the connection without one.
json admin_raw(const std::string& dir, const void* bytes, size_t len,
               const std::vector<int>& fds = {}, int* hdr_err = nullptr) {
    Fd a = raw_connect(dir + "/admin");
    if (!a) return {};
    if (raw_send(a.get(), bytes, len, fds) != 0) return {};
    RawReply r = raw_recv(a.get());
    if (!r.got) return {};
    if (hdr_err) *hdr_err = r.hdr.err;
    EXPECT_EQ(r.hdr.magic, LU_WIRE_MAGIC);
    if (r.fds.size() != 1) return {};
    json j = json::parse(read_all_at(r.fds[0].get()), nullptr, false);
    // The connection ends after one answer.
    RawReply after = raw_recv(a.get());
    EXPECT_FALSE(after.got);
    return j;
}

json admin_raw(const std::string& dir, const std::string& text) {
    return admin_raw(dir, text.data(), text.size());
}

void expect_admin_error(const json& j, int err) {
    ASSERT_TRUE(j.is_object()) << j.dump();
    EXPECT_EQ(j["ok"], false) << j.dump();
    EXPECT_EQ(j["errno"], err) << j.dump();
    EXPECT_TRUE(j["error"].is_string());
}

TEST_F(Hostile, AdminMalformedRequests) {
    const std::string& dir = d_.dir();
    json ok = admin_raw(dir, R"({"op":"status"})");
    ASSERT_TRUE(ok.is_object());
    EXPECT_EQ(ok["ok"], true);
    const size_t base = settled();
    for (const char* text : {"{not json", "", " ", "[1,2,3]", "\"status\"", "{}", "{\"op\":5}",
                             "{\"op\":null}", "{\"op\":\"status\"", "\xff\xfe\x00\x01", "null",
                             "{\"op\":[\"status\"]}"}) {
        std::string t(text);
        if (t.empty()) continue;  // below
        expect_admin_error(admin_raw(dir, t), EINVAL);
    }
    expect_admin_error(admin_raw(dir, R"({"op":"nope"})"), EOPNOTSUPP);
    expect_admin_error(admin_raw(dir, R"({"op":"STATUS"})"), EOPNOTSUPP);
    // Bad reboot parameters: refused before anything moves.
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","timeout":-1})"), EINVAL);
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","timeout":"soon"})"), EINVAL);
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","timeout":1e300})"), EINVAL);
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","exec":""})"), EINVAL);
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","exec":7})"), EINVAL);
    expect_admin_error(admin_raw(dir, R"({"op":"reboot","dry_run":"yes"})"), EINVAL);
    // Oversized: over LU_WIRE_MAX_ADMIN, and far over.
    std::string big = R"({"op":"status","pad":")" + std::string(8000, 'p') + "\"}";
    expect_admin_error(admin_raw(dir, big), EINVAL);
    std::string huge(64 * 1024, '{');
    expect_admin_error(admin_raw(dir, huge), EINVAL);
    // The library refuses it before sending.
    char* reply = nullptr;
    EXPECT_EQ(lu_admin_request(big.c_str(), &reply), -E2BIG);
    // Deeply nested JSON: parsed without blowing the stack.
    std::string deep = std::string(2000, '[') + std::string(2000, ']');
    expect_admin_error(admin_raw(dir, deep), EINVAL);
    // An fd attached: malformed, and the fd is not kept.
    Fd m = make_memfd("admin");
    std::string st = R"({"op":"status"})";
    expect_admin_error(admin_raw(dir, st.data(), st.size(), {m.get()}), EINVAL);
    // An empty message, and a request whose sender leaves before the reply.
    {
        Fd a = raw_connect(dir + "/admin");
        ASSERT_EQ(raw_send(a.get(), "", 0), 0);
        RawReply r = raw_recv(a.get());
        if (r.got && r.fds.size() == 1)
            expect_admin_error(json::parse(read_all_at(r.fds[0].get()), nullptr, false), EINVAL);
    }
    for (int i = 0; i < 20; i++) {
        Fd a = raw_connect(dir + "/admin");
        ASSERT_EQ(raw_send(a.get(), st.data(), st.size()), 0);
    }
    for (int i = 0; i < 20; i++) Fd a = raw_connect(dir + "/admin");  // nothing sent
    expect_alive();
    json after = status();
    EXPECT_EQ(after["ok"], true);
    EXPECT_EQ(after["epoch"], 0);
    EXPECT_EQ(after["update"]["state"], "idle");
    EXPECT_EQ(settled(), base);
}

// Idle admin connections are bounded; once they close, status answers again.
TEST_F(Hostile, AdminIdleConnectionsAreBounded) {
    std::vector<Fd> idle;
    for (int i = 0; i < 40; i++) idle.push_back(raw_connect(d_.dir() + "/admin"));
    // The daemon stays up and keeps serving clients whatever the admin side does.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(sync_.get(), name), 0);
    // The first 16 idle connections hold every admin slot: the next one is
    // told EBUSY (unsolicited, then closed).
    Fd extra = raw_connect(d_.dir() + "/admin");
    ASSERT_TRUE(extra);
    RawReply busy = raw_recv(extra.get());
    ASSERT_TRUE(busy.got);
    EXPECT_EQ(busy.hdr.err, EBUSY);
    EXPECT_TRUE(busy.fds.empty());
    EXPECT_FALSE(raw_recv(extra.get()).got);  // then EOF
    // Through the library: EBUSY, or EOWNERDEAD when its send loses the race
    // with the daemon's close (the library does not read the reply then).
    char* reply = nullptr;
    int rc = lu_admin_request(R"({"op":"status"})", &reply);
    lu_free(reply);
    EXPECT_TRUE(rc == -EBUSY || rc == -EOWNERDEAD) << strerror(-rc);
    idle.clear();
    // The hangups are handled in the loop's order, not ours: allow a few turns.
    json st = status();
    ASSERT_TRUE(st.is_object()) << "status never answers again";
    EXPECT_EQ(st["pid"], pid_);
}

}  // namespace
}  // namespace lu::testing
