// SPDX-License-Identifier: Apache-2.0
// kvcache across live updates, with liveupdated as a real process: the old
// version prepares (SIGUSR2), `liveupdatectl reboot` moves its session to the
// next daemon instance, the new version takes everything and serves on the
// same sockets.
#include <atomic>
#include <functional>
#include <map>
#include <random>

#include "kvcache_support.hpp"
#include "support/daemon_process.hpp"

namespace {

using kvtest::Client;
using kvtest::KvProcess;
using lu::testing::DaemonProcess;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// SIGUSR2 to the old version, the daemon's live update, then the next
// version started (the operator's sequence). Returns the next version.
std::unique_ptr<KvProcess> upgrade(DaemonProcess& dp, KvProcess& old, const std::vector<std::string>& args,
                                   int port, const std::function<void()>& during = {}) {
    old.signal(SIGUSR2);
    EXPECT_TRUE(old.wait_for("ready for live update")) << old.log();
    if (during) during();
    EXPECT_EQ(dp.reboot(), 0);
    EXPECT_TRUE(old.wait_exit()) << "the old version did not exit after the live update";
    if (old.status() != -1) {
        EXPECT_EQ(old.status(), 0);
    }
    auto next = std::make_unique<KvProcess>(args, dp.dir());
    EXPECT_EQ(next->wait_serving(), port) << next->log();
    EXPECT_NE(next->log().find("warm start"), std::string::npos) << next->log();
    return next;
}

struct Expected {
    std::string value;
    uint32_t flags;
    bool alive;
};

TEST(KvLiveUpdate, ItemsConnectionsAndBacklogSurvive) {
    DaemonProcess dp;
    auto old = std::make_unique<KvProcess>(
        std::vector<std::string>{"--port", "0", "--memory", "64", "--version-tag", "v1"}, dp.dir());
    const int port = old->wait_serving();
    ASSERT_NE(port, 0) << old->log();

    Client c(port);  // the persistent connection: the same socket all along
    ASSERT_TRUE(c.ok());
    std::map<std::string, Expected> items;
    const size_t sizes[] = {1, 2, 7, 100, 1000, 4095, 4096, 65536, 300000, 524288, 1000000, 1 << 20};
    const long now = static_cast<long>(time(nullptr));
    const std::vector<std::pair<std::string, long>> expiries = {
        {"never", 0}, {"rel", 3600}, {"abs", now + 7200}, {"gone", -1}, {"past", 1000000000}};
    std::mt19937 rng(7);
    int n = 0;
    for (size_t size : sizes) {
        for (const auto& [kind, exptime] : expiries) {
            const std::string key = "item-" + std::to_string(size) + "-" + kind;
            std::string value(size, '\0');
            for (char& ch : value) ch = static_cast<char>(rng());
            const uint32_t flags = static_cast<uint32_t>(n++ * 7919);
            ASSERT_EQ(c.set(key, value, static_cast<int>(exptime), flags), "STORED") << key;
            items[key] = {value, flags, exptime >= 0 && exptime != 1000000000};
        }
    }
    ASSERT_EQ(c.call("set counter 0 0 2\r\n41\r\nincr counter 1\r\n", "STORED\r\n42\r\n"), "STORED\r\n42\r\n");
    uint64_t cas_before = 0;
    ASSERT_TRUE(c.gets("item-100-never", &cas_before));
    const std::string items_before = c.stat("curr_items");

    // A second connection stops in the middle of a request: the bytes the
    // old version read are carried to the new one.
    Client mid(port);
    ASSERT_EQ(mid.call("version\r\n", "VERSION 1.6.0-kvcache+v1\r\n"), "VERSION 1.6.0-kvcache+v1\r\n");
    ASSERT_TRUE(mid.send("set partial 5 0 10\r\nhello"));

    std::unique_ptr<Client> queued;  // connects while the old version is stopped
    Clock::time_point asked;
    auto next = upgrade(dp, *old, {"--port", "0", "--memory", "64", "--version-tag", "v2"}, port, [&] {
        queued = std::make_unique<Client>(port);
        asked = Clock::now();
        queued->send("get counter\r\n");
    });
    ASSERT_TRUE(queued->ok());
    EXPECT_EQ(queued->read_n(23), "VALUE counter 0 2\r\n42\r\n");
    EXPECT_EQ(queued->line(), "END");
    const double queued_ms = ms_between(asked, Clock::now());

    // Every item identical, the expired ones expired, on the same socket.
    for (const auto& [key, want] : items) {
        bool bad = false;
        uint32_t flags = 0;
        const auto got = c.get(key, &bad, &flags);
        ASSERT_FALSE(bad) << key;
        if (!want.alive) {
            EXPECT_FALSE(got.has_value()) << key << " should have expired";
            continue;
        }
        ASSERT_TRUE(got.has_value()) << key;
        EXPECT_TRUE(*got == want.value) << key;
        EXPECT_EQ(flags, want.flags) << key;
    }
    uint64_t cas_after = 0;
    ASSERT_TRUE(c.gets("item-100-never", &cas_after));
    EXPECT_EQ(cas_after, cas_before);  // the same item, not a copy
    EXPECT_EQ(c.call("incr counter 1\r\n", "43\r\n"), "43\r\n");
    EXPECT_EQ(c.call("version\r\n", "VERSION 1.6.0-kvcache+v2\r\n"), "VERSION 1.6.0-kvcache+v2\r\n");
    EXPECT_EQ(c.stat("live_updates"), "1");
    EXPECT_EQ(c.stat("version"), "1.6.0-kvcache+v2");
    EXPECT_EQ(c.stat("pid"), std::to_string(next->pid()));

    // The request cut in the middle completes.
    ASSERT_TRUE(mid.send("world\r\nget partial\r\n"));
    EXPECT_EQ(mid.read_n(8 + 20 + 12 + 5), "STORED\r\nVALUE partial 5 10\r\nhelloworld\r\nEND\r\n");

    // New connections, after the switch.
    Client fresh(port);
    EXPECT_EQ(fresh.call("get counter\r\n", "VALUE counter 0 2\r\n43\r\nEND\r\n"),
              "VALUE counter 0 2\r\n43\r\nEND\r\n");
    std::cout << "[ figures  ] items before/after: " << items_before << "/" << c.stat("curr_items")
              << "; a request queued during the switch waited " << queued_ms << " ms\n";
}

// 32 clients, each on its own persistent connection and key space, verify
// every value they read against what they last wrote, across the switch.
TEST(KvLiveUpdate, ThirtyTwoClientsAcrossTheSwitch) {
    DaemonProcess dp;
    auto old = std::make_unique<KvProcess>(std::vector<std::string>{"--port", "0", "--version-tag", "v1"}, dp.dir());
    const int port = old->wait_serving();
    ASSERT_NE(port, 0) << old->log();

    constexpr int kClients = 32;
    struct Worker {
        std::atomic<uint64_t> ops{0}, failures{0}, wrong{0};
        std::atomic<double> max_ms{0};
        std::string first_error;
    };
    std::vector<Worker> workers(kClients);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int id = 0; id < kClients; id++) {
        threads.emplace_back([&, id] {
            Worker& w = workers[id];
            Client c(port);
            if (!c.ok()) {
                w.failures++;
                return;
            }
            std::mt19937 rng(id);
            std::map<int, std::string> model;
            uint64_t counter = 0;
            bool counter_set = false;
            for (uint64_t op = 0; op < 1000000 && !stop && c.ok(); op++) {
                const int j = static_cast<int>(rng() % 20);
                const std::string key = "c" + std::to_string(id) + ":k" + std::to_string(j);
                const auto t0 = Clock::now();
                const unsigned what = rng() % 10;
                if (what < 4) {
                    const std::string v = "w" + std::to_string(id) + "-" + std::to_string(op) + "-" +
                                          std::string(rng() % 1500, static_cast<char>('a' + j));
                    const std::string r = c.set(key, v);
                    if (r != "STORED") {
                        if (w.failures++ == 0) w.first_error = "set: " + r;
                    } else {
                        model[j] = v;
                    }
                } else if (what < 9) {
                    bool bad = false;
                    const auto got = c.get(key, &bad);
                    const auto it = model.find(j);
                    if (bad || !c.ok()) {
                        if (w.failures++ == 0) w.first_error = "get: malformed reply or connection lost";
                    } else if (it == model.end() ? got.has_value() : got != it->second) {
                        if (w.wrong++ == 0) w.first_error = "wrong value for " + key;
                    }
                } else {
                    const std::string ck = "c" + std::to_string(id) + ":n";
                    const std::string want = counter_set ? std::to_string(counter + 1) : "NOT_FOUND";
                    c.send("incr " + ck + " 1\r\n");
                    const std::string got = c.line();
                    if (got != want) {
                        if (w.wrong++ == 0) w.first_error = "incr: " + got + " want " + want;
                    }
                    if (!counter_set) {
                        if (c.set(ck, "0") != "STORED") w.failures++;
                        counter_set = true;
                        counter = 0;
                    } else {
                        counter++;
                    }
                }
                const double ms = ms_between(t0, Clock::now());
                if (ms > w.max_ms) w.max_ms = ms;
                w.ops++;
            }
            if (!c.ok() && !stop) {
                if (w.failures++ == 0) w.first_error = "connection lost";
            }
        });
    }
    auto all_at_least = [&](const std::vector<uint64_t>& base, uint64_t more) {
        for (int i = 0; i < kClients; i++)
            if (workers[i].ops < base[i] + more) return false;
        return true;
    };
    auto wait_progress = [&](const std::vector<uint64_t>& base, uint64_t more) {
        for (int i = 0; i < 6000 && !all_at_least(base, more); i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return all_at_least(base, more);
    };
    const std::vector<uint64_t> zero(kClients, 0);
    EXPECT_TRUE(wait_progress(zero, 300));

    const auto t0 = Clock::now();
    auto next = upgrade(dp, *old, {"--port", "0", "--version-tag", "v2"}, port);
    const double switch_ms = ms_between(t0, Clock::now());
    std::vector<uint64_t> after(kClients);
    for (int i = 0; i < kClients; i++) after[i] = workers[i].ops;
    EXPECT_TRUE(wait_progress(after, 300));
    stop = true;
    for (auto& t : threads) t.join();

    uint64_t ops = 0, failures = 0, wrong = 0;
    double max_ms = 0;
    for (int i = 0; i < kClients; i++) {
        ops += workers[i].ops;
        failures += workers[i].failures;
        wrong += workers[i].wrong;
        max_ms = std::max(max_ms, workers[i].max_ms.load());
        EXPECT_EQ(workers[i].failures + workers[i].wrong, 0u) << "client " << i << ": " << workers[i].first_error;
    }
    EXPECT_EQ(failures, 0u);
    EXPECT_EQ(wrong, 0u);
    Client check(port);
    EXPECT_EQ(check.stat("curr_connections"), std::to_string(1));  // the 32 closed, this one
    std::cout << "[ figures  ] " << ops << " requests by " << kClients
              << " clients, 0 failed; SIGUSR2 to new version serving: " << switch_ms
              << " ms; longest single request (waited through the switch): " << max_ms << " ms\n";
}

// A client that pipelines requests for 40 MiB of replies (more than the
// socket buffers hold) and reads nothing
// until after the switch: the replies the old version could not send and the
// requests it had not served yet go to the new version, in order.
TEST(KvLiveUpdate, UnsentRepliesAndUnservedRequestsAreCarried) {
    DaemonProcess dp;
    auto old = std::make_unique<KvProcess>(std::vector<std::string>{"--port", "0"}, dp.dir());
    const int port = old->wait_serving();
    ASSERT_NE(port, 0) << old->log();
    Client c(port), probe(port);
    const std::string big(1 << 20, 'B');
    ASSERT_EQ(c.set("big", big), "STORED");
    std::string req;
    for (int i = 0; i < 40; i++) req += "get big\r\n";
    req += "set after 0 0 2\r\nok\r\nget after\r\n";
    ASSERT_TRUE(c.send(req));
    // Wait until the old version has started on them (it stops serving this
    // connection once a reply is backed up).
    for (int i = 0; i < 1000 && probe.stat("cmd_get") == "0"; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto next = upgrade(dp, *old, {"--port", "0"}, port);
    const std::string log = old->log();
    unsigned long long req_bytes = 0, reply_bytes = 0;
    const size_t at = log.find("carrying ");
    ASSERT_NE(at, std::string::npos) << log;
    ASSERT_EQ(sscanf(log.c_str() + at, "carrying %llu request bytes and %llu reply bytes", &req_bytes, &reply_bytes), 2);
    EXPECT_GT(req_bytes, 0u);    // requests read, not yet served
    EXPECT_GT(reply_bytes, 0u);  // replies made, not yet sent
    for (int i = 0; i < 40; i++) {
        ASSERT_EQ(c.line(), "VALUE big 0 1048576") << i;
        ASSERT_TRUE(c.read_n(big.size() + 2) == big + "\r\n") << i;
        ASSERT_EQ(c.line(), "END") << i;
    }
    EXPECT_EQ(c.line(), "STORED");
    EXPECT_EQ(c.read_n(26), "VALUE after 0 2\r\nok\r\nEND\r\n");
    std::cout << "[ figures  ] carried " << req_bytes << " request bytes and " << reply_bytes << " reply bytes\n";
}

// A live update of the daemon alone, while kvcache serves: kvcache re-attaches
// (a new session in the new daemon instance), and a later kvcache update
// still carries everything.
TEST(KvLiveUpdate, DaemonUpdateWhileServingThenKvcacheUpdate) {
    DaemonProcess dp;
    auto kv = std::make_unique<KvProcess>(std::vector<std::string>{"--port", "0"}, dp.dir());
    const int port = kv->wait_serving();
    ASSERT_NE(port, 0) << kv->log();
    Client c(port);
    ASSERT_EQ(c.set("k", "before"), "STORED");
    ASSERT_EQ(dp.reboot(), 0);
    EXPECT_TRUE(kv->wait_for("re-attached")) << kv->log();
    EXPECT_EQ(c.get("k"), "before");
    ASSERT_EQ(c.set("k2", "between"), "STORED");
    auto next = upgrade(dp, *kv, {"--port", "0", "--version-tag", "v3"}, port);
    EXPECT_EQ(c.get("k"), "before");
    EXPECT_EQ(c.get("k2"), "between");
    EXPECT_EQ(c.call("version\r\n", "VERSION 1.6.0-kvcache+v3\r\n"), "VERSION 1.6.0-kvcache+v3\r\n");
}

// An arena that was not handed over cleanly (its kvcache died while a daemon
// update carried its session) is never used: the next kvcache starts empty,
// on the same listener.
TEST(KvLiveUpdate, UncleanArenaIsDiscarded) {
    DaemonProcess dp;
    auto kv = std::make_unique<KvProcess>(std::vector<std::string>{"--port", "0"}, dp.dir());
    const int port = kv->wait_serving();
    ASSERT_NE(port, 0) << kv->log();
    {
        Client c(port);
        ASSERT_EQ(c.set("k", "v"), "STORED");
    }
    kv->signal(SIGSTOP);  // cannot re-attach: its session stays the new daemon's incoming one
    ASSERT_EQ(dp.reboot(), 0);
    kv->kill_now();
    KvProcess next({"--port", "0"}, dp.dir());
    EXPECT_EQ(next.wait_serving(), port) << next.log();
    EXPECT_NE(next.log().find("discarding the arena handed over: the previous version did not hand it over cleanly"),
              std::string::npos)
        << next.log();
    Client c(port);
    EXPECT_EQ(c.get("k"), std::nullopt);
    EXPECT_EQ(c.set("k", "new"), "STORED");
}

// Without liveupdated, SIGUSR2 changes nothing: the cache keeps serving.
TEST(KvLiveUpdate, NoDaemonMeansNoHandover) {
    KvProcess kv({"--port", "0"});
    const int port = kv.wait_serving();
    ASSERT_NE(port, 0) << kv.log();
    EXPECT_NE(kv.log().find("WITHOUT persistence"), std::string::npos);
    Client c(port);
    ASSERT_EQ(c.set("k", "v"), "STORED");
    kv.signal(SIGUSR2);
    EXPECT_TRUE(kv.wait_for("cannot hand over"));
    EXPECT_EQ(c.get("k"), "v");
}

}  // namespace
