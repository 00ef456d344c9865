// SPDX-License-Identifier: Apache-2.0
// The daemon's memory at its limits: RSS per session and per preserved
// file with the fd table full (4096 fds), the peak of a status request
// listing everything, and the next instance after a live update of it all;
// the keeper's per preserved file (at most 1 KiB each).
// Prints the figures docs/limits.md quotes; asserts its bound (release
// build; see rss_bound_kib for ASan):
//   RSS <= base + 2 KiB per session + 2 KiB per preserved file + 4 MiB
// and a status request or the next instance at most 2 KiB more per item.
#include "limits/limits_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

constexpr rlim_t kNofile = 4096;

size_t rss(pid_t pid) {
    return proc_status_kib(pid, "VmRSS");
}

std::string per_item(size_t before_kib, size_t after_kib, size_t n) {
    size_t grown = after_kib > before_kib ? after_kib - before_kib : 0;
    return std::to_string(grown) + " KiB, " + std::to_string(n ? grown * 1024 / n : 0) + " B each";
}

TEST(LimitsMemory, PerSessionAtTheLimit) {
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    Fd sync = create_session_now("sync");
    ASSERT_TRUE(sync);
    settled_fd_count(pid, sync.get());
    const size_t base = rss(pid);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::vector<Fd> sessions;
    ASSERT_EQ(create_until_refused(ctl.get(), "session-", &sessions, kNofile), -EMFILE);
    const size_t full = rss(pid);
    ASSERT_TRUE(reset_peak_rss(pid));
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0);
    const size_t status_peak = proc_status_kib(pid, "VmHWM");
    std::cerr << "[ memory   ] fd limit " << kNofile << ": base VmRSS " << base << " KiB; "
              << sessions.size() << " sessions: +" << per_item(base, full, sessions.size())
              << "; status (" << out.size() / 1024 << " KiB of JSON) peak +"
              << per_item(full, status_peak, sessions.size()) << "\n";
    EXPECT_LE(full, rss_bound_kib(base, sessions.size(), 2)) << "KiB";
    EXPECT_LE(status_peak, rss_bound_kib(base, sessions.size(), 4)) << "KiB: status";
}

TEST(LimitsMemory, PerFileAtTheBudgetAndAcrossALiveUpdate) {
    DaemonProcess d;
    ASSERT_TRUE(restart_with_nofile(d, kNofile));
    const pid_t pid = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    // Files spread over sessions of 64, as an application would.
    std::vector<Fd> sessions;
    size_t files = 0;
    int err = 0;
    sessions.emplace_back(lu_create_session(ctl.get(), "s-0"));
    ASSERT_TRUE(sessions.back());
    settled_fd_count(pid, sessions.back().get());
    const size_t base = rss(pid);
    const pid_t keeper = status_of(d)["keeper"]["pid"].get<pid_t>();
    const size_t keeper_base = rss(keeper);
    while (!err) {
        if (files % 64 == 63) {
            sessions.emplace_back(
                lu_create_session(ctl.get(), ("s-" + std::to_string(sessions.size())).c_str()));
            ASSERT_TRUE(sessions.back()) << strerror(-sessions.back().get());
        }
        err = preserve_text(sessions.back().get(), files, "file " + std::to_string(files));
        if (!err) files++;
    }
    ASSERT_EQ(err, -ENOSPC);
    EXPECT_EQ(files, file_budget(kNofile));
    const size_t full = rss(pid);
    // The keeper holds a copy of each file and its journal record (the
    // records reach it within a millisecond: status answers after that).
    ASSERT_TRUE(status_of(d)["keeper"]["protecting"].get<bool>());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const size_t keeper_full = rss(keeper);
    std::cerr << "[ memory   ] keeper: base VmRSS " << keeper_base << " KiB; " << files
              << " files: +" << per_item(keeper_base, keeper_full, files) << "\n";
    EXPECT_LE(keeper_full, rss_bound_kib(keeper_base, files, 1)) << "KiB: the keeper";
    ASSERT_TRUE(reset_peak_rss(pid));
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0);
    const size_t status_peak = proc_status_kib(pid, "VmHWM");
    // Everything moves to the next instance, which holds it as incoming.
    ctl.reset();
    ASSERT_EQ(d.reboot(), 0);
    const pid_t next = d.pid();
    const size_t next_peak = proc_status_kib(next, "VmHWM");
    std::cerr << "[ memory   ] fd limit " << kNofile << ": base VmRSS " << base << " KiB; " << files
              << " files in " << sessions.size() << " sessions: +" << per_item(base, full, files)
              << "; status (" << out.size() / 1024 << " KiB of JSON) peak +"
              << per_item(full, status_peak, files) << "; next instance VmHWM " << next_peak
              << " KiB, +" << per_item(base, next_peak, files) << "\n";
    const size_t items = files + sessions.size();
    EXPECT_LE(full, rss_bound_kib(base, items, 2)) << "KiB";
    EXPECT_LE(status_peak, rss_bound_kib(base, items, 4)) << "KiB: status";
    EXPECT_LE(next_peak, rss_bound_kib(base, items, 4)) << "KiB: the next instance";
    // And it is all there.
    json st = status_of(d);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["preserved_files"], files);
}

}  // namespace
}  // namespace lu::testing
