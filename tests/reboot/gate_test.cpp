// SPDX-License-Identifier: Apache-2.0
// The reboot gate between real processes (docs/kernel-semantics.md#reboot-gate):
// requests made during an update wait; after a rollback they run, in order;
// after a commit they fail with ESTALE, and nothing that succeeded is missing.
#include <atomic>
#include <memory>

#include "reboot/reboot_util.hpp"

namespace lu::reboot_test {
namespace {

bool in_progress(const json& st) {
    return str(st["update"], "state") == "in-progress";
}

// Joins a thread however the test leaves the scope (an ASSERT included).
struct Joined {
    std::thread t;
    ~Joined() {
        if (t.joinable()) t.join();
    }
};

// 4a. While a next instance hangs before ready, requests on a control fd,
// on a session fd, and a session's close all wait; none may complete while
// the update is in progress. After the timeout's rollback they run in
// order: the close of s2 (made before the CREATE of a new "s2" was sent)
// releases it first, so the CREATE succeeds; the PRESERVE_FD succeeds. A
// plain update then carries exactly that.
TEST(RebootGate, RequestsDuringUpdateWaitAndRunAfterRollback) {
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s1(lu_create_session(ctl.get(), "s1"));
    Fd s2(lu_create_session(ctl.get(), "s2"));
    ASSERT_GE(s1.get(), 0);
    ASSERT_GE(s2.get(), 0);
    Bytes b1 = random_bytes(5000, 41), b2 = random_bytes(6000, 42);
    Fd m1 = make_memfd("m1", b1), m2 = make_memfd("m2", b2), m9 = make_memfd("m9", {9});
    ASSERT_EQ(lu_preserve_fd(s1.get(), m1.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(s2.get(), m9.get(), 9), 0);

    Deadline guard("requests queued behind a hanging update", {pid0});
    std::atomic<bool> reboot_done{false}, create_done{false}, preserve_done{false};
    int reboot_rc = 0, create_rc = 0, preserve_rc = 0;
    Joined r{std::thread([&] {
        reboot_rc =
            DaemonProcess::ctl({"reboot", "--inject-fault", "hang-before-ready", "--timeout", "2"});
        reboot_done = true;
    })};
    // The next instance is started before the gate closes: the requests
    // below are made once it is closed.
    json st = wait_status(d, [](const json& s) { return in_progress(s) && str(s, "gate") == "closed"; });
    ASSERT_TRUE(in_progress(st)) << "the update never started: " << st.dump();
    EXPECT_EQ(str(st, "gate"), "closed");

    s2.reset();  // its release must wait too, and run before the CREATE below
    Joined c{std::thread([&] {
        create_rc = lu_create_session(ctl.get(), "s2");
        create_done = true;
    })};
    Joined p{std::thread([&] {
        preserve_rc = lu_preserve_fd(s1.get(), m2.get(), 2);
        preserve_done = true;
    })};

    // Soundness: a request seen done *before* a status that still says
    // "in progress" completed during the update.
    bool done_during_update = false;
    while (!reboot_done) {
        bool done = create_done || preserve_done;
        json now = d.status();
        if (done && in_progress(now)) done_during_update = true;
        if (!now.is_null() && in_progress(now)) {
            EXPECT_EQ(tokens_of(find_session(now, "s2")), std::set<uint64_t>{9})
                << "s2 released while the gate is closed";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    r.t.join();
    c.t.join();
    p.t.join();
    EXPECT_FALSE(done_during_update) << "a request completed while the update was in progress";
    EXPECT_NE(reboot_rc, 0);
    Fd new_s2(create_rc);
    EXPECT_GE(create_rc, 0) << "the queued CREATE_SESSION failed: " << strerror(-create_rc);
    EXPECT_EQ(preserve_rc, 0) << "the queued PRESERVE_FD failed: " << strerror(-preserve_rc);

    st = d.status();
    EXPECT_EQ(num(st, "pid"), pid0);
    EXPECT_EQ(num(st, "epoch"), 0);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_FALSE(str(st["update"], "last_error").empty()) << st.dump();
    EXPECT_EQ(tokens_of(find_session(st, "s1", "outgoing")), (std::set<uint64_t>{1, 2}));
    json js2 = find_session(st, "s2", "outgoing");
    EXPECT_FALSE(js2.is_null()) << st.dump();
    EXPECT_TRUE(tokens_of(js2).empty()) << "the old s2 was not released: " << st.dump();
    // Its memfd is free again: the close unpreserved it.
    EXPECT_EQ(lu_preserve_fd(s1.get(), m9.get(), 9), 0);

    ASSERT_EQ(d.reboot(), 0);
    guard.watch(d.pid());
    st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1);
    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0);
    Fd in(lu_retrieve_session(ctl1.get(), "s1"));
    ASSERT_GE(in.get(), 0);
    Fd r1(lu_retrieve_fd(in.get(), 1)), r2(lu_retrieve_fd(in.get(), 2)),
        r9(lu_retrieve_fd(in.get(), 9));
    ASSERT_GE(r1.get(), 0);
    ASSERT_GE(r2.get(), 0);
    ASSERT_GE(r9.get(), 0);
    EXPECT_TRUE(contents(r1.get()) == b1);
    EXPECT_TRUE(contents(r2.get()) == b2);
    EXPECT_TRUE(contents(r9.get()) == Bytes{9});
    EXPECT_TRUE(tokens_of(find_session(st, "s2", "incoming")).empty()) << st.dump();
    Fd in2(lu_retrieve_session(ctl1.get(), "s2"));
    EXPECT_GE(in2.get(), 0) << strerror(-in2.get());
}

// 4b. One client preserves memfds on an old session fd without pause while a
// plain update commits: each request succeeds (before the gate) or fails
// with ESTALE (after the commit), and once ESTALE, always ESTALE. The next
// epoch holds exactly the files whose PRESERVE_FD returned 0.
TEST(RebootGate, RequestsOnOldSessionDuringCommitSucceedOrEstale) {
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "stream"));
    ASSERT_GE(s.get(), 0);

    auto bytes_of = [](uint64_t token) { return random_bytes(64 + token % 512, 1000 + token); };
    std::atomic<int> ok_count{0};
    std::map<uint64_t, Bytes> ok;
    std::vector<std::string> errors;
    int estale = 0, after_estale_ok = 0;
    std::thread t([&] {
        for (uint64_t token = 1;; token++) {
            int rc;
            if (token > 1500) {  // enough files: keep asking without adding more
                char name[LIVEUPDATE_SESSION_NAME_LENGTH];
                rc = lu_get_name(s.get(), name);
            } else {
                Bytes b = bytes_of(token);
                Fd m = make_memfd("stream", b);
                rc = lu_preserve_fd(s.get(), m.get(), token);
                if (rc == 0) ok[token] = std::move(b);
            }
            if (rc == 0) {
                ok_count++;
                continue;
            }
            if (rc != -ESTALE) {
                errors.push_back("token " + std::to_string(token) + ": " + strerror(-rc));
                if (errors.size() > 20) return;
                continue;
            }
            // After the commit: always ESTALE, on every kind of request.
            estale++;
            char name[LIVEUPDATE_SESSION_NAME_LENGTH];
            Fd m = make_memfd("late", {1, 2, 3});
            for (int i = 0; i < 3; i++) {
                int a = lu_preserve_fd(s.get(), m.get(), 1u << 30);
                int b = lu_get_name(s.get(), name);
                if (a == 0 || b == 0) after_estale_ok++;
                if (a != -ESTALE || b != -ESTALE)
                    errors.push_back("after ESTALE: " + std::to_string(a) + ", " +
                                     std::to_string(b));
            }
            return;
        }
    });
    for (int i = 0; i < 4000 && ok_count < 50; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int rc;
    {
        Deadline guard("a client streaming requests across a commit", {pid0});
        rc = d.reboot();
        guard.watch(d.pid());
        t.join();
    }
    ASSERT_EQ(rc, 0);
    EXPECT_EQ(estale, 1);
    EXPECT_EQ(after_estale_ok, 0);
    EXPECT_TRUE(errors.empty()) << list(errors);
    EXPECT_GE(ok.size(), 50u);

    json st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1);
    std::set<uint64_t> want;
    for (auto& [k, _] : ok) want.insert(k);
    std::set<uint64_t> have = tokens_of(find_session(st, "stream", "incoming"));
    EXPECT_EQ(have, want)
        << "the next epoch must hold exactly the files whose PRESERVE_FD returned 0";
    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0);
    Fd in(lu_retrieve_session(ctl1.get(), "stream"));
    ASSERT_GE(in.get(), 0);
    for (auto& [k, b] : ok) {
        Fd r(lu_retrieve_fd(in.get(), k));
        ASSERT_GE(r.get(), 0) << "token " << k << ": " << strerror(-r.get());
        ASSERT_TRUE(contents(r.get()) == b) << "token " << k;
    }
}

// 5. The gate between real processes
// (docs/kernel-semantics.md#bug-mutation-during-reboot): 8 clients, each with
// its own sessions, preserve memfds of distinct contents and now and then
// close a session and create another (through one shared control fd), while
// a live update runs. After it:
//  - every session not closed is in the next epoch with exactly the memfds
//    whose PRESERVE_FD returned 0, same bytes;
//  - no session whose close happened before the update was requested, or
//    before a later request of the same client succeeded, appears;
//  - after the first ESTALE a client only ever gets ESTALE.
struct SessRec {
    std::string name;
    Fd fd;
    bool closed = false;
    bool closed_before_gate = false;  // proven: a later request succeeded
    uint64_t closed_ns = 0;
    std::map<uint64_t, Bytes> preserved;
};

struct Worker {
    int id = 0;
    std::vector<std::unique_ptr<SessRec>> sessions;
    std::vector<std::string> errors;
    int successes = 0;
    bool saw_estale = false;
};

TEST(RebootGate, ConcurrentClientsDuringReboot) {
    constexpr int kWorkers = 8;
    constexpr int kMaxPreservesPerWorker = 250;
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    std::mutex ctl_mu;
    std::atomic<int> total_ok{0};
    std::atomic<int> workers_going{0};

    std::vector<Worker> workers(kWorkers);
    auto run = [&](Worker& w) {
        std::vector<SessRec*> unproven;  // closed, not yet proven before the gate
        SessRec* cur = nullptr;
        int n_sessions = 0, n_preserved = 0;
        bool counted = false;
        auto success = [&] {
            for (SessRec* r : unproven) r->closed_before_gate = true;
            unproven.clear();
            w.successes++;
            total_ok++;
            if (!counted && w.successes >= 5) {
                counted = true;
                workers_going++;
            }
        };
        auto fail = [&](const std::string& what, int rc) {
            w.errors.push_back(what + ": " + strerror(-rc));
        };
        auto create = [&]() -> int {
            auto rec = std::make_unique<SessRec>();
            rec->name = "w" + std::to_string(w.id) + "-s" + std::to_string(n_sessions++);
            int fd;
            {
                std::lock_guard<std::mutex> l(ctl_mu);
                fd = lu_create_session(ctl.get(), rec->name.c_str());
            }
            if (fd < 0) return fd;
            rec->fd = Fd(fd);
            cur = rec.get();
            w.sessions.push_back(std::move(rec));
            success();
            return 0;
        };
        int rc = create();
        for (uint64_t it = 0; rc == 0; it++) {
            // Close this session and open another: every (7 + id) requests,
            // so the workers do not fall into step behind the control fd's
            // mutex; workers 3 and 7 never close (some sessions are surely
            // open at the gate).
            if (w.id % 4 != 3 && it % (7 + static_cast<uint64_t>(w.id)) == 6) {
                cur->fd.reset();
                cur->closed = true;
                cur->closed_ns = now_ns();
                unproven.push_back(cur);
                cur = nullptr;
                rc = create();
                if (rc && rc != -ESTALE) fail("CREATE_SESSION", rc);
                continue;
            }
            if (it % 5 == 4 || n_preserved >= kMaxPreservesPerWorker) {
                int err = 0;
                std::string name = session_name(cur->fd.get(), &err);
                rc = err;
                if (rc == 0 && name != cur->name) w.errors.push_back("GET_NAME gave " + name);
                if (rc == 0)
                    success();
                else if (rc != -ESTALE)
                    fail("GET_NAME", rc);
                continue;
            }
            uint64_t token = it;
            Bytes b = random_bytes(32 + (it * 7 + static_cast<uint64_t>(w.id)) % 600,
                                   static_cast<uint64_t>(w.id) << 32 | it);
            Fd m = make_memfd("worker", b);
            rc = lu_preserve_fd(cur->fd.get(), m.get(), token);
            if (rc == 0) {
                n_preserved++;
                cur->preserved[token] = std::move(b);
                success();
            } else if (rc != -ESTALE) {
                fail("PRESERVE_FD", rc);
            }
        }
        if (rc != -ESTALE) return;
        w.saw_estale = true;
        // From now on, every old fd answers ESTALE.
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        if (cur) {
            int a = lu_get_name(cur->fd.get(), name);
            if (a != -ESTALE) fail("GET_NAME after ESTALE", a);
            Fd m = make_memfd("late", {1});
            a = lu_preserve_fd(cur->fd.get(), m.get(), 1ull << 40);
            if (a != -ESTALE) fail("PRESERVE_FD after ESTALE", a);
        }
        std::lock_guard<std::mutex> l(ctl_mu);
        int a = lu_create_session(ctl.get(), ("late-" + std::to_string(w.id)).c_str());
        if (a >= 0) close(a);
        if (a != -ESTALE) fail("CREATE_SESSION after ESTALE", a);
    };

    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; i++) {
        workers[i].id = i;
        threads.emplace_back(run, std::ref(workers[i]));
    }
    for (int i = 0; i < 4000 && (total_ok < 200 || workers_going < kWorkers); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(workers_going.load(), kWorkers);
    uint64_t requested_ns;
    int rc;
    {
        Deadline guard("8 clients across a live update", {pid0});
        requested_ns = now_ns();
        rc = d.reboot();
        guard.watch(d.pid());
        for (auto& t : threads) t.join();
    }
    ASSERT_EQ(rc, 0);

    json st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1);
    EXPECT_NE(num(st, "pid"), pid0);
    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0);
    std::set<std::string> known;
    size_t open_sessions = 0, files = 0, proven_closed = 0;
    for (auto& w : workers) {
        SCOPED_TRACE("worker " + std::to_string(w.id));
        EXPECT_TRUE(w.errors.empty()) << list(w.errors);
        EXPECT_TRUE(w.saw_estale) << "a client never saw the old instance go";
        for (auto& rec : w.sessions) {
            known.insert(rec->name);
            std::set<uint64_t> want;
            for (auto& [k, _] : rec->preserved) want.insert(k);
            json js = find_session(st, rec->name, "incoming");
            bool gone = rec->closed && (rec->closed_before_gate || rec->closed_ns < requested_ns);
            if (gone) {
                proven_closed++;
                EXPECT_TRUE(js.is_null())
                    << rec->name << " was closed before the gate, yet handed over";
                EXPECT_EQ(lu_retrieve_session(ctl1.get(), rec->name.c_str()), -ENOENT) << rec->name;
                continue;
            }
            if (rec->closed) {  // closed around the gate: either way, but whole
                if (!js.is_null()) {
                    EXPECT_EQ(tokens_of(js), want) << rec->name;
                }
                continue;
            }
            open_sessions++;
            ASSERT_FALSE(js.is_null()) << rec->name << " was open at the gate and is missing";
            EXPECT_EQ(tokens_of(js), want) << rec->name
                                           << ": a PRESERVE_FD that returned 0 is missing, "
                                              "or one that did not is present";
            Fd in(lu_retrieve_session(ctl1.get(), rec->name.c_str()));
            ASSERT_GE(in.get(), 0) << rec->name << ": " << strerror(-in.get());
            for (auto& [k, b] : rec->preserved) {
                Fd r(lu_retrieve_fd(in.get(), k));
                ASSERT_GE(r.get(), 0) << rec->name << " token " << k;
                ASSERT_TRUE(contents(r.get()) == b) << rec->name << " token " << k;
                files++;
            }
        }
    }
    for (const auto& s : st["sessions"])
        EXPECT_TRUE(known.count(s.value("name", ""))) << "unknown session " << s.dump();
    EXPECT_GE(open_sessions, 2u);
    EXPECT_LE(open_sessions, static_cast<size_t>(kWorkers));
    EXPECT_GT(proven_closed, 0u);
    EXPECT_GT(files, 0u);
}

}  // namespace
}  // namespace lu::reboot_test

namespace lu::reboot_test {
namespace {

// A second live update requested while one is in progress is refused
// (busy) and disturbs nothing: the first one still rolls back cleanly.
TEST(RebootGate, SecondRebootDuringUpdateIsRefused) {
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "one"));
    Bytes b = random_bytes(7000, 51);
    Fd m = make_memfd("one", b);
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);

    Deadline guard("two updates at once", {pid0});
    int first_rc = 0;
    Joined r{std::thread([&] {
        first_rc =
            DaemonProcess::ctl({"reboot", "--inject-fault", "hang-before-ready", "--timeout", "1"});
    })};
    json st = wait_status(d, [](const json& s) { return in_progress(s); });
    ASSERT_TRUE(in_progress(st)) << st.dump();
    std::string out;
    int second_rc = DaemonProcess::ctl({"reboot"}, &out);
    r.t.join();
    EXPECT_EQ(second_rc, 5) << "expected liveupdatectl's busy exit code: " << out;
    EXPECT_NE(first_rc, 0);
    st = d.status();
    EXPECT_EQ(num(st, "pid"), pid0);
    EXPECT_EQ(num(st, "epoch"), 0);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_EQ(session_name(s.get()), "one");

    ASSERT_EQ(d.reboot(), 0);
    guard.watch(d.pid());
    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0);
    Fd in(lu_retrieve_session(ctl1.get(), "one"));
    ASSERT_GE(in.get(), 0);
    Fd rf(lu_retrieve_fd(in.get(), 1));
    ASSERT_GE(rf.get(), 0);
    EXPECT_TRUE(contents(rf.get()) == b);
}

}  // namespace
}  // namespace lu::reboot_test
