// SPDX-License-Identifier: Apache-2.0
// A client that preserves until refused: ENOSPC at the preserved-file
// budget (derived from RLIMIT_NOFILE), and ENOSPC too when sessions have
// taken the fds first; other sessions keep working, a release gives the
// budget back, and a live update at the limit keeps every file
// (docs/limits.md).
#include "limits/limits_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

std::string content_of(const std::string& session, uint64_t token) {
    return session + "/" + std::to_string(token);
}

// Preserves memfds round-robin into `sessions` (named names[i]) until
// refused; returns the errno (negative) and counts in *n.
int preserve_until_refused(const std::vector<Fd>& sessions, const std::vector<std::string>& names,
                           size_t max, size_t* n) {
    for (*n = 0; *n < max; ++*n) {
        size_t i = *n % sessions.size();
        uint64_t token = 100 + *n / sessions.size();
        int err = preserve_text(sessions[i].get(), token, content_of(names[i], token));
        if (err) return err;
    }
    return 0;
}

// The budget: ENOSPC exactly at file_budget(limit), for the victim too;
// a release frees its share; every file crosses a live update.
TEST(LimitsPreserve, UntilEnospcThenLiveUpdate) {
    constexpr rlim_t kNofile = 1024;
    const size_t budget = file_budget(kNofile);
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    Fd victim = create_session_now("victim");
    ASSERT_TRUE(victim);
    ASSERT_EQ(preserve_text(victim.get(), 1, content_of("victim", 1)), 0);
    const size_t base_rss = proc_status_kib(pid, "VmRSS");
    ASSERT_TRUE(reset_peak_rss(pid));

    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> hog;
    std::vector<std::string> names;
    for (int i = 0; i < 4; i++) {
        names.push_back("hog-" + std::to_string(i));
        hog.emplace_back(lu_create_session(ctl.get(), names.back().c_str()));
        ASSERT_TRUE(hog.back());
    }
    size_t n = 0;
    int err = preserve_until_refused(hog, names, budget + 10, &n);
    ASSERT_EQ(err, -ENOSPC) << "after " << n << " files: " << strerror(-err);
    EXPECT_EQ(n + 1, budget) << "the budget for " << kNofile << " fds";
    std::cerr << "[ limits   ] fd limit " << kNofile << ": " << n + 1
              << " preserved files, then ENOSPC; daemon fds " << d.fd_count() << "\n";
    // Again, in every session (the budget is global), in the kernel's
    // order: EEXIST for a used token before ENOSPC.
    for (auto& s : hog) EXPECT_EQ(preserve_text(s.get(), 99999, "x"), -ENOSPC);
    EXPECT_EQ(preserve_text(victim.get(), 2, "x"), -ENOSPC);
    EXPECT_EQ(preserve_text(victim.get(), 1, "x"), -EEXIST);

    // Others keep working: the victim's session, new sessions (the fd
    // reserve is not touched by files), status.
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    ASSERT_EQ(lu_get_name(victim.get(), name), 0);
    Fd empty(lu_create_session(ctl.get(), "empty"));
    EXPECT_TRUE(empty) << strerror(-empty.get());
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    json st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["preserved_files"], budget);

    // Memory: a bounded amount per preserved file (docs/limits.md).
    const size_t hwm = proc_status_kib(pid, "VmHWM");
    std::cerr << "[ memory   ] VmRSS " << base_rss << " KiB before, VmHWM " << hwm << " KiB with "
              << n << " more files: " << (hwm - std::min(hwm, base_rss)) * 1024 / n
              << " B per file\n";
    EXPECT_LE(hwm, rss_bound_kib(base_rss, n, 2)) << "KiB";

    // A release gives its files' share back, to anyone.
    const size_t freed = (n + 3) / 4;  // hog-0 got the first of every round
    hog[0].reset();
    names[0].clear();
    for (size_t i = 0; i < freed; i++)
        ASSERT_EQ(preserve_text(victim.get(), 2 + i, content_of("victim", 2 + i)), 0) << i;
    EXPECT_EQ(preserve_text(victim.get(), 2 + freed, "x"), -ENOSPC);

    // A live update at the limit: every file arrives, each content intact.
    ctl.reset();
    empty.reset();
    ASSERT_EQ(d.reboot(), 0);
    st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["epoch"], 2);
    EXPECT_EQ(st["preserved_files"], budget);
    EXPECT_EQ(count_sessions(st), 4u);  // the victim and hog-1..3
    ctl.reset(lu_open());
    ASSERT_GE(ctl.get(), 0);
    // Spot checks: the victim's first and last files, and files of a hog
    // session (retrieving all of them at once is the next test's matter).
    Fd v(lu_retrieve_session(ctl.get(), "victim"));
    ASSERT_TRUE(v) << strerror(-v.get());
    for (uint64_t t : {uint64_t{1}, uint64_t{2}, uint64_t{1 + freed}}) {
        Fd m(lu_retrieve_fd(v.get(), t));
        ASSERT_TRUE(m) << "token " << t << ": " << strerror(-m.get());
        EXPECT_EQ(read_all_at(m.get()), content_of("victim", t));
    }
    Fd h(lu_retrieve_session(ctl.get(), "hog-3"));
    ASSERT_TRUE(h) << strerror(-h.get());
    for (uint64_t t : {uint64_t{100}, uint64_t{150}, uint64_t{99 + n / 4}}) {
        Fd m(lu_retrieve_fd(h.get(), t));
        ASSERT_TRUE(m) << "token " << t << ": " << strerror(-m.get());
        EXPECT_EQ(read_all_at(m.get()), content_of("hog-3", t));
    }
    // The budget is the same in the next instance: full until finished.
    Fd fresh(lu_create_session(ctl.get(), "fresh"));
    ASSERT_TRUE(fresh);
    EXPECT_EQ(preserve_text(fresh.get(), 1, "x"), -ENOSPC);
    ASSERT_EQ(lu_finish(h.get()), 0);
    EXPECT_EQ(preserve_text(fresh.get(), 1, "x"), 0);
}

// Sessions take the fds first (each is a socket the daemon holds), then a
// client preserves: it must get the budget's ENOSPC while the reserve
// stays free for everyone else, not fill the daemon's table to the last
// fd (the fd of the next request would be dropped on receipt: EPROTO; and
// every new connection, status included, refused: EMFILE).
TEST(LimitsPreserve, EnospcWhenSessionsTookTheFds) {
    constexpr rlim_t kNofile = 512;
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> sessions;
    int err = create_until_refused(ctl.get(), "s-", &sessions, kNofile);
    ASSERT_EQ(err, -EMFILE) << strerror(-err);
    std::vector<std::string> names;
    for (size_t i = 0; i < sessions.size(); i++) names.push_back("s-" + std::to_string(i));
    // Every preserve is refused, however many are tried: the reserve
    // (64 fds) is more than the admin bound and a live update need.
    size_t n = 0;
    err = preserve_until_refused(sessions, names, kFdReserve * 2, &n);
    EXPECT_EQ(err, -ENOSPC) << "after " << n << " files: " << strerror(-err);
    EXPECT_EQ(n, 0u);
    for (int i = 0; i < 2 * static_cast<int>(kFdReserve); i++)
        ASSERT_EQ(preserve_text(sessions[i % 7].get(), 5000 + i, "x"), -ENOSPC) << i;
    // Everyone else is served.
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0) << "status refused at the limit";
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(sessions.back().get(), name), 0);
    EXPECT_LT(d.fd_count(), kNofile - kFdReserve / 2);

    // Sessions closed: files fit again, up to the reserve once more.
    const size_t closed = sessions.size() / 2;
    sessions.resize(sessions.size() - closed);
    names.resize(sessions.size());
    err = preserve_until_refused(sessions, names, closed + 10, &n);
    EXPECT_EQ(err, -ENOSPC) << strerror(-err);
    EXPECT_EQ(n, closed) << "each closed session makes room for one file";
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    json st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["preserved_files"], n);

    // A live update at this point: every file arrives.
    ctl.reset();
    ASSERT_EQ(d.reboot(), 0) << "live update refused at the fd limit";
    EXPECT_NE(d.pid(), pid);
    ctl.reset(lu_open());
    ASSERT_GE(ctl.get(), 0);
    for (size_t i : {size_t{0}, (n - 1) % sessions.size()}) {
        Fd s(lu_retrieve_session(ctl.get(), names[i].c_str()));
        ASSERT_TRUE(s) << names[i] << ": " << strerror(-s.get());
        Fd m(lu_retrieve_fd(s.get(), 100));
        ASSERT_TRUE(m) << strerror(-m.get());
        EXPECT_EQ(read_all_at(m.get()), content_of(names[i], 100));
    }
}

// In the next instance every file preserved within the budget can be
// retrieved, all at once, and status keeps answering: a retrieved file
// takes the place of the fd it was handed over in, so the daemon holds one
// fd per file in every state. (Holding both until FINISH, it ran out of fds
// past half the budget: retrieves failed for good with EMFILE, and every
// new connection was refused.)
TEST(LimitsPreserve, EveryFileRetrievableAtTheBudget) {
    constexpr rlim_t kNofile = 600;
    const size_t budget = file_budget(kNofile);
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        std::vector<Fd> s;
        std::vector<std::string> names{"a", "b"};
        for (auto& nm : names) s.emplace_back(lu_create_session(ctl.get(), nm.c_str()));
        size_t n = 0;
        ASSERT_EQ(preserve_until_refused(s, names, budget + 1, &n), -ENOSPC);
        ASSERT_EQ(n, budget);
        ctl.reset();
        ASSERT_EQ(d.reboot(), 0);
    }
    const pid_t pid = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd a(lu_retrieve_session(ctl.get(), "a")), b(lu_retrieve_session(ctl.get(), "b"));
    ASSERT_TRUE(a);
    ASSERT_TRUE(b);
    const size_t fds_before = settled_fd_count(pid, a.get());
    for (auto [s, nm] : {std::pair{&a, "a"}, std::pair{&b, "b"}}) {
        for (uint64_t t = 100; t < 100 + budget / 2; t++) {
            Fd m(lu_retrieve_fd(s->get(), t));
            ASSERT_TRUE(m) << nm << " token " << t << ": " << strerror(-m.get());
            EXPECT_EQ(read_all_at(m.get()), content_of(nm, t));
        }
    }
    EXPECT_EQ(settled_fd_count(pid, a.get()), fds_before) << "retrieving took fds";
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    // Retrieving again gives the same files; FINISH gives the budget back.
    Fd again(lu_retrieve_fd(a.get(), 100));
    ASSERT_TRUE(again) << strerror(-again.get());
    EXPECT_EQ(read_all_at(again.get()), content_of("a", 100));
    EXPECT_EQ(lu_finish(a.get()), 0);
    EXPECT_EQ(lu_finish(b.get()), 0);
    json st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["preserved_files"], 0);
    EXPECT_EQ(settled_fd_count(pid, a.get()), fds_before - budget);
}

}  // namespace
}  // namespace lu::testing
