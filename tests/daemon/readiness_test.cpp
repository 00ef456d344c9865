// SPDX-License-Identifier: Apache-2.0
// Readiness as a service manager sees it: the daemon runs with NOTIFY_SOCKET
// pointing at a datagram socket of ours, and we read what it sends, with the
// sender's credentials, as systemd does.
#include <poll.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

struct Notification {
    pid_t sender = -1;
    std::string text;
};

class NotifySocket {
public:
    NotifySocket() {
        char tmpl[] = "/tmp/liveupdate-notify-XXXXXX";
        dir_ = mkdtemp(tmpl);
        path_ = dir_ + "/notify";
        fd_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, path_.c_str(), path_.size() + 1);
        EXPECT_EQ(bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        int on = 1;
        setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    }
    ~NotifySocket() {
        unlink(path_.c_str());
        rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }

    // The next notification; none after 30 s (a liveness bound) fails.
    Notification next() {
        Notification n;
        pollfd p{fd_.get(), POLLIN, 0};
        if (poll(&p, 1, 30000) != 1) {
            ADD_FAILURE() << "no notification";
            return n;
        }
        char buf[4096];
        alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(ucred))];
        iovec iov{buf, sizeof buf};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        ssize_t r = recvmsg(fd_.get(), &mh, 0);
        if (r < 0) return n;
        n.text.assign(buf, static_cast<size_t>(r));
        for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
                n.sender = reinterpret_cast<ucred*>(CMSG_DATA(c))->pid;
        return n;
    }

private:
    std::string dir_, path_;
    Fd fd_;
};

bool has_line(const std::string& text, const std::string& line) {
    return ("\n" + text + "\n").find("\n" + line + "\n") != std::string::npos;
}

// Without a keeper (--no-keeper): READY=1 at start; after the update, the
// old main process names its successor and the successor says it is ready,
// naming itself.
void expect_new_main_pid(int (DaemonProcess::*update)(const std::vector<std::string>&)) {
    NotifySocket notify;
    setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
    DaemonProcess d({"--no-keeper"});
    unsetenv("NOTIFY_SOCKET");
    pid_t first = d.pid();

    Notification n = notify.next();
    EXPECT_EQ(n.sender, first);
    EXPECT_TRUE(has_line(n.text, "READY=1")) << n.text;

    ASSERT_EQ((d.*update)({}), 0);
    pid_t next = d.pid();
    ASSERT_GT(next, 0);
    ASSERT_NE(next, first);
    // Two messages, in either order: the old main process names its
    // successor, and the successor says it is ready, naming itself.
    bool named_by_old = false, ready_from_next = false;
    for (int i = 0; i < 2; i++) {
        n = notify.next();
        if (n.sender == first && has_line(n.text, "MAINPID=" + std::to_string(next)))
            named_by_old = true;
        if (n.sender == next && has_line(n.text, "MAINPID=" + std::to_string(next)) &&
            has_line(n.text, "READY=1"))
            ready_from_next = true;
        EXPECT_TRUE(n.sender == first || n.sender == next) << n.sender << ": " << n.text;
    }
    EXPECT_TRUE(named_by_old);
    EXPECT_TRUE(ready_from_next);
    // The pid is the process's real one: /proc knows it as liveupdated.
    Fd comm(open(("/proc/" + std::to_string(next) + "/comm").c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_EQ(read_all_at(comm.get()), "liveupdated\n");
}

TEST(Readiness, ReadyAtStartAndTheNewMainPidAfterALiveUpdate) {
    expect_new_main_pid(&DaemonProcess::reboot);
}

// The same for an upgrade: a supervisor follows the new binary.
TEST(Readiness, TheNewMainPidAfterAnUpgrade) { expect_new_main_pid(&DaemonProcess::upgrade); }

// With a keeper (the default) the main process is the keeper, from the
// start and for good: every instance, after a reboot, an upgrade or a
// crash, says it is ready and names the keeper. A supervisor never sees
// the main process die when an instance does.
TEST(Readiness, WithAKeeperTheMainProcessIsTheKeeperThroughUpdatesAndCrashes) {
    NotifySocket notify;
    setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
    DaemonProcess d;
    unsetenv("NOTIFY_SOCKET");
    const pid_t keeper = d.status()["keeper"]["pid"].get<pid_t>();
    ASSERT_GT(keeper, 0);
    auto expect_ready_from = [&](pid_t sender, const char* when) {
        Notification n = notify.next();
        EXPECT_EQ(n.sender, sender) << when << ": " << n.text;
        EXPECT_TRUE(has_line(n.text, "READY=1")) << when << ": " << n.text;
        EXPECT_TRUE(has_line(n.text, "MAINPID=" + std::to_string(keeper))) << when << ": " << n.text;
    };
    expect_ready_from(d.pid(), "cold start");
    ASSERT_EQ(d.reboot(), 0);
    expect_ready_from(d.pid(), "reboot");
    ASSERT_EQ(d.upgrade(), 0);
    expect_ready_from(d.pid(), "upgrade");
    const pid_t killed = d.pid();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    pid_t now = -1;
    for (int i = 0; i < 1000 && ((now = d.pid()) <= 0 || now == killed); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    expect_ready_from(now, "crash");
    EXPECT_EQ(d.status()["keeper"]["pid"].get<pid_t>(), keeper);
}

}  // namespace
}  // namespace lu::testing
