// SPDX-License-Identifier: Apache-2.0
// `liveupdatectl upgrade` measured. First the blackout (gate closed -> next
// binary serving, as it measures it) for 1, 100 and 1,000 clients, each a
// session socket holding 10 memfds, beside the floor measured in the same
// run (bench_util.hpp: the same number of fds passed with SCM_RIGHTS, plus
// one spawn). Then what clients see: 4 threads doing GET_NAME round trips on
// their own sessions, their latency without upgrades and while 10 upgrades
// of a daemon holding 1,000 x 10 run back to back.
//   build/release/bench/upgrade_bench
#include <atomic>
#include <thread>

#include "bench_util.hpp"
#include "support/daemon_process.hpp"

using namespace lu::bench;
using lu::testing::DaemonProcess;

namespace {

constexpr int kRuns = 5;

// One upgrade; the blackout the daemon reports, in us (-1: it failed).
double upgrade_blackout(DaemonProcess& d) {
    pid_t old = d.pid();
    char* reply = nullptr;
    int rc = lu_admin_upgrade(nullptr, 120, 0, &reply);
    nlohmann::json r = nlohmann::json::parse(reply ? reply : "null", nullptr, false);
    lu_free(reply);
    d.track_update(old, rc == 0);
    if (rc || !r.is_object()) {
        fprintf(stderr, "upgrade failed: %s\n", r.dump().c_str());
        return -1;
    }
    return r["blackout_us"].get<double>();
}

// GET_NAME round trips on `sessions` until stop, each latency in us.
struct Load {
    std::atomic<bool> stop{false};
    std::vector<std::vector<double>> lat;
    std::vector<std::thread> threads;
    explicit Load(const std::vector<int>& sessions) : lat(sessions.size()) {
        for (size_t i = 0; i < sessions.size(); i++)
            threads.emplace_back([this, i, fd = sessions[i]] {
                char name[LIVEUPDATE_SESSION_NAME_LENGTH];
                while (!stop) {
                    uint64_t t0 = now_ns();
                    if (lu_get_name(fd, name) != 0) fprintf(stderr, "GET_NAME failed\n");
                    lat[i].push_back(double(now_ns() - t0) / 1000.0);
                }
            });
    }
    std::vector<double> finish() {
        stop = true;
        for (auto& t : threads) t.join();
        std::vector<double> all;
        for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
        return all;
    }
};

}  // namespace

int main() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    printf("upgrade_bench: median of %d upgrades each, release daemon, 2 CPUs unpinned\n", kRuns);
    printf("%10s %7s %7s %12s %12s %8s\n", "clients", "files", "fds", "blackout_us", "floor_us", "ratio");
    for (size_t clients : {size_t(1), size_t(100), size_t(1000)}) {
        std::vector<double> b, f;
        DaemonProcess d;
        std::vector<int> keep = fill_sessions(clients, 10);
        const size_t nfds = clients * 11;  // files and session sockets
        for (int run = 0; run < kRuns; run++) {
            b.push_back(upgrade_blackout(d));
            f.push_back(handover_floor_us(nfds, LIVEUPDATED_PATH));
        }
        // Where the last one's time went, phase by phase (status's record).
        nlohmann::json last = d.status()["updates"]["last"].back();
        std::string phases;
        for (auto& [k, v] : last["phases_us"].items()) phases += " " + k + " " + v.dump();
        for (int fd : keep) close(fd);
        printf("%10zu %7d %7zu %12.0f %12.0f %8.2f   last:%s\n", clients, 10, nfds, pct(b, 50),
               pct(f, 50), pct(b, 50) / pct(f, 50), phases.c_str());
    }

    DaemonProcess d;
    std::vector<int> keep = fill_sessions(1000, 10);
    std::vector<int> mine(keep.begin(), keep.begin() + 4);
    Load quiet(mine);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    std::vector<double> base = quiet.finish();
    Load busy(mine);
    std::vector<double> blackouts;
    for (int u = 0; u < 10; u++) blackouts.push_back(upgrade_blackout(d));
    std::vector<double> during = busy.finish();
    printf("\nclient round trips (GET_NAME, 4 threads, 1,000 x 10 held), us:\n");
    printf("%22s %10s %10s %10s %10s\n", "", "requests", "p50", "p99", "max");
    printf("%22s %10zu %10.1f %10.1f %10.0f\n", "no upgrade", base.size(), pct(base, 50),
           pct(base, 99), pct(base, 100));
    printf("%22s %10zu %10.1f %10.1f %10.0f\n", "10 upgrades running", during.size(),
           pct(during, 50), pct(during, 99), pct(during, 100));
    printf("blackouts of those upgrades, us: p50 %.0f, max %.0f\n", pct(blackouts, 50),
           pct(blackouts, 100));
    for (int fd : keep) close(fd);
    return 0;
}
