// SPDX-License-Identifier: Apache-2.0
// A daemon killed with SIGKILL loses nothing: its keeper starts the next
// instance, which serves what was open at the moment of the crash as after
// a reboot (incoming, one epoch on), and nothing that was gone. Real
// processes over their real sockets (docs/crash-safety.md).
#include "crash/crash_util.hpp"

namespace lu::crash_test {
namespace {

TEST(CrashRecovery, AKilledDaemonComesBackWithWhatWasOpenAndNothingElse) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_TRUE(ctl.ok());
    // Before a reboot: "fin" will be finished after it, "waiting" left unretrieved.
    {
        Fd fin(lu_create_session(ctl.get(), "fin"));
        Fd waiting(lu_create_session(ctl.get(), "waiting"));
        Fd m1 = make_memfd("fin", random_bytes(4096, 1)), m2 = make_memfd("w", random_bytes(4096, 2));
        ASSERT_EQ(lu_preserve_fd(fin.get(), m1.get(), 1), 0);
        ASSERT_EQ(lu_preserve_fd(waiting.get(), m2.get(), 7), 0);
        ctl.reset();
        ASSERT_EQ(d.reboot(), 0);
    }
    ctl.reset(lu_open());
    ASSERT_TRUE(ctl.ok());
    {
        Fd fin(lu_retrieve_session(ctl.get(), "fin"));
        ASSERT_TRUE(fin.ok());
        ASSERT_EQ(lu_finish(fin.get()), 0);
    }
    // This epoch's: "keep" with two files (one written after its preserve),
    // "released" closed, a preserve that failed.
    const Bytes a = random_bytes(1 << 20, 3), b = random_bytes(12345, 4), later = random_bytes(100, 5);
    Fd keep(lu_create_session(ctl.get(), "keep"));
    Fd ma = make_memfd("a", a), mb = make_memfd("b", b);
    ASSERT_EQ(lu_preserve_fd(keep.get(), ma.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(keep.get(), mb.get(), 2), 0);
    ASSERT_EQ(lu_preserve_fd(keep.get(), mb.get(), 3), -EBUSY);  // the same file twice
    ASSERT_TRUE(pwrite_all(ma.get(), later, 0));
    {
        Fd released(lu_create_session(ctl.get(), "released"));
        Fd mr = make_memfd("r", random_bytes(10, 6));
        ASSERT_EQ(lu_preserve_fd(released.get(), mr.get(), 1), 0);
    }
    const json before = d.status();
    ASSERT_TRUE(before["keeper"]["protecting"].get<bool>()) << before.dump();
    const uint64_t epoch = before["epoch"].get<uint64_t>();

    const pid_t killed = d.pid();
    const uint64_t t0 = now_ns();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    // Its clients hear it at once, and not as a hand-over (ESTALE).
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(keep.get(), name), -EOWNERDEAD);
    EXPECT_EQ(lu_create_session(ctl.get(), "x"), -EOWNERDEAD);

    const json after = wait_recovered(d, killed);
    ASSERT_FALSE(after.is_null());
    std::printf("serving again %.1f ms after the kill\n", (now_ns() - t0) / 1e6);
    EXPECT_EQ(after["epoch"].get<uint64_t>(), epoch + 1);
    EXPECT_EQ(after["crashes_recovered"].get<uint64_t>(), 1u);
    EXPECT_TRUE(after["last_crash"].is_string()) << after.dump();
    EXPECT_TRUE(after["keeper"]["protecting"].get<bool>()) << after.dump();
    EXPECT_EQ(names_of(after), (std::set<std::string>{"keep", "waiting"})) << after.dump();

    ctl.reset(lu_open());
    ASSERT_TRUE(ctl.ok()) << strerror(-ctl.get());
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "fin"), -ENOENT);
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "released"), -ENOENT);
    Fd in(lu_retrieve_session(ctl.get(), "keep"));
    ASSERT_TRUE(in.ok()) << strerror(-in.get());
    Bytes want_a = a;
    std::copy(later.begin(), later.end(), want_a.begin());
    Fd ra(lu_retrieve_fd(in.get(), 1)), rb(lu_retrieve_fd(in.get(), 2));
    ASSERT_TRUE(ra.ok() && rb.ok());
    EXPECT_EQ(lu_retrieve_fd(in.get(), 3), -ENOENT);
    EXPECT_EQ(diff(contents(ra.get()), want_a), "equal");
    EXPECT_EQ(diff(contents(rb.get()), b), "equal");
    EXPECT_EQ(lu_finish(in.get()), 0);
    Fd w(lu_retrieve_session(ctl.get(), "waiting"));
    ASSERT_TRUE(w.ok());
    Fd rw(lu_retrieve_fd(w.get(), 7));
    ASSERT_TRUE(rw.ok());
    EXPECT_EQ(diff(contents(rw.get()), random_bytes(4096, 2)), "equal");
}

TEST(CrashRecovery, TenCrashesInARowAreCountedAndLoseNothing) {
    DaemonProcess d;
    const Bytes bytes = random_bytes(65536, 9);
    for (int i = 0; i < 10; i++) {
        // Each time: the session comes back incoming; the client takes it
        // back and preserves it again, as a service does after a reboot.
        Fd ctl(lu_open());
        ASSERT_TRUE(ctl.ok()) << i;
        Fd s(i == 0 ? lu_create_session(ctl.get(), "svc") : -1);
        Fd m;
        if (i == 0) {
            m = make_memfd("svc", bytes);
        } else {
            Fd in(lu_retrieve_session(ctl.get(), "svc"));
            ASSERT_TRUE(in.ok()) << i << ": " << strerror(-in.get());
            m.reset(lu_retrieve_fd(in.get(), 1));
            ASSERT_TRUE(m.ok()) << i;
            ASSERT_EQ(lu_finish(in.get()), 0) << i;
            s.reset(lu_create_session(ctl.get(), "svc"));
        }
        ASSERT_TRUE(s.ok()) << i;
        EXPECT_EQ(diff(contents(m.get()), bytes), "equal") << i;
        ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0) << i;
        const pid_t killed = d.pid();
        ASSERT_EQ(kill(killed, SIGKILL), 0);
        waitpid(killed, nullptr, 0);
        const json st = wait_recovered(d, killed);
        ASSERT_FALSE(st.is_null()) << i;
        EXPECT_EQ(st["crashes_recovered"].get<uint64_t>(), static_cast<uint64_t>(i + 1));
    }
}

TEST(CrashRecovery, TheKeepersDeathIsMadeGoodByANewKeeper) {
    DaemonProcess d;
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "svc"));
    const Bytes bytes = random_bytes(8192, 11);
    Fd m = make_memfd("svc", bytes);
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 5), 0);
    const pid_t keeper = d.status()["keeper"]["pid"].get<pid_t>();
    ASSERT_GT(keeper, 0);
    ASSERT_EQ(kill(keeper, SIGKILL), 0);
    // The daemon notices, starts another and records everything again.
    json st;
    for (int i = 0; i < 500; i++) {
        st = d.status();
        if (!st.is_null() && st["keeper"]["pid"].is_number() &&
            st["keeper"]["pid"].get<pid_t>() != keeper && st["keeper"]["protecting"].get<bool>())
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(st["keeper"]["pid"].get<pid_t>(), keeper) << st.dump();
    // Its clients noticed nothing.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(s.get(), name), 0);
    // And the new keeper does its work.
    const pid_t killed = d.pid();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    ASSERT_FALSE(wait_recovered(d, killed).is_null());
    ctl.reset(lu_open());
    Fd in(lu_retrieve_session(ctl.get(), "svc"));
    ASSERT_TRUE(in.ok());
    Fd r(lu_retrieve_fd(in.get(), 5));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(diff(contents(r.get()), bytes), "equal");
}

TEST(CrashRecovery, AfterAnUpgradeAndAReboot) {
    DaemonProcess d;
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "svc"));
    const Bytes bytes = random_bytes(3000, 12);
    Fd m = make_memfd("svc", bytes);
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    ASSERT_EQ(d.upgrade(), 0);
    // After the upgrade the next instance's own record is what a crash uses.
    Fd s2(lu_create_session(ctl.get(), "after-upgrade"));
    ASSERT_TRUE(s2.ok());
    pid_t killed = d.pid();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    json st = wait_recovered(d, killed);
    EXPECT_EQ(names_of(st), (std::set<std::string>{"svc", "after-upgrade"})) << st.dump();
    // Then a reboot: its incoming sessions are what a crash brings back.
    ctl.reset(lu_open());
    Fd kept(lu_create_session(ctl.get(), "kept"));
    ASSERT_TRUE(kept.ok());
    Fd m2 = make_memfd("kept", bytes);
    ASSERT_EQ(lu_preserve_fd(kept.get(), m2.get(), 2), 0);
    kept.reset();  // released: gone
    kept.reset(lu_create_session(ctl.get(), "kept"));
    ASSERT_EQ(lu_preserve_fd(kept.get(), m2.get(), 3), 0);
    ctl.reset();
    ASSERT_EQ(d.reboot(), 0);
    killed = d.pid();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    st = wait_recovered(d, killed);
    // The reboot dropped the incoming sessions nobody retrieved ("svc",
    // "after-upgrade"): only what it carried comes back.
    EXPECT_EQ(names_of(st), (std::set<std::string>{"kept"})) << st.dump();
    ctl.reset(lu_open());
    Fd in(lu_retrieve_session(ctl.get(), "kept"));
    ASSERT_TRUE(in.ok());
    EXPECT_EQ(lu_retrieve_fd(in.get(), 2), -ENOENT);
    Fd r(lu_retrieve_fd(in.get(), 3));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(diff(contents(r.get()), bytes), "equal");
}

TEST(CrashRecovery, AStopDropsTheStateAndEndsTheKeeper) {
    DaemonProcess d;
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "svc"));
    ASSERT_TRUE(s.ok());
    const pid_t keeper = d.status()["keeper"]["pid"].get<pid_t>();
    ASSERT_EQ(kill(d.pid(), SIGTERM), 0);  // a stop; d.stop() checks its clean exit
    // The keeper exits too, by itself (we are the subreaper: it is ours to
    // reap once the daemon is gone).
    int st = 0;
    pid_t r = 0;
    // (ECHILD while it is still the daemon's child.)
    for (int i = 0; i < 500 && (r = waitpid(keeper, &st, WNOHANG)) != keeper; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(r, keeper) << "the keeper outlived a stop";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(lu_open(), -ENOENT);  // nobody serves: nothing was recovered
}

TEST(CrashRecovery, WithoutAKeeperACrashLosesEverything) {
    DaemonProcess d({"--no-keeper"});
    EXPECT_TRUE(d.status()["keeper"]["pid"].is_null());
    EXPECT_FALSE(d.status()["keeper"]["protecting"].get<bool>());
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "svc"));
    const pid_t killed = d.pid();
    ASSERT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_TRUE(d.status().is_null());
}

}  // namespace
}  // namespace lu::crash_test
