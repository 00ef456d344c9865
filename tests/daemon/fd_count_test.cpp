// SPDX-License-Identifier: Apache-2.0
// The daemon gives back every fd a client made it hold: 200 clients in turn
// open the control socket, create a session, preserve files, close.
#include <chrono>
#include <thread>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

void one_client(int round, bool keep_control_until_end) {
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << "round " << round << ": " << strerror(-ctl.get());
    std::string name = "client-" + std::to_string(round);
    Fd s(lu_create_session(ctl.get(), name.c_str()));
    ASSERT_TRUE(s) << strerror(-s.get());
    if (!keep_control_until_end) ctl.reset();
    Fd m1 = make_memfd("one"), m2 = make_memfd(std::string(5000, 'z'));
    ASSERT_EQ(lu_preserve_fd(s.get(), m1.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(s.get(), m2.get(), 2), 0);
    EXPECT_EQ(lu_preserve_fd(s.get(), m2.get(), 3), -EBUSY);  // refused: its fd is dropped
    Fd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
    EXPECT_EQ(lu_preserve_fd(s.get(), devnull.get(), 4), -ENOENT);
    Fd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(tcp.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(s.get(), tcp.get(), 5), 0);
    if (ctl) {
        EXPECT_EQ(lu_retrieve_session(ctl.get(), name.c_str()), -ENOENT);
    }
}

TEST(DaemonFds, BackToBaselineAfter200Clients) {
    DaemonProcess d;
    pid_t pid = d.pid();
    ASSERT_GT(pid, 0);
    Fd sync = create_session_now("sync");
    ASSERT_TRUE(sync);
    // Warm-up round: whatever the daemon allocates once (logger, caches).
    one_client(-1, true);
    const size_t baseline = settled_fd_count(pid, sync.get());
    for (int i = 0; i < 200; i++) {
        one_client(i, i % 2 == 0);
        if (HasFatalFailure()) return;
    }
    EXPECT_EQ(settled_fd_count(pid, sync.get()), baseline);
    nlohmann::json st = d.status();
    EXPECT_EQ(count_sessions(st), 1u);  // only "sync"
    EXPECT_EQ(st["preserved_files"], 0);
    EXPECT_FALSE(st["control_connected"].get<bool>());
}

// Sessions closed while a control connection stays open the whole time,
// and admin requests in between: the count comes back too.
TEST(DaemonFds, BackToBaselineWithLongLivedControl) {
    DaemonProcess d;
    pid_t pid = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd sync(lu_create_session(ctl.get(), "sync"));
    ASSERT_TRUE(sync);
    const size_t baseline = settled_fd_count(pid, sync.get());
    std::vector<Fd> sessions;
    for (int i = 0; i < 100; i++) {
        sessions.emplace_back(lu_create_session(ctl.get(), ("s" + std::to_string(i)).c_str()));
        ASSERT_TRUE(sessions.back());
        Fd m = make_memfd("m");
        ASSERT_EQ(lu_preserve_fd(sessions.back().get(), m.get(), 1), 0);
    }
    // 100 session sockets and 100 preserved memfds are held now.
    EXPECT_GE(settled_fd_count(pid, sync.get()), baseline + 200);
    EXPECT_EQ(count_sessions(d.status()), 101u);
    sessions.clear();
    EXPECT_EQ(settled_fd_count(pid, sync.get()), baseline);
    EXPECT_EQ(count_sessions(d.status()), 1u);
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

// Waits for every fd in `fds` to become readable, up to a generous bound
// (a liveness check: a healthy daemon answers at once, a stuck one never).
bool all_readable(const std::vector<int>& fds, int bound_ms) {
    // A deadline on the clock: an fd that is ready makes poll return at
    // once, so counting iterations would not wait at all.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(bound_ms);
    std::vector<pollfd> p;
    for (int fd : fds) p.push_back({fd, POLLIN, 0});
    size_t ready = 0;
    while (ready < p.size() && std::chrono::steady_clock::now() < deadline) {
        if (poll(p.data(), p.size(), 100) < 0) return false;
        ready = 0;
        for (auto& x : p) ready += (x.revents & (POLLIN | POLLHUP)) != 0;
        if (ready < p.size()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return ready == p.size();
}

// When the daemon's fd table is full (sessions are not bounded by its fd
// budget: each one is a daemon fd), new connections must still get an
// answer (an error is fine) instead of hanging in the listen backlog while
// the loop spins on a listener it cannot accept from. The table is made
// small with prlimit so the test is quick; at the default limit the same
// state is reached with ~1000 sessions once the preserve budget is used.
TEST(DaemonFds, FullFdTableStillAnswersNewConnections) {
    DaemonProcess d;
    pid_t pid = d.pid();
    ASSERT_GT(pid, 0);
    rlimit small{256, 256};
    ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &small, nullptr), 0) << strerror(errno);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> sessions;
    int err = 0;
    for (int i = 0; i < 400 && !err; i++) {
        int s = lu_create_session(ctl.get(), ("full-" + std::to_string(i)).c_str());
        if (s < 0) err = s;
        else sessions.emplace_back(s);
    }
    ASSERT_NE(err, 0) << "the daemon never ran out of fds";
    ASSERT_FALSE(sessions.empty());
    EXPECT_EQ(err, -EMFILE) << strerror(-err);
    // The existing sessions still work: they need no new fd.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(sessions.front().get(), name), 0);
    // A client that takes whatever fd was left, and holds it.
    Fd idle = raw_connect(d.dir() + "/admin");
    ASSERT_TRUE(idle);
    // New clients: a status request and a control open must be answered.
    Fd admin = raw_connect(d.dir() + "/admin");
    ASSERT_TRUE(admin);
    std::string req = R"({"op":"status"})";
    ASSERT_EQ(raw_send(admin.get(), req.data(), req.size()), 0);
    Fd control = raw_connect(d.dir() + "/control");
    ASSERT_TRUE(control);
    EXPECT_TRUE(all_readable({admin.get(), control.get()}, 5000))
        << "a new connection got no answer: the daemon cannot accept with a full fd table";
    // Room again: everything recovers.
    idle.reset();
    admin.reset();
    control.reset();
    sessions.resize(sessions.size() / 2);
    EXPECT_TRUE(d.status().is_object());
    Fd again(lu_create_session(ctl.get(), "after"));
    EXPECT_TRUE(again) << strerror(-again.get());
}

}  // namespace
}  // namespace lu::testing
