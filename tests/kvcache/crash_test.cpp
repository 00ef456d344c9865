// SPDX-License-Identifier: Apache-2.0
// kvcache when liveupdated is killed (SIGKILL) and its keeper starts the
// next instance (docs/crash-safety.md, docs/handoff.md "When the daemon
// crashes"): kvcache tells the crash (EOWNERDEAD) from a hand-over (ESTALE),
// keeps serving from its arena, takes its session back and preserves it
// again. Under load: no request fails, no value is wrong, no key is lost,
// the counters count every request once; and the update still completes,
// whether the crash came while kvcache served, while its next version waited
// for the session (either reaching the new instance first), between the next
// version's retrieve and its FINISH, right after its commit, or while
// kvcache was prepared for a reboot of the daemon.
#include <sys/wait.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "kvcache_support.hpp"
#include "liveupdate/client.h"
#include "support/daemon_process.hpp"

namespace {

using kvtest::Client;
using kvtest::KvProcess;
using lu::testing::DaemonProcess;
using json = nlohmann::json;

// Clients that set and read back their own keys until stopped, counting
// failed requests (an error reply, a closed or refused connection) and
// wrong values, and remembering each key's last stored value. Thread 0
// opens a new connection every 20 requests (the listener is exercised);
// the others keep one connection for the whole test.
struct Load {
    static constexpr int kThreads = 4, kKeys = 300;
    std::atomic<bool> stop{false};
    std::atomic<long> requests{0}, sets{0}, gets{0}, failed{0}, wrong{0}, connections{0};
    std::vector<std::thread> threads;
    std::vector<std::map<std::string, std::string>> last{kThreads};

    explicit Load(int port) {
        for (int t = 0; t < kThreads; t++)
            threads.emplace_back([this, port, t] {
                std::unique_ptr<Client> c;
                for (long i = 0; !stop; i++) {
                    if (!c || (t == 0 && i % 20 == 0)) {
                        c = std::make_unique<Client>(port);
                        connections++;
                        if (!c->ok()) {
                            failed++;
                            c.reset();
                            continue;
                        }
                    }
                    const std::string key = "crash-" + std::to_string(t) + "-" + std::to_string(i % kKeys);
                    const std::string value = "v" + std::to_string(i) + "-" + std::string(i % 61, 'x');
                    sets++;
                    const std::string r = c->set(key, value);
                    if (r != "STORED") {
                        failed++;
                        c.reset();
                        continue;
                    }
                    last[t][key] = value;
                    bool bad = false;
                    gets++;
                    auto got = c->get(key, &bad);
                    if (bad || !c->ok()) {
                        failed++;
                        c.reset();
                        continue;
                    }
                    if (!got || *got != value) wrong++;
                    requests += 2;
                }
            });
    }
    void wait_requests(long n) {
        for (int i = 0; i < 6000 && requests < n; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    void finish() {
        stop = true;
        for (auto& t : threads) t.join();
        threads.clear();
    }
    ~Load() {
        if (!threads.empty()) finish();
    }
    // Every key's last value, read back on a new connection: the lost ones.
    long lost(int port) {
        Client c(port);
        long n = 0;
        for (const auto& m : last)
            for (const auto& [k, v] : m) {
                bool bad = false;
                auto got = c.get(k, &bad);
                if (bad || !got || *got != v) n++;
            }
        return n;
    }
};

std::vector<std::string> args(const std::string& tag, std::vector<std::string> more = {}) {
    std::vector<std::string> a{"--port", "0", "--memory", "16", "--version-tag", tag};
    a.insert(a.end(), more.begin(), more.end());
    return a;
}

// Kills the serving instance and waits for the keeper's next one. Its status.
json kill_daemon(DaemonProcess& dp) {
    const pid_t killed = dp.pid();
    EXPECT_GT(killed, 0);
    EXPECT_EQ(kill(killed, SIGKILL), 0);
    waitpid(killed, nullptr, 0);  // ours if it is the first instance; else the keeper reaps it
    for (int i = 0; i < 3000; i++) {
        json s = dp.status();
        if (!s.is_null() && s["pid"].get<pid_t>() != killed) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no instance serves after pid " << killed << " was killed";
    return {};
}

// The session `name` in a status, or null.
json session_of(const json& status, const std::string& name) {
    if (status.is_object())
        for (const json& s : status["sessions"])
            if (s["name"] == name) return s;
    return {};
}

// Waits until kvcache pid holds an outgoing session "kvcache" (protected
// again) in the instance that serves; that session.
json wait_protected(DaemonProcess& dp, pid_t pid, size_t min_files = 2) {
    json s;
    for (int i = 0; i < 3000; i++) {
        s = session_of(dp.status(), "kvcache");
        if (s.is_object() && s["direction"] == "outgoing" && s.contains("pid") && s["pid"] == pid &&
            s["files"].size() >= min_files)
            return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "kvcache pid " << pid << " is not protected again: " << s.dump();
    return {};
}

struct Seeded {
    uint64_t cmd_set = 0, cmd_get = 0;
};

// 200 items with known values, then the counters before the load.
Seeded seed(Client& c) {
    for (int i = 0; i < 200; i++)
        EXPECT_EQ(c.set("item-" + std::to_string(i), std::string(100 + i, 'a' + i % 26)), "STORED");
    return {std::stoull(c.stat("cmd_set")), std::stoull(c.stat("cmd_get"))};
}

// The counters count every request of the load exactly once (none lost with
// an arena, none served twice), the 200 items are there, nothing failed.
void expect_all_there(Client& c, const Seeded& s, Load& load, int port, const char* what) {
    EXPECT_EQ(std::stoull(c.stat("cmd_set")), s.cmd_set + static_cast<uint64_t>(load.sets)) << what;
    EXPECT_EQ(std::stoull(c.stat("cmd_get")), s.cmd_get + static_cast<uint64_t>(load.gets)) << what;
    for (int i = 0; i < 200; i++) {
        bool bad = false;
        auto got = c.get("item-" + std::to_string(i), &bad);
        ASSERT_FALSE(bad);
        ASSERT_TRUE(got) << i;
        EXPECT_EQ(*got, std::string(100 + i, 'a' + i % 26)) << i;
    }
    const long lost = load.lost(port);
    std::printf("%s: requests %ld (on %ld connections), failed %ld, wrong %ld, lost %ld\n", what,
                load.requests.load(), load.connections.load(), load.failed.load(), load.wrong.load(), lost);
    EXPECT_EQ(load.failed, 0);
    EXPECT_EQ(load.wrong, 0);
    EXPECT_EQ(lost, 0);
}

// v1 serving its port under load, with 200 known items, protected by a
// daemon with a keeper: where every case starts.
class KvCrash : public ::testing::Test {
protected:
    void SetUp() override {
        port = v1.wait_serving();
        ASSERT_NE(port, 0) << v1.log();
        wait_protected(dp, v1.pid());
        client = std::make_unique<Client>(port);
        ASSERT_TRUE(client->ok());
        seeded = seed(*client);
        load = std::make_unique<Load>(port);
        load->wait_requests(2000);
    }

    // The end of every case: the load goes on against v2 for 2,000 more
    // requests and stops; v2 answers, is protected, and has everything.
    // `updated`: the version check counts one live update.
    void expect_v2_has_everything(const KvProcess& v2, const char* what, bool updated = true) {
        load->wait_requests(load->requests + 2000);
        load->finish();
        Client& c = *client;
        EXPECT_EQ(c.call("version\r\n", "VERSION 1.6.0-kvcache+v2\r\n"), "VERSION 1.6.0-kvcache+v2\r\n");
        if (updated) {
            EXPECT_EQ(c.stat("live_updates"), "1");
        }
        wait_protected(dp, v2.pid());
        expect_all_there(c, seeded, *load, port, what);
    }

    DaemonProcess dp;
    KvProcess v1{args("v1"), dp.dir()};
    int port = 0;
    std::unique_ptr<Client> client;
    Seeded seeded;
    std::unique_ptr<Load> load;
};

TEST_F(KvCrash, DaemonKilledWhileServingLosesNothingAndAHandOffStillWorks) {
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());
    EXPECT_EQ(after["crashes_recovered"].get<uint64_t>(), 1u);
    const long at_kill = load->requests;
    // kvcache serves on, and is protected again: its session outgoing, its.
    ASSERT_TRUE(v1.wait_for("re-attached")) << v1.log();
    EXPECT_NE(v1.log().find("liveupdated died"), std::string::npos) << v1.log();
    const json s = wait_protected(dp, v1.pid());
    EXPECT_EQ(s["files"].size(), 2u) << s.dump();  // the arena and the listener
    load->wait_requests(at_kill + 2000);
    EXPECT_FALSE(v1.exited()) << v1.log();
    EXPECT_EQ(client->stat("live_updates"), "0");  // a crash is not a live update

    // A hand-off to v2 still works, from the session taken back.
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid())}), dp.dir());
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    EXPECT_NE(v1.log().find("handed off to pid"), std::string::npos) << v1.log();
    expect_v2_has_everything(v2, "killed while serving, then v1 -> v2");
}

// v2 is started in advance and waits; v1 has offered its session (it is
// frozen, v1 waits for the outcome) when the daemon dies. v1 takes the
// session back and serves on; v2 waits on; v1 offers it again and the
// update completes. (If v2 happens to retrieve the session from the new
// instance first, v1's RETRIEVE_SESSION gets ENOENT and it exits as after a
// commit: the update completes the same way.)
TEST_F(KvCrash, DaemonKilledWhileV1WaitsForItsUpdateLosesNothingAndTheUpdateCompletes) {
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid()), "--test-pause-offered", "3000"}),
                 dp.dir());
    ASSERT_TRUE(v2.wait_for("offered: pausing")) << v2.log();
    // v1 handed off and waits for the outcome; its session is being handed off.
    const json before = session_of(dp.status(), "kvcache");
    EXPECT_TRUE(before.contains("handoff")) << before.dump();
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());

    ASSERT_TRUE(v1.wait_for("liveupdated died during the hand-off")) << v1.log();
    ASSERT_TRUE(v2.wait_serving()) << v2.log() << v1.log();
    EXPECT_EQ(v2.wait_serving(), port);
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    const std::string l1 = v1.log();
    const bool v1_took_it_back = l1.find("the session is ours again") != std::string::npos;
    std::printf("v1 %s\n", v1_took_it_back ? "took its session back, served on and offered it again"
                                           : "found its session gone: v2 had taken it from the new instance");
    if (v1_took_it_back) {
        EXPECT_NE(l1.find("offering the session to pid"), std::string::npos) << l1;
    }
    EXPECT_NE(l1.find("handed off to pid"), std::string::npos) << l1;
    expect_v2_has_everything(v2, "killed while v1 waits for v2");
}

// v2 has retrieved everything and not FINISHed yet (mid-retrieve) when the
// daemon dies: nothing committed. v2's FINISH answers EOWNERDEAD; it finds
// out that it did not commit, drops what it adopted, without serving, and
// waits again; v1 takes the session back, serves on, offers it again, and
// the update completes.
TEST_F(KvCrash, DaemonKilledBetweenV2sRetrieveAndFinishNothingCommittedTheUpdateCompletes) {
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid()), "--test-pause-adopted", "1500"}),
                 dp.dir());
    ASSERT_TRUE(v2.wait_for("adopted: pausing")) << v2.log();
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());
    ASSERT_TRUE(v2.wait_for("went away at our FINISH")) << v2.log();
    ASSERT_TRUE(v2.wait_for("it did not")) << v2.log();
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    // v2 pauses 1.5 s: v1 normally takes the session back first (else v2
    // retrieves it from the new instance, and v1 finds it gone).
    const std::string l1 = v1.log();
    if (l1.find("the session is ours again") != std::string::npos) {
        EXPECT_NE(l1.find("offering the session to pid"), std::string::npos) << l1;
    } else {
        std::printf("v2 retrieved the session from the new instance before v1\n");
    }
    EXPECT_NE(l1.find("handed off to pid"), std::string::npos) << l1;
    expect_v2_has_everything(v2, "killed between v2's retrieve and FINISH");
}

// The same moment, but v2 reaches the new instance first (v1 is stopped
// meanwhile): v2 retrieves the session as v1 had offered it (the arena
// marked handed over), commits and serves; v1, resumed, finds its name gone
// (ENOENT) and exits as after a commit.
TEST_F(KvCrash, DaemonKilledWhileV1WaitsAndV2RetrievesFirstV1ExitsAsAfterACommit) {
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid()), "--test-pause-offered", "500"}),
                 dp.dir());
    ASSERT_TRUE(v2.wait_for("offered: pausing")) << v2.log();
    v1.signal(SIGSTOP);
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    EXPECT_NE(v2.log().find("warm start"), std::string::npos) << v2.log();
    v1.signal(SIGCONT);
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    EXPECT_NE(v1.log().find("the next version has it"), std::string::npos) << v1.log();
    expect_v2_has_everything(v2, "killed while v1 waits, v2 first");
}

// The daemon dies right after v2's FINISH (the commit), before v2 created
// its session again: v1 exits (committed, or ENOENT after the restart), v2
// serves and re-attaches.
TEST_F(KvCrash, DaemonKilledRightAfterTheCommitV2ServesAndIsProtected) {
    KvProcess v2(args("v2", {"--takeover", std::to_string(v1.pid()), "--test-pause-finished", "1500"}),
                 dp.dir());
    ASSERT_TRUE(v2.wait_for("finished: pausing")) << v2.log();
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());
    EXPECT_TRUE(session_of(after, "kvcache").is_null()) << after.dump();  // committed: v2's
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    EXPECT_NE(v1.log().find("handed off to pid"), std::string::npos) << v1.log();
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    ASSERT_TRUE(v2.wait_for("re-attached")) << v2.log();
    wait_protected(dp, v2.pid());
    expect_v2_has_everything(v2, "killed right after v2's commit");
}

// Prepared for a reboot of the daemon (SIGUSR2: the connections preserved,
// the arena marked, kvcache waiting) when the daemon dies instead: kvcache
// does not exit, takes its session back and preserves it again as prepared;
// the operator's reboot then hands everything to the next version.
TEST_F(KvCrash, DaemonKilledWhilePreparedForARebootTheRebootStillHandsEverythingOver) {
    v1.signal(SIGUSR2);
    ASSERT_TRUE(v1.wait_for("ready for live update")) << v1.log();
    const json prepared = wait_protected(dp, v1.pid(), 3);  // + connections and their state
    const size_t files = prepared["files"].size();
    const json after = kill_daemon(dp);
    ASSERT_FALSE(after.is_null());
    ASSERT_TRUE(v1.wait_for("ready for live update again")) << v1.log();
    EXPECT_FALSE(v1.exited()) << v1.log();
    // Protected again, every file of the preparation under its token.
    const json again = wait_protected(dp, v1.pid(), files);
    EXPECT_EQ(again["files"].size(), files) << again.dump();

    EXPECT_EQ(dp.reboot(), 0);
    ASSERT_TRUE(v1.wait_exit()) << v1.log();
    EXPECT_NE(v1.log().find("handed over to the next version: exiting"), std::string::npos) << v1.log();
    KvProcess v2(args("v2"), dp.dir());
    EXPECT_EQ(v2.wait_serving(), port) << v2.log();
    EXPECT_NE(v2.log().find("warm start"), std::string::npos) << v2.log();
    expect_v2_has_everything(v2, "killed while prepared for a reboot", false);
}

}  // namespace
