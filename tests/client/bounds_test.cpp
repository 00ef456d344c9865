// SPDX-License-Identifier: Apache-2.0
// Bounds and retries: a daemon that never answers makes calls return
// -ETIMEDOUT, never hang; lu_open_wait takes turns for the control
// connection. Hangs are played by a fake daemon (fake_server.hpp), taking
// turns also by a real one. No test asserts an upper limit on the time a
// call took (machines are noisy): that it returned is the point.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liveupdate/client.h>
#include <liveupdate/client.hpp>
#include <poll.h>
#include <sys/wait.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <string>
#include <chrono>
#include <thread>
#include <vector>

#include "fake_server.hpp"

#ifdef LIVEUPDATED_PATH
#include "../support/daemon_process.hpp"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using fake::recv_request;
using fake::RuntimeDir;
using fake::send_reply;

constexpr unsigned kBoundMs = 200;

long long ms_since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// Each test sets the process-wide bound; the next one starts from the
// default again.
class BoundsTest : public fake::FdLeakTest {
  protected:
    void TearDown() override {
        lu_set_timeout_ms(30000);
        FdLeakTest::TearDown();
    }
};

// The environment is read only while lu_set_timeout_ms was never called,
// which other tests of this process may have done: its tests run in a
// fresh process, this binary run again with LU_BOUNDS_PROBE set, which
// answers before GoogleTest starts. "expect:N": the bound from the
// environment is N. "finish:FD": lu_finish on FD times out, and not before
// kBoundMs.
__attribute__((constructor)) void bounds_probe() {
    const char* probe = getenv("LU_BOUNDS_PROBE");
    if (!probe) return;
    if (!strncmp(probe, "expect:", 7)) _exit(lu_set_timeout_ms(1) == atoi(probe + 7) ? 0 : 1);
    if (!strncmp(probe, "finish:", 7)) {
        auto t0 = Clock::now();
        int rc = lu_finish(atoi(probe + 7));
        _exit(ms_since(t0) < kBoundMs ? 2 : rc == -ETIMEDOUT ? 0 : 1);
    }
    _exit(99);
}

// Runs the probe with LIVEUPDATE_TIMEOUT_MS=value; its exit code.
int probe(const std::string& what, const char* value, int keep_fd = -1) {
    pid_t pid = fork();
    if (pid == 0) {
        if (keep_fd >= 0) fcntl(keep_fd, F_SETFD, 0);
        setenv("LIVEUPDATE_TIMEOUT_MS", value, 1);
        setenv("LU_BOUNDS_PROBE", what.c_str(), 1);
        execl("/proc/self/exe", "bounds_probe", static_cast<char*>(nullptr));
        _exit(127);
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(BoundsTest, RequestToASilentDaemonTimesOut) {
    EXPECT_EQ(lu_set_timeout_ms(kBoundMs), 30000);
    fake::Pair p;
    auto t0 = Clock::now();
    EXPECT_EQ(lu_finish(p.client), -ETIMEDOUT);
    EXPECT_GE(ms_since(t0), kBoundMs);
    EXPECT_EQ(recv_request(p.server).hdr.cmd, static_cast<uint32_t>(LIVEUPDATE_SESSION_FINISH));
}

TEST_F(BoundsTest, TheEnvironmentSetsTheBound) {
    fake::Pair p;
    EXPECT_EQ(probe("finish:" + std::to_string(p.client), "200", p.client), 0);
}

// A malformed value keeps the default, as lu_set_timeout_ms reports it;
// "0" is no bound.
TEST_F(BoundsTest, AMalformedEnvironmentValueKeepsTheDefault) {
    for (const char* v : {"", "abc", "200ms", "-1", " 5", "+5", "99999999999"})
        EXPECT_EQ(probe("expect:30000", v), 0) << "LIVEUPDATE_TIMEOUT_MS=\"" << v << "\"";
    EXPECT_EQ(probe("expect:0", "0"), 0);
    EXPECT_EQ(probe("expect:1500", "1500"), 0);
}

TEST_F(BoundsTest, SetReturnsThePreviousValue) {
    lu_set_timeout_ms(kBoundMs);
    EXPECT_EQ(lu_set_timeout_ms(0), static_cast<int>(kBoundMs));
    EXPECT_EQ(lu_set_timeout_ms(4000000000u), 0);
    EXPECT_EQ(lu_set_timeout_ms(30000), INT_MAX);  // capped: an int
}

// The reply may come after the timeout: it must not answer the next
// request. The fd answers ENOTCONN from then on, and the daemon sees the
// connection closed.
TEST_F(BoundsTest, ATimedOutFdAnswersENOTCONN) {
    lu_set_timeout_ms(kBoundMs);
    fake::Pair p;
    int flags = fcntl(p.client, F_GETFD);
    EXPECT_EQ(lu_finish(p.client), -ETIMEDOUT);
    EXPECT_EQ(recv_request(p.server).hdr.cmd, static_cast<uint32_t>(LIVEUPDATE_SESSION_FINISH));
    char b;
    EXPECT_EQ(recv(p.server, &b, 1, MSG_DONTWAIT), 0);  // closed, as far as it can tell
    EXPECT_EQ(fcntl(p.client, F_GETFD), flags);         // the same fd, its flags kept
    EXPECT_EQ(lu_finish(p.client), -ENOTCONN);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(p.client, name), -ENOTCONN);
}

// A daemon that does not read: its queue fills, and the send waits within
// the same bound.
TEST_F(BoundsTest, ASendToADaemonThatDoesNotReadTimesOut) {
    lu_set_timeout_ms(kBoundMs);
    fake::Pair p;
    int small = 4096;
    setsockopt(p.client, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    // Fill the daemon's queue, to the last byte that fits.
    std::vector<char> msg(1024);
    for (size_t len : {msg.size(), size_t{1}}) {
        while (send(p.client, msg.data(), len, MSG_DONTWAIT) >= 0) {
        }
        ASSERT_EQ(errno, EAGAIN);
    }
    auto t0 = Clock::now();
    EXPECT_EQ(lu_finish(p.client), -ETIMEDOUT);
    EXPECT_GE(ms_since(t0), kBoundMs);
}

TEST_F(BoundsTest, ZeroIsNoBound) {
    lu_set_timeout_ms(0);
    fake::Pair p;
    std::thread d([&] {
        recv_request(p.server);
        send_reply(p.server, 0, nullptr, 0);
    });
    EXPECT_EQ(lu_finish(p.client), 0);
    d.join();
}

// A prompt reply within a bound, on a socket the caller made non-blocking.
TEST_F(BoundsTest, APromptReplyWithinTheBound) {
    lu_set_timeout_ms(kBoundMs);
    fake::Pair p;
    fcntl(p.client, F_SETFL, O_NONBLOCK);
    std::thread d([&] {
        recv_request(p.server);
        send_reply(p.server, EINVAL, nullptr, 0);
    });
    EXPECT_EQ(lu_finish(p.client), -EINVAL);
    d.join();
}

// A new daemon instance coming up: the connect is queued in the backlog and
// nobody accepts it. The hello's wait is bounded.
TEST_F(BoundsTest, OpenAgainstABacklogOnlyTimesOut) {
    lu_set_timeout_ms(kBoundMs);
    RuntimeDir dir;
    int l = dir.listen_at("control");
    auto t0 = Clock::now();
    EXPECT_EQ(lu_open(), -ETIMEDOUT);
    EXPECT_GE(ms_since(t0), kBoundMs);
    close(l);
}

// A full backlog: connect itself waits for room, within the bound.
TEST_F(BoundsTest, OpenAgainstAFullBacklogTimesOut) {
    lu_set_timeout_ms(kBoundMs);
    RuntimeDir dir;
    int l = dir.listen_at("control");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control", dir.path().c_str());
    std::vector<int> queued;
    for (;;) {
        int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
            EXPECT_EQ(errno, EAGAIN);
            close(c);
            break;
        }
        queued.push_back(c);
    }
    auto t0 = Clock::now();
    EXPECT_EQ(lu_open(), -ETIMEDOUT);
    EXPECT_GE(ms_since(t0), kBoundMs);
    for (int c : queued) close(c);
    close(l);
}

TEST_F(BoundsTest, AdminRequestToASilentDaemonTimesOut) {
    lu_set_timeout_ms(kBoundMs);
    RuntimeDir dir;
    int l = dir.listen_at("admin");
    char* reply = nullptr;
    auto t0 = Clock::now();
    EXPECT_EQ(lu_admin_request(R"({"op":"status"})", &reply), -ETIMEDOUT);
    EXPECT_GE(ms_since(t0), kBoundMs);
    EXPECT_EQ(reply, nullptr);
    close(l);
}

// Waits by design are not cut short by a small general bound: the answer
// that comes after it, within the call's own wait, is returned.
TEST_F(BoundsTest, HandoffWaitHasItsOwnBound) {
    lu_set_timeout_ms(kBoundMs);
    fake::Pair p;
    std::thread d([&] {
        recv_request(p.server);
        std::this_thread::sleep_for(std::chrono::milliseconds(3 * kBoundMs));
        lu_session_handoff_wait w{sizeof(w), LU_HANDOFF_ROLLED_BACK, ECANCELED, 0};
        send_reply(p.server, 0, &w, sizeof(w));
    });
    int reason = 0;
    EXPECT_EQ(lu_handoff_wait(p.client, &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ECANCELED);
    d.join();
}

TEST_F(BoundsTest, AdminUpdatesHaveTheirOwnBound) {
    lu_set_timeout_ms(kBoundMs);
    RuntimeDir dir;
    int l = dir.listen_at("admin");
    for (const char* req : {R"({"op":"upgrade","timeout":1})", R"({"op":"reboot"})",
                            R"({"op": "update", "sessions": ["a"], "timeout" : 2})"}) {
        std::thread d([&] {
            int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
            ASSERT_GE(c, 0);
            recv_request(c);
            std::this_thread::sleep_for(std::chrono::milliseconds(3 * kBoundMs));
            const char ok[] = R"({"ok":true})";
            send_reply(c, 0, ok, sizeof(ok) - 1);
            close(c);
        });
        char* reply = nullptr;
        EXPECT_EQ(lu_admin_request(req, &reply), 0) << req;
        lu_free(reply);
        d.join();
    }
    close(l);
}

// A fake daemon for the control socket: answers every hello with EBUSY
// until `free_at`, then with 0; counts the connections.
struct TurnDaemon {
    int listener;
    std::atomic<bool> stop{false};
    std::atomic<int> busy{0};
    Clock::time_point free_at;
    std::thread t;
    TurnDaemon(int l, std::chrono::milliseconds held) : listener(l), free_at(Clock::now() + held) {
        t = std::thread([this] {
            while (!stop) {
                pollfd pfd{listener, POLLIN, 0};
                if (poll(&pfd, 1, 10) <= 0) continue;
                int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
                if (c < 0) continue;
                bool held_now = Clock::now() < free_at;
                if (held_now) busy++;
                send_reply(c, held_now ? EBUSY : 0, nullptr, 0);
                close(c);
            }
        });
    }
    ~TurnDaemon() {
        stop = true;
        t.join();
    }
};

TEST_F(BoundsTest, OpenWaitGetsTheConnectionOnceFreed) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    {
        TurnDaemon d(l, std::chrono::milliseconds(100));
        int fd = lu_open_wait(10000);
        EXPECT_GE(fd, 0) << strerror(-fd);
        EXPECT_GE(d.busy.load(), 1);
        if (fd >= 0) close(fd);
    }
    close(l);
}

TEST_F(BoundsTest, OpenWaitGivesEBUSYAfterItsTimeout) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    {
        TurnDaemon d(l, std::chrono::hours(1));
        auto t0 = Clock::now();
        EXPECT_EQ(lu_open_wait(kBoundMs), -EBUSY);
        EXPECT_GE(ms_since(t0), kBoundMs);
        EXPECT_GE(d.busy.load(), 2);
        int before = d.busy;
        EXPECT_EQ(lu_open_wait(0), -EBUSY);  // tries once
        EXPECT_EQ(d.busy.load(), before + 1);
    }
    close(l);
}

// No daemon is not a turn to wait for.
TEST_F(BoundsTest, OpenWaitDoesNotRetryENOENT) {
    RuntimeDir dir;
    EXPECT_EQ(lu_open_wait(3600 * 1000), -ENOENT);
}

TEST_F(BoundsTest, CppOpenTakesTurns) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    {
        TurnDaemon d(l, std::chrono::milliseconds(100));
        try {
            liveupdate::Orchestrator::open();
            ADD_FAILURE() << "open() without a wait did not answer EBUSY";
        } catch (const liveupdate::Error& e) {
            EXPECT_EQ(e.errno_value(), EBUSY);
        }
        liveupdate::Orchestrator o = liveupdate::Orchestrator::open(std::chrono::seconds(10));
        EXPECT_TRUE(o);
    }
    close(l);
}

#ifdef LIVEUPDATED_PATH
// Against the real daemon: another process holds the control connection
// and closes it ~100 ms later.
TEST_F(BoundsTest, OpenWaitTakesTurnsWithARealDaemon) {
    lu::testing::DaemonProcess d;
    int holder = lu_open();
    ASSERT_GE(holder, 0) << strerror(-holder);
    EXPECT_EQ(lu_open(), -EBUSY);
    std::thread t([holder] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        close(holder);
    });
    int fd = lu_open_wait(10000);
    t.join();
    EXPECT_GE(fd, 0) << strerror(-fd);
    if (fd >= 0) close(fd);
}
#endif

}  // namespace
