// SPDX-License-Identifier: Apache-2.0
// Helpers for the limits suite: liveupdated as a real process
// (support/daemon_process.hpp) driven to its documented limits
// (docs/limits.md), with the raw-socket helpers of the daemon suite.
#pragma once

#include <sys/resource.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "daemon/daemon_test_util.hpp"

namespace lu::testing {

// The daemon reads RLIMIT_NOFILE when it starts (its preserved-file budget)
// and on every request that takes an fd (its fd reserve). A test gives it a small table
// so the limits are reached in a few hundred requests: the running instance
// is lowered with prlimit(2), then a live update starts the next one, which
// inherits the limit and derives its budget from it. Returns false (with a
// test failure) if that did not happen.
inline bool restart_with_nofile(DaemonProcess& d, rlim_t n) {
    rlimit lim{n, n};
    pid_t old = d.pid();
    if (old <= 0 || prlimit(old, RLIMIT_NOFILE, &lim, nullptr) != 0) {
        ADD_FAILURE() << "prlimit: " << strerror(errno);
        return false;
    }
    int rc = d.reboot();
    pid_t now = d.pid();
    if (rc != 0 || now <= 0 || now == old) {
        ADD_FAILURE() << "the live update to a daemon with " << n << " fds failed: rc " << rc;
        return false;
    }
    rlimit got{};
    if (prlimit(now, RLIMIT_NOFILE, nullptr, &got) != 0 || got.rlim_cur != n) {
        ADD_FAILURE() << "the next instance does not run with the lowered limit";
        return false;
    }
    return true;
}

// The daemon's preserved-file budget for a fd limit of n (main.cpp's
// fd_budget(), docs/limits.md): n less a reserve of 1024, or half of a
// limit of 2048 or less.
inline size_t file_budget(size_t n) {
    return n > 2048 ? n - 1024 : n / 2;
}

// The fd reserve (server.cpp's fds_exhausted(), docs/limits.md): a new
// session or file needs sessions + connections + preserved files + 64 <
// the fd limit.
inline constexpr size_t kFdReserve = 64;

// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or 0.
inline size_t proc_status_kib(pid_t pid, const std::string& field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) != 0) continue;
        std::istringstream s(line.substr(field.size() + 1));
        size_t kib = 0;
        s >> kib;
        return kib;
    }
    return 0;
}

// Resets the peak (VmHWM) to the current RSS, so a later VmHWM is the peak
// of what happened in between (proc(5): clear_refs value 5).
inline bool reset_peak_rss(pid_t pid) {
    std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
    out << "5";
    out.flush();
    return out.good();
}

// Built with AddressSanitizer? Its allocator keeps freed blocks in a
// quarantine and pads every block, so the daemon's RSS there measures ASan
// as much as the daemon: memory bounds get an allowance for it.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// The memory bound of docs/limits.md: the daemon's RSS stays within its
// base plus a fixed amount per item it holds (session, preserved file,
// connection) plus 4 MiB. Under ASan freed blocks wait in a quarantine (256
// MiB by default) and every block is padded and shadowed: the bound there
// allows for that, so it only catches growth without bound; the figures
// are the release build's.
inline size_t rss_bound_kib(size_t base_kib, size_t items, size_t kib_per_item) {
    if (kSanitized) return base_kib + items * kib_per_item * 16 + (256 + 16) * 1024;
    return base_kib + items * kib_per_item + 4096;
}

// Status through the admin socket, allowing for admin connections of the
// previous step that the loop has not reaped yet (16 at once: EBUSY).
inline nlohmann::json status_of(const DaemonProcess& d) {
    nlohmann::json st = d.status();
    for (int i = 0; i < 200 && !st.is_object(); i++) {
        usleep(5000);
        st = d.status();
    }
    return st;
}

// Creates sessions named prefix0, prefix1... on the control connection
// until one is refused; returns that errno (negative), the sessions in *out.
inline int create_until_refused(int ctl, const std::string& prefix, std::vector<Fd>* out,
                                size_t max = 1 << 20) {
    while (out->size() < max) {
        int s = lu_create_session(ctl, (prefix + std::to_string(out->size())).c_str());
        if (s < 0) return s;
        out->emplace_back(s);
    }
    return 0;
}

// A memfd with content `text`, preserved into `session` under `token`; our
// copy is closed, so the daemon holds the only reference. 0 or -errno.
inline int preserve_text(int session, uint64_t token, const std::string& text) {
    Fd m = make_memfd(text);
    if (!m) return -EBADF;
    return lu_preserve_fd(session, m.get(), token);
}

}  // namespace lu::testing
