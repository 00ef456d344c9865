// SPDX-License-Identifier: Apache-2.0
// kvcache's hand-off (docs/handoff.md), with liveupdated as a real process:
// the next version is started before the switch and takes the session over
// (--takeover), so nobody serves only for the hand-off itself; a next
// version that fails (--fail-next) rolls back and the old one serves on. A
// client on its persistent connection never sees a failed request, and
// another LUO client's session is never touched.
#include <sys/mman.h>

#include <atomic>
#include <thread>

#include "kvcache_support.hpp"
#include "liveupdate/client.h"
#include "support/daemon_process.hpp"

namespace {

using kvtest::Client;
using kvtest::KvProcess;
using lu::testing::DaemonProcess;

// A client that sets and reads back its own keys on one persistent
// connection until stopped, counting what went wrong.
struct Load {
    std::atomic<bool> stop{false};
    std::atomic<int> requests{0}, failed{0};
    std::thread t;
    explicit Load(int port) {
        t = std::thread([this, port] {
            Client c(port);
            if (!c.ok()) {
                failed++;
                return;
            }
            for (int i = 0; !stop; i++) {
                const std::string key = "load-" + std::to_string(i % 500);
                const std::string value = "value-" + std::to_string(i);
                if (c.set(key, value) != "STORED") failed++;
                bool bad = false;
                auto got = c.get(key, &bad);
                if (bad || !got || *got != value) failed++;
                requests++;
            }
        });
    }
    void wait_requests(int n) {
        for (int i = 0; i < 3000 && requests < n; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ~Load() {
        stop = true;
        t.join();
    }
};

// Another service: its own LUO session with a memfd, held by this process.
struct OtherService {
    int session = -1, mem = -1;
    OtherService() {
        int ctl = lu_open();
        EXPECT_GE(ctl, 0);
        session = lu_create_session(ctl, "other");
        EXPECT_GE(session, 0);
        close(ctl);
        mem = memfd_create("other", MFD_CLOEXEC);
        EXPECT_EQ(pwrite(mem, "other-state", 11, 0), 11);
        EXPECT_EQ(lu_preserve_fd(session, mem, 1), 0);
    }
    void expect_undisturbed() {
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        EXPECT_EQ(lu_get_name(session, name), 0);
        char buf[16] = {};
        EXPECT_EQ(pread(mem, buf, sizeof buf, 0), 11);
        EXPECT_STREQ(buf, "other-state");
    }
    ~OtherService() {
        close(session);
        close(mem);
    }
};

std::vector<std::string> args(const std::string& tag, std::vector<std::string> more = {}) {
    std::vector<std::string> a{"--port", "0", "--memory", "16", "--version-tag", tag};
    a.insert(a.end(), more.begin(), more.end());
    return a;
}

TEST(KvHandoff, FailingNextRollsBackThenANextStartedInAdvanceServes) {
    DaemonProcess dp;
    OtherService other;
    KvProcess v1(args("v1"), dp.dir());
    const int port = v1.wait_serving();
    ASSERT_NE(port, 0) << v1.log();
    Client c(port);
    ASSERT_TRUE(c.ok());
    for (int i = 0; i < 200; i++) ASSERT_EQ(c.set("item-" + std::to_string(i), std::string(100 + i, 'a' + i % 26)), "STORED");
    const uint64_t epoch = dp.status()["epoch"];
    Load load(port);
    load.wait_requests(50);

    // A next version that fails before FINISH: the old one serves on.
    KvProcess bad(args("v2", {"--takeover", std::to_string(v1.pid()), "--fail-next"}), dp.dir());
    ASSERT_TRUE(bad.wait_exit()) << bad.log();
    EXPECT_NE(bad.log().find("--fail-next: failing before FINISH"), std::string::npos) << bad.log();
    ASSERT_TRUE(v1.wait_for("rolled back")) << v1.log();
    const int before = load.requests;
    load.wait_requests(before + 50);  // v1 serves the connection it carried
    EXPECT_EQ(c.call("version\r\n", "VERSION 1.6.0-kvcache+v1\r\n"), "VERSION 1.6.0-kvcache+v1\r\n");
    EXPECT_EQ(c.stat("live_updates"), "0");  // the rolled-back one does not count
    EXPECT_FALSE(v1.exited());

    // A next version that works, started before the switch.
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid())}), dp.dir());
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    EXPECT_NE(v2.log().find("warm start"), std::string::npos) << v2.log();
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    EXPECT_NE(v1.log().find("handed off to pid"), std::string::npos) << v1.log();
    const int at_switch = load.requests;
    load.wait_requests(at_switch + 50);  // the same connection, now v2's
    EXPECT_EQ(c.call("version\r\n", "VERSION 1.6.0-kvcache+v2\r\n"), "VERSION 1.6.0-kvcache+v2\r\n");
    EXPECT_EQ(c.stat("live_updates"), "1");
    for (int i = 0; i < 200; i++) {
        bool bad_reply = false;
        auto got = c.get("item-" + std::to_string(i), &bad_reply);
        ASSERT_FALSE(bad_reply);
        ASSERT_TRUE(got) << i;
        EXPECT_EQ(*got, std::string(100 + i, 'a' + i % 26)) << i;
    }
    load.stop = true;
    load.t.join();
    load.t = std::thread([] {});
    EXPECT_EQ(load.failed, 0) << load.requests << " requests";
    other.expect_undisturbed();
    EXPECT_EQ(dp.status()["epoch"], epoch);  // no reboot
}

}  // namespace
