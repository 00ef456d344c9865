// SPDX-License-Identifier: Apache-2.0
// A client that opens sessions until the daemon refuses (each session is a
// socket the daemon holds, so sessions are what a client can open without
// bound): it gets EMFILE at the documented reserve, everyone else keeps
// working, a live update still runs, and everything comes back when the
// hog lets go (docs/limits.md).
#include <thread>

#include "limits/limits_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

constexpr rlim_t kNofile = 512;

// One admin exchange on a raw connection: true if a status answer came.
bool status_answered(int admin) {
    RawReply r = raw_recv(admin);
    if (!r.got || r.hdr.err != 0 || r.fds.size() != 1) return false;
    json j = json::parse(read_all_at(r.fds[0].get()), nullptr, false);
    return j.is_object() && j.value("ok", false);
}

TEST(LimitsConnections, SessionsUntilEmfileWhileOthersKeepWorking) {
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    // A client that was there first: a session holding a file.
    Fd victim = create_session_now("victim");
    ASSERT_TRUE(victim);
    ASSERT_EQ(preserve_text(victim.get(), 1, "victim's state"), 0);
    settled_fd_count(pid, victim.get());
    const size_t base_rss = proc_status_kib(pid, "VmRSS");
    ASSERT_TRUE(reset_peak_rss(pid));

    // The hog: sessions until refused.
    Fd hog_ctl(lu_open());
    ASSERT_GE(hog_ctl.get(), 0) << strerror(-hog_ctl.get());
    std::vector<Fd> hog;
    int err = create_until_refused(hog_ctl.get(), "hog-", &hog, kNofile);
    ASSERT_EQ(err, -EMFILE) << "after " << hog.size() << " sessions: " << strerror(-err);
    // Refused at the reserve: sessions + connections + preserved files + 64
    // reach the limit. Here 5 besides the hog's sessions: 2 listeners, its
    // control connection, the victim's session and file (a few more if
    // the daemon ever keeps other fds in its count).
    EXPECT_LE(hog.size(), kNofile - kFdReserve - 4);
    EXPECT_GE(hog.size(), kNofile - kFdReserve - 8);
    // Refused for good, not by accident: again, and under another name.
    EXPECT_EQ(lu_create_session(hog_ctl.get(), "hog-again"), -EMFILE);
    EXPECT_EQ(lu_create_session(hog_ctl.get(), "victim"), -EMFILE);  // before EEXIST, as the kernel
    std::cerr << "[ limits   ] fd limit " << kNofile << ": " << hog.size()
              << " sessions, then EMFILE; daemon fds " << d.fd_count() << "\n";

    // The daemon's table is not full: the reserve is there for the others.
    EXPECT_LT(d.fd_count(), kNofile - kFdReserve / 2);
    // The victim's session works; its preserve is refused with the
    // budget's errno (the table is shared), never a malformed-request error.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(victim.get(), name), 0);
    EXPECT_STREQ(name, "victim");
    EXPECT_EQ(preserve_text(victim.get(), 2, "more"), -ENOSPC);
    EXPECT_EQ(preserve_text(victim.get(), 1, "dup"), -EEXIST);  // EEXIST before ENOSPC
    // The hog's own sessions work too.
    ASSERT_EQ(lu_get_name(hog.back().get(), name), 0);
    // The control connection is the hog's: others are told EBUSY.
    EXPECT_EQ(lu_open(), -EBUSY);
    // Status through liveupdatectl, and 16 admin clients at once (the
    // admin bound): the reserve holds them all.
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    EXPECT_NE(out.find("victim"), std::string::npos) << out;
    std::vector<Fd> admins;
    std::string req = R"({"op":"status"})";
    for (int i = 0; i < 16; i++) {
        admins.push_back(raw_connect(d.dir() + "/admin"));
        ASSERT_TRUE(admins.back());
    }
    for (auto& a : admins) ASSERT_EQ(raw_send(a.get(), req.data(), req.size()), 0);
    for (auto& a : admins) EXPECT_TRUE(status_answered(a.get())) << "an admin client got no status";
    admins.clear();
    json st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(count_sessions(st), hog.size() + 1);

    // The hog gives up the control connection but keeps its sessions:
    // another client opens it, and is refused a session with EMFILE.
    hog_ctl.reset();
    Fd other(lu_open());
    ASSERT_GE(other.get(), 0) << strerror(-other.get());
    EXPECT_EQ(lu_create_session(other.get(), "other"), -EMFILE);
    other.reset();

    // Memory: a bounded amount per session (docs/limits.md).
    const size_t hwm = proc_status_kib(pid, "VmHWM");
    const size_t per_session_bytes = (hwm - std::min(hwm, base_rss)) * 1024 / hog.size();
    std::cerr << "[ memory   ] VmRSS " << base_rss << " KiB before, VmHWM " << hwm << " KiB with "
              << hog.size() << " more sessions: " << per_session_bytes << " B per session\n";
    EXPECT_LE(hwm, rss_bound_kib(base_rss, hog.size(), 2)) << "KiB";

    // A live update at the limit: the hog's sessions move to the next
    // instance with everything else (its fds go stale there).
    ASSERT_EQ(d.reboot(), 0);
    EXPECT_EQ(lu_get_name(hog.front().get(), name), -ESTALE);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
    Fd back(lu_retrieve_session(ctl.get(), "victim"));
    ASSERT_TRUE(back) << strerror(-back.get());
    Fd m(lu_retrieve_fd(back.get(), 1));
    ASSERT_TRUE(m) << strerror(-m.get());
    EXPECT_EQ(read_all_at(m.get()), "victim's state");
    // In the next instance the hog's sessions hold no socket until
    // retrieved: there is room again.
    Fd fresh(lu_create_session(ctl.get(), "fresh"));
    EXPECT_TRUE(fresh) << strerror(-fresh.get());
    ctl.reset();
    EXPECT_TRUE(d.status().is_object());
}

// The hog lets go: every fd it made the daemon hold is given back, and the
// room it took can be taken again (twice: nothing is lost per round). The
// sessions it closes make room at once: its next CREATE may be read in the
// same turn of the daemon's loop as its last one, before their hangups are
// reported, and must not be refused for it (a close is synchronous for the
// closer).
TEST(LimitsConnections, BackToBaselineAfterTheHogLetsGo) {
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    Fd sync = create_session_now("sync");
    ASSERT_TRUE(sync);
    const size_t baseline = settled_fd_count(pid, sync.get());
    size_t first = 0;
    for (int round = 0; round < 2; round++) {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
        std::vector<Fd> hog;
        int err = create_until_refused(ctl.get(), "hog-", &hog, kNofile);
        ASSERT_EQ(err, -EMFILE) << strerror(-err);
        if (round == 0) first = hog.size();
        EXPECT_EQ(hog.size(), first) << "round " << round << ": room was lost";
        // Half of them go away, by close or by shutdown(SHUT_RDWR) (both
        // are the last close for the daemon): as many sessions fit again.
        for (size_t i = 0; i < hog.size(); i += 2) {
            if (i % 4) {
                hog[i].reset();
            } else {
                ASSERT_EQ(shutdown(hog[i].get(), SHUT_RDWR), 0);
            }
        }
        std::vector<Fd> again;
        EXPECT_EQ(create_until_refused(ctl.get(), "again-", &again), -EMFILE);
        EXPECT_EQ(again.size(), (first + 1) / 2) << "round " << round;
        hog.clear();
        again.clear();
        ctl.reset();
        EXPECT_EQ(settled_fd_count(pid, sync.get()), baseline) << "round " << round;
        json st = status_of(d);
        EXPECT_EQ(count_sessions(st), 1u);
        EXPECT_FALSE(st.value("control_connected", true));
    }
}

// The same, deterministically: the last copy of a session fd rides on a
// CREATE request (fds attached to control requests are dropped), so the
// session's hangup happens while that very request is being served. To be
// sure our own copy is closed before the daemon reads the request, it is
// sent while a live update holds every client request at the gate (the
// next instance hangs; the update rolls back after 1 s and the request
// runs). The session is gone before the reply: the room it held is there.
TEST(LimitsConnections, SessionClosedDuringTheRequestMakesRoom) {
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    Fd ctl = raw_control(d.dir());
    ASSERT_TRUE(ctl);
    std::vector<Fd> hog;
    int err = create_until_refused(ctl.get(), "hog-", &hog, kNofile);
    ASSERT_EQ(err, -EMFILE) << strerror(-err);

    int reboot_rc = 0;
    std::thread update([&] {
        reboot_rc =
            DaemonProcess::ctl({"reboot", "--inject-fault", "hang-before-ready", "--timeout", "1"});
    });
    json st;
    for (int i = 0; i < 2000; i++) {  // a liveness bound: it takes milliseconds
        st = d.status();
        if (st.is_object() && st.value("gate", "") == "closed") break;
        usleep(10000);
    }
    EXPECT_EQ(st.value("gate", ""), "closed") << "the update never closed the gate";
    auto a = create_arg("room");
    auto m = wire_request(LIVEUPDATE_IOCTL_CREATE_SESSION, &a, sizeof a);
    EXPECT_EQ(raw_send(ctl.get(), m.data(), m.size(), {hog.back().get()}), 0);
    hog.pop_back();  // the copy in the request is the last one
    update.join();
    EXPECT_NE(reboot_rc, 0) << "the update was meant to roll back";

    RawReply r = raw_recv(ctl.get());
    ASSERT_TRUE(r.got);
    EXPECT_EQ(r.hdr.err, 0) << strerror(r.hdr.err);
    EXPECT_EQ(r.fds.size(), 1u);
    // Full again: the next one is refused.
    EXPECT_EQ(lu_create_session(ctl.get(), "over"), -EMFILE);
}

}  // namespace
}  // namespace lu::testing
