// SPDX-License-Identifier: Apache-2.0
// `liveupdatectl upgrade`: the daemon's binary is replaced and no client
// notices. Every connection keeps its fd and goes on working, every session
// keeps its direction, files, tokens and states, the epoch stays; a failed
// upgrade rolls back with every connection still served by the old
// instance. Real daemon processes over their real sockets.
#include <atomic>

#include "reboot/reboot_util.hpp"
#include "wire.h"

namespace lu::reboot_test {
namespace {

// A pipe preserved through the test handler: its FLB is state that must
// move too.
struct Pipe {
    Fd r, w;
};

Pipe make_pipe() {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    return {Fd(p[0]), Fd(p[1])};
}

// Status's sessions without what changes by itself (how long an incoming
// session has waited).
json steady(json sessions) {
    for (auto& s : sessions) s.erase("waiting_s");
    return sessions;
}

bool same_file(int a, int b) {
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Both directions and every state a session can be in, held by one client
// across an upgrade, then a reboot.
TEST(Upgrade, NothingChangesForClients) {
    DaemonProcess d({"--test-handler"});
    const Bytes kept = random_bytes(70000, 1), fresh = random_bytes(5000, 2);
    {  // epoch 0: what becomes incoming
        Fd ctl(lu_open());
        ASSERT_TRUE(ctl.ok());
        Fd a(lu_create_session(ctl.get(), "in-retrieved")), b(lu_create_session(ctl.get(), "in-fresh"));
        ASSERT_TRUE(a.ok() && b.ok());
        Fd m1 = make_memfd("kept", kept), m2 = make_memfd("fresh", fresh);
        ASSERT_EQ(lu_preserve_fd(a.get(), m1.get(), 1), 0);
        ASSERT_EQ(lu_preserve_fd(b.get(), m2.get(), 1), 0);
        ctl.reset();
        ASSERT_EQ(d.reboot(), 0);
    }
    Fd ctl(lu_open());
    ASSERT_TRUE(ctl.ok()) << strerror(-ctl.get());
    Fd in_a(lu_retrieve_session(ctl.get(), "in-retrieved"));
    ASSERT_TRUE(in_a.ok());
    Fd got(lu_retrieve_fd(in_a.get(), 1));
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(contents(got.get()) == kept);
    Fd out(lu_create_session(ctl.get(), "out-a")), empty(lu_create_session(ctl.get(), "out-empty"));
    ASSERT_TRUE(out.ok() && empty.ok());
    const Bytes mine = random_bytes(4096, 3);
    Fd m = make_memfd("mine", mine);
    Pipe p = make_pipe();
    ASSERT_EQ(lu_preserve_fd(out.get(), m.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(out.get(), p.r.get(), 2), 0);
    const pid_t pid0 = d.pid();
    const json before = d.status();

    char* reply = nullptr;
    int rc = lu_admin_upgrade(nullptr, 0, 0, &reply);
    std::string why = reply ? reply : "";
    lu_free(reply);
    ASSERT_EQ(rc, 0) << why;
    d.track_update(pid0);
    json r = json::parse(why, nullptr, false);
    EXPECT_EQ(str(r, "kind"), "upgrade") << why;
    EXPECT_EQ(num(r, "upgrades"), 1) << why;

    json st = d.status();
    EXPECT_NE(num(st, "pid"), pid0);
    EXPECT_EQ(num(st, "epoch"), 1) << "an upgrade is not a reboot";
    EXPECT_EQ(num(st, "upgrades"), 1);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_EQ(steady(st["sessions"]), steady(before["sessions"]))
        << "before: " << before["sessions"].dump() << "\nafter: " << st["sessions"].dump();
    // Waiting since the reboot, not since the upgrade.
    EXPECT_GE(find_session(st, "in-fresh")["waiting_s"].get<double>(),
              find_session(before, "in-fresh")["waiting_s"].get<double>());
    EXPECT_TRUE(st["control_connected"].get<bool>());

    // The control fd is the same connection: still exclusive, still working.
    Fd second(lu_open());
    EXPECT_EQ(second.get(), -EBUSY);
    Fd later(lu_create_session(ctl.get(), "created-after"));
    EXPECT_TRUE(later.ok()) << strerror(-later.get());
    EXPECT_EQ(lu_create_session(ctl.get(), "out-a"), -EEXIST);
    // Outgoing: name, tokens, order, a new file.
    EXPECT_EQ(session_name(out.get()), "out-a");
    EXPECT_EQ(lu_preserve_fd(out.get(), m.get(), 9), -EBUSY) << "the memfd is still managed";
    EXPECT_EQ(lu_preserve_fd(out.get(), p.w.get(), 1), -EEXIST) << "token 1 is still taken";
    Fd m3 = make_memfd("more", mine);
    EXPECT_EQ(lu_preserve_fd(out.get(), m3.get(), 3), 0);
    EXPECT_EQ(lu_retrieve_fd(out.get(), 1), -EINVAL) << "still outgoing";
    // Incoming, retrieved: the same open file, retrieve once, finish.
    Fd again(lu_retrieve_fd(in_a.get(), 1));
    ASSERT_TRUE(again.ok()) << strerror(-again.get());
    EXPECT_TRUE(same_file(again.get(), got.get()));
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "in-retrieved"), -EINVAL);
    EXPECT_EQ(lu_finish(in_a.get()), 0);
    // Incoming, never retrieved: still retrievable, once.
    Fd in_b(lu_retrieve_session(ctl.get(), "in-fresh"));
    ASSERT_TRUE(in_b.ok()) << strerror(-in_b.get());
    Fd gb(lu_retrieve_fd(in_b.get(), 1));
    ASSERT_TRUE(gb.ok());
    EXPECT_TRUE(contents(gb.get()) == fresh);
    EXPECT_EQ(lu_finish(in_b.get()), 0);

    // Then a reboot carries what the upgrade kept.
    ctl.reset();
    ASSERT_EQ(d.reboot(), 0);
    Fd ctl2(lu_open());
    ASSERT_TRUE(ctl2.ok());
    Fd in(lu_retrieve_session(ctl2.get(), "out-a"));
    ASSERT_TRUE(in.ok()) << strerror(-in.get());
    Fd g1(lu_retrieve_fd(in.get(), 1)), g2(lu_retrieve_fd(in.get(), 2)), g3(lu_retrieve_fd(in.get(), 3));
    ASSERT_TRUE(g1.ok() && g2.ok() && g3.ok());
    EXPECT_TRUE(contents(g1.get()) == mine);
    EXPECT_TRUE(same_file(g2.get(), p.r.get()));
    EXPECT_GE(Fd(lu_retrieve_session(ctl2.get(), "out-empty")).get(), 0);
    EXPECT_EQ(num(d.status(), "epoch"), 2);
}

// A reply the client has not read yet is held by the daemon: it moves too,
// and the client reads it after the upgrade.
TEST(Upgrade, HeldReplyIsDeliveredAfterwards) {
    DaemonProcess d({"--test-handler"});
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "held"));
    ASSERT_TRUE(s.ok());
    // Fill the session socket's reply queue: GET_NAME requests sent raw,
    // never read, until the daemon holds one.
    int sent = 0;
    for (; sent < 100000; sent++) {
        lu_wire_request req{};
        req.magic = LU_WIRE_MAGIC;
        req.cmd = LIVEUPDATE_SESSION_GET_NAME;
        req.arg_len = sizeof(liveupdate_session_get_name);
        char buf[sizeof req + sizeof(liveupdate_session_get_name)] = {};
        liveupdate_session_get_name arg{};
        arg.size = sizeof arg;
        memcpy(buf, &req, sizeof req);
        memcpy(buf + sizeof req, &arg, sizeof arg);
        if (send(s.get(), buf, sizeof buf, MSG_DONTWAIT) < 0) break;
    }
    ASSERT_GT(sent, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it fill our queue
    const pid_t pid0 = d.pid();
    ASSERT_EQ(d.upgrade(), 0);
    EXPECT_NE(d.pid(), pid0);
    // Every request answered, in order, none twice.
    int answered = 0;
    for (;;) {
        char buf[512];
        pollfd pf{s.get(), POLLIN, 0};
        if (poll(&pf, 1, answered < sent ? 10000 : 200) != 1) break;
        ssize_t n = recv(s.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        answered++;
    }
    EXPECT_EQ(answered, sent);
    EXPECT_EQ(session_name(s.get()), "held");
}

// ---- a failed upgrade ----

struct Fault {
    const char* name;
    std::vector<std::string> args;
};

void PrintTo(const Fault& f, std::ostream* os) { *os << f.name; }

class UpgradeRollback : public ::testing::TestWithParam<Fault> {};

// The old instance serves on, every connection with it; then an upgrade works.
TEST_P(UpgradeRollback, EveryConnectionServedThenAnUpgradeWorks) {
    DaemonProcess d({"--test-handler"});
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "app"));
    ASSERT_TRUE(s.ok());
    const Bytes b = random_bytes(10000, 7);
    Fd m = make_memfd("app", b);
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    const pid_t pid0 = d.pid();
    const json before = d.status();
    std::vector<std::string> args{"upgrade"};
    args.insert(args.end(), GetParam().args.begin(), GetParam().args.end());
    std::string out;
    int rc;
    {
        Deadline guard("the failed upgrade", {pid0});
        rc = DaemonProcess::ctl(args, &out);
    }
    const bool dry = std::find(args.begin(), args.end(), "--dry-run") != args.end();
    if (dry && std::string(GetParam().name) == "dry_run") {
        EXPECT_EQ(rc, 0) << out;
    } else {
        EXPECT_NE(rc, 0) << out;
    }
    json st = d.status();
    EXPECT_EQ(num(st, "pid"), pid0) << "the serving instance changed";
    EXPECT_EQ(num(st, "upgrades"), 0);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_EQ(steady(st["sessions"]), steady(before["sessions"]));
    EXPECT_EQ(session_name(s.get()), "app");
    Fd m2 = make_memfd("app2", b);
    EXPECT_EQ(lu_preserve_fd(s.get(), m2.get(), 2), 0);
    EXPECT_EQ(Fd(lu_open()).get(), -EBUSY);
    if (auto kids = children_of(pid0)) {
        EXPECT_TRUE(kids->empty()) << list(*kids);
    }

    ASSERT_EQ(d.upgrade(), 0);
    EXPECT_NE(d.pid(), pid0);
    EXPECT_EQ(session_name(s.get()), "app");
    Fd m3 = make_memfd("app3", b);
    EXPECT_EQ(lu_preserve_fd(s.get(), m3.get(), 3), 0);
    EXPECT_EQ(tokens_of(find_session(d.status(), "app")), (std::set<uint64_t>{1, 2, 3}));
}

INSTANTIATE_TEST_SUITE_P(
    Upgrade, UpgradeRollback,
    ::testing::Values(
        Fault{"write_handover", {"--inject-fault", "write-handover"}},
        Fault{"corrupt_handover", {"--inject-fault", "corrupt-handover"}},
        Fault{"truncate_handover", {"--inject-fault", "truncate-handover"}},
        Fault{"validate", {"--inject-fault", "validate"}},
        Fault{"older_binary_refuses_the_format", {"--inject-fault", "no-upgrade-format"}},
        Fault{"crash_before_ready", {"--inject-fault", "crash-before-ready"}},
        Fault{"hang_before_ready", {"--inject-fault", "hang-before-ready", "--timeout", "1"}},
        Fault{"exec_nonexistent", {"--exec", "/nonexistent"}},
        Fault{"exec_bin_true", {"--exec", "/bin/true"}},
        Fault{"dry_run", {"--dry-run"}},
        Fault{"dry_run_validate", {"--dry-run", "--inject-fault", "validate"}}),
    [](const ::testing::TestParamInfo<Fault>& i) { return std::string(i.param.name); });

// ---- under load ----

// 8 clients in a loop of create, preserve, GET_NAME, retrieve, finish and
// close while 20 upgrades run back to back: no request fails, every reply is
// right, and the daemon does not grow from one upgrade to the next.
TEST(UpgradeLoad, EightClientsTwentyUpgrades) {
    DaemonProcess d;
    constexpr int kClients = 8, kPool = 40;
    // Incoming sessions for the clients to retrieve and finish.
    {
        Fd ctl(lu_open());
        std::vector<Fd> held;  // open until the reboot
        for (int c = 0; c < kClients; c++)
            for (int i = 0; i < kPool; i++) {
                std::string name = "pool-" + std::to_string(c) + "-" + std::to_string(i);
                Fd s(lu_create_session(ctl.get(), name.c_str()));
                Fd m = make_memfd("pool", Bytes(name.begin(), name.end()));
                ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
                held.push_back(std::move(s));
            }
        ctl.reset();
        ASSERT_EQ(d.reboot(), 0);
    }
    std::atomic<bool> stop{false};
    std::atomic<long> ops{0}, busy{0};
    std::vector<std::string> failures(kClients);
    auto open_control = [&]() {
        for (;;) {
            int fd = lu_open();
            if (fd != -EBUSY) return fd;
            busy++;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    };
    auto client = [&](int c) {
        auto fail = [&](const std::string& what) {
            if (failures[c].empty()) failures[c] = what;
        };
        for (int i = 0; !stop && failures[c].empty(); i++) {
            std::string name = "c" + std::to_string(c) + "-" + std::to_string(i);
            Fd ctl(open_control());
            if (!ctl.ok()) return fail("open: " + std::string(strerror(-ctl.get())));
            Fd s(lu_create_session(ctl.get(), name.c_str()));
            if (!s.ok()) return fail("create " + name + ": " + strerror(-s.get()));
            Fd in;
            std::string pool = "pool-" + std::to_string(c) + "-" + std::to_string(i);
            if (i < kPool) {
                in = Fd(lu_retrieve_session(ctl.get(), pool.c_str()));
                if (!in.ok()) return fail("retrieve " + pool + ": " + strerror(-in.get()));
            }
            ctl.reset();
            Bytes content(name.begin(), name.end());
            Fd m = make_memfd("load", content);
            if (int r = lu_preserve_fd(s.get(), m.get(), 7)) return fail("preserve: " + std::string(strerror(-r)));
            int err = 0;
            if (session_name(s.get(), &err) != name) return fail("get_name: " + std::to_string(err));
            if (in.ok()) {
                Fd g(lu_retrieve_fd(in.get(), 1));
                if (!g.ok()) return fail("retrieve_fd: " + std::string(strerror(-g.get())));
                if (contents(g.get()) != Bytes(pool.begin(), pool.end())) return fail("wrong bytes in " + pool);
                if (int r = lu_finish(in.get())) return fail("finish: " + std::string(strerror(-r)));
            }
            ops++;
        }
    };
    std::vector<std::thread> threads;
    for (int c = 0; c < kClients; c++) threads.emplace_back(client, c);
    std::vector<std::string> upgrade_errors;
    for (int u = 0; u < 20; u++) {
        const pid_t old = d.pid();
        char* reply = nullptr;
        int rc = lu_admin_upgrade(nullptr, 60, 0, &reply);
        if (rc) upgrade_errors.push_back(reply ? reply : strerror(-rc));
        lu_free(reply);
        d.track_update(old, rc == 0);
    }
    stop = true;
    for (auto& t : threads) t.join();
    for (int c = 0; c < kClients; c++) EXPECT_EQ(failures[c], "") << "client " << c;
    EXPECT_TRUE(upgrade_errors.empty()) << upgrade_errors.front();
    json st = d.status();
    EXPECT_EQ(num(st, "upgrades"), 20);
    EXPECT_EQ(num(st, "epoch"), 1);
    EXPECT_GT(ops.load(), kClients) << "the clients made no progress";
    std::cout << "[ load ] " << ops << " client loops, " << busy << " EBUSY retries of the control open\n";

    // Flat: more upgrades at rest change neither the fd count nor the RSS.
    auto rss_kb = [](pid_t pid) {
        std::ifstream f("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(f, line))
            if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
        return 0L;
    };
    std::vector<size_t> fds;
    std::vector<long> rss;
    for (int u = 0; u < 4; u++) {
        ASSERT_EQ(d.upgrade(), 0);
        fds.push_back(settled_fd_count(d.pid()));
        rss.push_back(rss_kb(d.pid()));
    }
    EXPECT_EQ(fds.front(), fds.back()) << "fds grow from one upgrade to the next";
    EXPECT_LT(rss.back(), rss.front() * 5 / 4) << "RSS grows from one upgrade to the next";
}

}  // namespace
}  // namespace lu::reboot_test
