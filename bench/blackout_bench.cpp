// SPDX-License-Identifier: Apache-2.0
// Blackout of a live update (gate closed -> next instance serving, as the
// next instance measures it) for sessions x 10 files, beside the floor
// measured in the same run: passing that many fds with SCM_RIGHTS at 253 per
// message to another process, plus one spawn+exit of the daemon binary. Then
// 1 MiB versus 8 GiB of preserved memfd data.
//   build/release/bench/blackout_bench [max-sessions]
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include <unistd.h>

#include <cstring>
#include <iterator>
#include <string>

#include "bench_util.hpp"
#include "support/daemon_process.hpp"

using namespace lu::bench;
using lu::testing::DaemonProcess;

namespace {

constexpr int kRuns = 5;

constexpr const char* kPhases[] = {"freeze", "encode", "spawn", "transfer", "validate", "commit"};
constexpr size_t kNrPhases = std::size(kPhases);

// One live update; returns the blackout the daemon reports, in us, and its
// phases as the next instance recorded them into *phases (when given).
double reboot_blackout(DaemonProcess& d, std::vector<double>* phases = nullptr) {
    nlohmann::json r = d.admin(R"({"op":"reboot","timeout":120})");
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (r.is_null() || !r.value("ok", false)) {
        fprintf(stderr, "reboot failed: %s\n", r.dump().c_str());
        return -1;
    }
    if (phases) {
        nlohmann::json last = d.status()["updates"]["last"].back()["phases_us"];
        for (size_t i = 0; i < kNrPhases; i++) phases[i].push_back(last.value(kPhases[i], 0.0));
    }
    return r["blackout_us"].get<double>();
}

}  // namespace

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    size_t max_sessions = argc > 1 ? strtoul(argv[1], nullptr, 10) : 1000;
    printf("blackout_bench: median of %d live updates each, release daemon, 2 CPUs unpinned\n",
           kRuns);
    printf("%10s %7s %7s %12s %12s %8s\n", "sessions", "files", "fds", "blackout_us", "floor_us",
           "ratio");
    std::vector<std::string> by_phase;
    for (size_t sessions : {size_t(1), size_t(100), size_t(1000), size_t(10000)}) {
        if (sessions > max_sessions) break;
        std::vector<double> b, f, phases[kNrPhases];
        for (int run = 0; run < kRuns; run++) {
            DaemonProcess d;
            std::vector<int> keep = fill_sessions(sessions, 10);
            b.push_back(reboot_blackout(d, phases));
            f.push_back(handover_floor_us(sessions * 10, LIVEUPDATED_PATH));
            for (int fd : keep) close(fd);
        }
        printf("%10zu %7d %7zu %12.0f %12.0f %8.2f\n", sessions, 10, sessions * 10, pct(b, 50),
               pct(f, 50), pct(b, 50) / pct(f, 50));
        char line[160];
        int n = snprintf(line, sizeof line, "%10zu %7zu", sessions, sessions * 10);
        for (auto& p : phases) n += snprintf(line + n, sizeof line - size_t(n), " %9.0f", pct(p, 50));
        by_phase.push_back(line);
    }
    // Each phase's median on its own (they need not add up to the median blackout).
    printf("\nphases_us (medians) as the next instance recorded them\n%10s %7s", "sessions", "fds");
    for (const char* p : kPhases) printf(" %9s", p);
    printf("\n");
    for (auto& l : by_phase) printf("%s\n", l.c_str());
    printf("\n%12s %12s\n", "memfd", "blackout_us");
    double small = 0;
    for (size_t mib : {size_t(1), size_t(8192)}) {
        std::vector<double> b;
        DaemonProcess d;
        std::vector<int> keep = fill_sessions(1, 1, mib << 20);
        for (int run = 0; run < kRuns; run++) {
            b.push_back(reboot_blackout(d));
            // Move the session back out for the next run: retrieve, finish, re-preserve.
            int ctl = lu_open();
            int in = lu_retrieve_session(ctl, "s0");
            int m = lu_retrieve_fd(in, 0);
            lu_finish(in);
            close(in);
            for (int fd : keep) close(fd);
            keep = {lu_create_session(ctl, "s0")};
            lu_preserve_fd(keep[0], m, 0);
            close(m);
            close(ctl);
        }
        printf("%9zu MiB %12.0f", mib, pct(b, 50));
        if (mib == 1) small = pct(b, 50);
        else printf("   x%.2f of 1 MiB", pct(b, 50) / small);
        printf("\n");
        for (int fd : keep) close(fd);
    }
    return 0;
}
