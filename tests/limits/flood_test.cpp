// SPDX-License-Identifier: Apache-2.0
// Clients that send at line rate and never read their replies, with valid
// and with malformed requests, on a hundred connections at once. The daemon
// must push back (it stops reading a connection whose last reply the peer
// has not taken: Conn::pending), so each flooder is held after a bounded
// number of requests and the daemon's memory does not grow with the flood;
// nothing is dropped or reordered (every request gets its own answer, in
// order, once the flooder reads); and a well-behaved client is answered
// throughout (docs/limits.md, "Floods"). hostile_test.cpp has one flooder
// and single malformed requests; this is the same at scale, with the bound.
#include <poll.h>

#include <functional>

#include "limits/limits_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

// One request of a flood and the errno its reply must carry.
struct Req {
    std::vector<uint8_t> bytes;
    int err;
    bool with_fd = false;  // carries an fd the daemon must not keep
};

// Floods every connection until the daemon holds them all back, between
// rounds of work by `good` (which must be answered every time). Returns
// the number of requests sent on each connection, request k being
// pattern[k % size]. A connection is held back when its sends fail with
// EAGAIN; the flood is over when a whole round, after a round trip of the
// good client (the daemon has turned its loop), sent nothing more.
std::vector<size_t> flood(const std::vector<int>& conns, const std::vector<Req>& pattern,
                          int fd_to_attach, const std::function<void(int round)>& good) {
    std::vector<size_t> sent(conns.size());
    int quiet = 0, round = 0;
    for (; round < 1000 && quiet < 3; round++) {
        size_t any = 0;
        for (size_t i = 0; i < conns.size(); i++) {
            for (;;) {
                const Req& r = pattern[sent[i] % pattern.size()];
                std::vector<int> fds;
                if (r.with_fd) fds.push_back(fd_to_attach);
                int rc = raw_send(conns[i], r.bytes.data(), r.bytes.size(), fds, MSG_DONTWAIT);
                if (rc == -EAGAIN) break;
                if (rc != 0) {
                    ADD_FAILURE() << "send on flooder " << i << ": " << strerror(-rc);
                    return sent;
                }
                sent[i]++;
                any++;
            }
        }
        good(round);
        if (::testing::Test::HasFatalFailure()) return sent;
        quiet = any ? 0 : quiet + 1;
    }
    EXPECT_EQ(quiet, 3) << "the flooders were never held back after " << round << " rounds";
    return sent;
}

// Reads the replies to `sent` requests on conn: each in order, with the
// errno of its request. Then one more round trip on it, and nothing else
// may be waiting: no reply was dropped, duplicated or reordered.
void expect_every_reply(int conn, size_t sent, const std::vector<Req>& pattern,
                        const std::vector<uint8_t>& sync_req, const char* what) {
    for (size_t k = 0; k < sent; k++) {
        pollfd p{conn, POLLIN, 0};
        ASSERT_EQ(poll(&p, 1, 60000), 1) << what << ": no reply " << k << " of " << sent;
        RawReply r = raw_recv(conn, MSG_DONTWAIT);
        ASSERT_TRUE(r.got) << what << ": reply " << k << ": " << strerror(r.recv_errno);
        ASSERT_EQ(r.hdr.err, pattern[k % pattern.size()].err) << what << ": reply " << k;
        ASSERT_TRUE(r.fds.empty()) << what;
    }
    ASSERT_EQ(raw_send(conn, sync_req.data(), sync_req.size()), 0);
    RawReply r = raw_recv(conn);
    ASSERT_TRUE(r.got);
    EXPECT_EQ(r.hdr.err, 0) << what;
    r = raw_recv(conn, MSG_DONTWAIT);
    EXPECT_EQ(r.recv_errno, EAGAIN) << what << ": a reply more than requests";
}

std::vector<uint8_t> get_name_req(uint32_t reserved = 0) {
    liveupdate_session_get_name g{};
    g.size = sizeof g;
    g.reserved = reserved;
    return wire_request(LIVEUPDATE_SESSION_GET_NAME, &g, sizeof g);
}

// Memory bound of a flood: the daemon keeps at most one reply per
// connection (its pending reply, at most 1 KiB and a header) and reads
// nothing more from it: 2 KiB per flooding connection covers it.
constexpr size_t kKibPerFlooder = 2;

class LimitsFlood : public ::testing::Test {
  protected:
    void SetUp() override {
        pid_ = d_.pid();
        ASSERT_GT(pid_, 0);
        good_ = create_session_now("good");
        ASSERT_TRUE(good_);
    }
    // The well-behaved client's work for one round: a session request, a
    // preserve (a new token each time) and status. All answered, correctly.
    void good_work(int round) {
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        ASSERT_EQ(lu_get_name(good_.get(), name), 0) << "round " << round;
        ASSERT_STREQ(name, "good");
        ASSERT_EQ(preserve_text(good_.get(), token_, "round " + std::to_string(round)), 0);
        ASSERT_EQ(lu_retrieve_fd(good_.get(), token_), -EINVAL);  // outgoing
        token_++;
        json st = status_of(d_);
        ASSERT_TRUE(st.is_object()) << "status not answered during the flood";
    }
    size_t rss_kib() { return proc_status_kib(pid_, "VmRSS"); }

    DaemonProcess d_;
    pid_t pid_ = -1;
    Fd good_;
    uint64_t token_ = 1;
};

TEST_F(LimitsFlood, LineRateSendersAreHeldBackAndLoseNothing) {
    constexpr int kFlooders = 100;
    good_work(-1);  // warm-up: whatever the daemon allocates once
    const size_t fds_before = settled_fd_count(pid_, good_.get());
    const uint64_t files_before = token_;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> flooders;
    std::vector<int> conns;
    for (int i = 0; i < kFlooders; i++) {
        flooders.emplace_back(lu_create_session(ctl.get(), ("flood-" + std::to_string(i)).c_str()));
        ASSERT_TRUE(flooders.back());
        conns.push_back(flooders.back().get());
    }
    ctl.reset();
    // Valid requests with three different answers, so order is checked.
    liveupdate_session_preserve_fd p{};
    p.size = sizeof p;
    p.fd = -1;
    p.token = 7;
    std::vector<Req> pattern{
        {get_name_req(), 0},
        {get_name_req(1), EINVAL},                                            // reserved must be 0
        {wire_request(LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof p), EBADF},  // no fd attached
    };
    const size_t base = rss_kib();
    ASSERT_TRUE(reset_peak_rss(pid_));

    std::vector<size_t> sent = flood(conns, pattern, -1, [&](int r) { good_work(r); });
    if (HasFatalFailure()) return;
    const size_t hwm = proc_status_kib(pid_, "VmHWM");
    size_t total = 0, most = 0;
    for (size_t s : sent) total += s, most = std::max(most, s);
    std::cerr << "[ flood    ] " << kFlooders << " line-rate senders held back after " << total
              << " requests (at most " << most << " each); daemon VmRSS " << base
              << " KiB before, VmHWM " << hwm << " KiB during\n";
    // Held back after what the socket buffers hold (a few hundred small
    // messages), not after what the daemon would read into its memory.
    EXPECT_LT(most, 5000u);
    EXPECT_LE(hwm, rss_bound_kib(base, kFlooders, kKibPerFlooder)) << "KiB";
    // Still held: the daemon reads nothing more while the replies wait.
    for (int c : conns)
        EXPECT_EQ(raw_send(c, pattern[0].bytes.data(), pattern[0].bytes.size(), {}, MSG_DONTWAIT),
                  -EAGAIN);

    // The flooders read at last: every request was answered, in order.
    for (size_t i = 0; i < conns.size(); i++) {
        expect_every_reply(conns[i], sent[i], pattern, pattern[0].bytes, "flooder");
        if (HasFatalFailure()) return;
    }
    flooders.clear();
    good_work(1000);
    // Back to where it was, plus the good client's files.
    EXPECT_EQ(settled_fd_count(pid_, good_.get()), fds_before + (token_ - files_before));
}

TEST_F(LimitsFlood, MalformedFloodIsAnsweredInOrderAndBounded) {
    constexpr int kFlooders = 50;
    good_work(-1);
    const size_t fds_before = settled_fd_count(pid_, good_.get());
    const uint64_t files_before = token_;
    // Flooders on sessions, and on the control connection itself.
    Fd ctl = raw_control(d_.dir());
    ASSERT_TRUE(ctl);
    std::vector<Fd> flooders;
    for (int i = 0; i < kFlooders; i++) {
        flooders.emplace_back(lu_create_session(ctl.get(), ("bad-" + std::to_string(i)).c_str()));
        ASSERT_TRUE(flooders.back());
    }
    // The fd some malformed requests carry: the write end of a pipe. Once
    // every copy is closed, the read end sees EOF; a copy the daemon kept
    // would hold it open.
    int pp[2];
    ASSERT_EQ(pipe2(pp, O_CLOEXEC | O_NONBLOCK), 0);
    Fd pipe_r(pp[0]), pipe_w(pp[1]);

    auto valid = get_name_req();
    auto bad_magic = valid;
    bad_magic[0] ^= 0xff;
    auto bad_flags = get_name_req();
    bad_flags[8] = 0x80;  // lu_wire_request.flags: an unknown bit
    auto bad_len = valid;
    bad_len[12] = 1;                          // arg_len disagrees with the message length
    std::vector<uint8_t> oversized(8192, 0);  // over LU_WIRE_MAX_ARG, and truncated on receipt
    lu_wire_request hdr{LU_WIRE_MAGIC, LIVEUPDATE_SESSION_GET_NAME, 0,
                        static_cast<uint32_t>(oversized.size() - sizeof hdr)};
    memcpy(oversized.data(), &hdr, sizeof hdr);
    std::vector<uint8_t> short_msg(valid.begin(), valid.begin() + 7), empty;
    std::vector<Req> pattern{
        {bad_magic, EPROTO}, {short_msg, EPROTO}, {bad_flags, EPROTO, true},
        {oversized, EPROTO}, {empty, EPROTO},     {bad_len, EPROTO},
        {valid, 0},  // still in step with its replies
    };
    // On the control connection the valid request is a command it does not
    // take (EINVAL): a CREATE would make sessions.
    std::vector<Req> control_pattern = pattern;
    auto a = create_arg("never");
    control_pattern.back() = {wire_request(0xBA05, &a, sizeof a), EINVAL};

    const size_t base = rss_kib();
    ASSERT_TRUE(reset_peak_rss(pid_));

    std::vector<int> conns;
    for (auto& f : flooders) conns.push_back(f.get());
    // The control connection floods in the same rounds (its own pattern).
    size_t ctl_sent = 0;
    std::vector<size_t> sent = flood(conns, pattern, pipe_w.get(), [&](int r) {
        for (;;) {
            const Req& q = control_pattern[ctl_sent % control_pattern.size()];
            std::vector<int> fds;
            if (q.with_fd) fds.push_back(pipe_w.get());
            int rc = raw_send(ctl.get(), q.bytes.data(), q.bytes.size(), fds, MSG_DONTWAIT);
            if (rc == -EAGAIN) break;
            ASSERT_EQ(rc, 0) << "send on the control flooder: " << strerror(-rc);
            ctl_sent++;
        }
        good_work(r);
    });
    if (HasFatalFailure()) return;
    const size_t hwm = proc_status_kib(pid_, "VmHWM");
    size_t total = ctl_sent, most = ctl_sent;
    for (size_t s : sent) total += s, most = std::max(most, s);
    std::cerr << "[ flood    ] " << kFlooders + 1 << " malformed floods held back after " << total
              << " requests (at most " << most << " each); daemon VmRSS " << base
              << " KiB before, VmHWM " << hwm << " KiB during\n";
    EXPECT_LT(most, 5000u);
    EXPECT_LE(hwm, rss_bound_kib(base, kFlooders + 1, kKibPerFlooder)) << "KiB";

    for (size_t i = 0; i < conns.size(); i++) {
        expect_every_reply(conns[i], sent[i], pattern, valid, "malformed flooder");
        if (HasFatalFailure()) return;
    }
    // The control connection: the same, its sync request a CREATE.
    auto create = wire_request(LIVEUPDATE_IOCTL_CREATE_SESSION, &a, sizeof a);
    expect_every_reply(ctl.get(), ctl_sent, control_pattern, create, "control flooder");
    if (HasFatalFailure()) return;
    flooders.clear();
    ctl.reset();
    // Every fd that rode on a malformed request was closed by the daemon.
    pipe_w.reset();
    char c;
    EXPECT_EQ(read(pipe_r.get(), &c, 1), 0) << "the daemon kept a copy of an attached fd";
    good_work(1000);
    EXPECT_EQ(settled_fd_count(pid_, good_.get()), fds_before + (token_ - files_before));
    EXPECT_EQ(count_sessions(status_of(d_)), 1u);  // "good": the flooders' sessions are gone
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

// A flood of RETRIEVE_FD that the client does not read: each reply the
// daemon must hold carries a file, and holding it takes an fd (a dup). 199
// sessions held back that way would fill the daemon's table (status refused,
// replies announcing an fd they do not carry) unless the reserve counts the
// held fds: RETRIEVE_FD past it answers EMFILE (the kernel's
// get_unused_fd_flags step), and a reply is never sent without its fd.
TEST(LimitsFloodFds, HeldRetrieveRepliesStayWithinTheReserve) {
    constexpr rlim_t kNofile = 512;
    constexpr int kSessions = 200;
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    auto name_of = [](int i) { return "s-" + std::to_string(i); };
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        std::vector<Fd> s;
        for (int i = 0; i < kSessions; i++) {
            s.emplace_back(lu_create_session(ctl.get(), name_of(i).c_str()));
            ASSERT_TRUE(s.back()) << i;
            ASSERT_EQ(preserve_text(s.back().get(), 1, name_of(i)), 0) << i;
        }
        ctl.reset();
        ASSERT_EQ(d.reboot(), 0);
    }
    const pid_t pid = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> s;
    for (int i = 0; i < kSessions; i++) {
        s.emplace_back(lu_retrieve_session(ctl.get(), name_of(i).c_str()));
        ASSERT_TRUE(s.back()) << i << ": " << strerror(-s.back().get());
    }
    // s[0] is the well-behaved client; the others flood.
    std::vector<int> conns;
    for (int i = 1; i < kSessions; i++) conns.push_back(s[i].get());
    liveupdate_session_retrieve_fd r{};
    r.size = sizeof r;
    r.token = 1;
    std::vector<Req> pattern{{wire_request(LIVEUPDATE_SESSION_RETRIEVE_FD, &r, sizeof r), 0}};
    std::vector<size_t> sent = flood(conns, pattern, -1, [&](int round) {
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        ASSERT_EQ(lu_get_name(s[0].get(), name), 0) << "round " << round;
        ASSERT_TRUE(status_of(d).is_object()) << "status refused in round " << round;
    });
    if (HasFatalFailure()) return;
    EXPECT_LT(proc_fd_count(pid), kNofile - kFdReserve / 2) << "the reserve was used up";
    // Every reply: the file (err 0, one fd, the right one) or EMFILE.
    size_t files = 0, refused = 0;
    for (size_t i = 0; i < conns.size(); i++) {
        for (size_t k = 0; k < sent[i]; k++) {
            RawReply rep = raw_recv(conns[i]);
            ASSERT_TRUE(rep.got);
            if (rep.hdr.err == EMFILE) {
                ASSERT_TRUE(rep.fds.empty());
                refused++;
                continue;
            }
            ASSERT_EQ(rep.hdr.err, 0) << strerror(rep.hdr.err);
            ASSERT_EQ(rep.hdr.nr_fds, 1u);
            ASSERT_EQ(rep.fds.size(), 1u) << "a reply without the fd it announces";
            files++;
        }
    }
    std::cerr << "[ flood    ] " << conns.size() << " RETRIEVE_FD floods: " << files
              << " files sent, " << refused << " EMFILE\n";
    Fd m(lu_retrieve_fd(s.back().get(), 1));
    ASSERT_TRUE(m) << strerror(-m.get());
    EXPECT_EQ(read_all_at(m.get()), name_of(kSessions - 1));
}

}  // namespace
}  // namespace lu::testing
