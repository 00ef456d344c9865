// SPDX-License-Identifier: Apache-2.0
// The live update that succeeds: what crosses it (memfds, a listening
// socket), what the old instance's fds do afterwards, the control and admin
// sockets during it, the dry run, repeated updates, the failed
// deserialization, and how the old instance exits.
#include <atomic>
#include <new>

#include "reboot/reboot_util.hpp"

namespace lu::reboot_test {
namespace {

constexpr int kSealsRecorded = F_SEAL_GROW | F_SEAL_SHRINK;

struct MemfdCase {
    const char* what;
    uint64_t token;
    Fd fd;
    Bytes bytes;    // expected contents at the reboot
    off_t pos = 0;  // expected position at the reboot
    int seals = 0;  // recorded at preserve
};

// 1. Memfds of every shape and a listening TCP socket cross a live update:
// same bytes, sizes, positions, seals; a connection made before and one
// made during the update are accepted afterwards through the retrieved fd.
TEST(RebootHandover, MemfdsAndListeningSocketSurvive) {
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    ASSERT_GT(pid0, 0);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
    Fd s(lu_create_session(ctl.get(), "state"));
    ASSERT_GE(s.get(), 0) << strerror(-s.get());

    std::vector<MemfdCase> m;
    m.push_back({"1 MiB random", 1, {}, random_bytes(1 << 20, 1)});
    m.push_back({"empty", 2, {}, {}});
    m.push_back({"written after preserve", 3, {}, random_bytes(8192, 3)});
    m.push_back({"sealed, positioned", 4, {}, random_bytes(3000, 4)});
    for (auto& c : m) {
        c.fd = make_memfd(c.what, c.bytes);
        ASSERT_TRUE(c.fd.ok()) << c.what;
    }
    ASSERT_EQ(lseek(m[0].fd.get(), 4096, SEEK_SET), 4096);
    ASSERT_EQ(fcntl(m[3].fd.get(), F_ADD_SEALS, kSealsRecorded), 0);
    ASSERT_EQ(lseek(m[3].fd.get(), 1234, SEEK_SET), 1234);
    for (auto& c : m) {
        c.seals = fcntl(c.fd.get(), F_GET_SEALS);
        ASSERT_EQ(lu_preserve_fd(s.get(), c.fd.get(), c.token), 0) << c.what;
    }
    ASSERT_EQ(m[3].seals & kSealsRecorded, kSealsRecorded);

    // New bytes into the original fd after PRESERVE_FD: overwrite a range,
    // then append (the file grows, the position moves to the end).
    Bytes patch = random_bytes(4096, 30), tail = random_bytes(5000, 31);
    ASSERT_TRUE(pwrite_all(m[2].fd.get(), patch, 2048));
    std::copy(patch.begin(), patch.end(), m[2].bytes.begin() + 2048);
    ASSERT_EQ(lseek(m[2].fd.get(), 0, SEEK_END), 8192);
    ASSERT_EQ(write(m[2].fd.get(), tail.data(), tail.size()), static_cast<ssize_t>(tail.size()));
    m[2].bytes.insert(m[2].bytes.end(), tail.begin(), tail.end());

    uint16_t port = 0;
    Fd listener = tcp_listener(&port);
    ASSERT_TRUE(listener.ok());
    ASSERT_EQ(lu_preserve_fd(s.get(), listener.get(), 5), 0);

    for (auto& c : m) c.pos = position(c.fd.get());
    EXPECT_EQ(m[0].pos, 4096);
    EXPECT_EQ(m[2].pos, 8192 + 5000);
    EXPECT_EQ(m[3].pos, 1234);

    // One client connects before the update (it waits in the backlog, not
    // accepted), one while the update runs.
    Fd before = tcp_connect(port);
    ASSERT_TRUE(before.ok());
    Fd during;
    std::thread t([&] { during = tcp_connect(port); });
    int rc = d.reboot();
    t.join();
    ASSERT_EQ(rc, 0);
    ASSERT_TRUE(during.ok());

    json st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1) << st.dump();
    EXPECT_NE(num(st, "pid"), pid0);
    EXPECT_EQ(str(st, "gate"), "open");
    json in = find_session(st, "state", "incoming");
    ASSERT_FALSE(in.is_null()) << st.dump();
    EXPECT_EQ(str(in, "state"), "unretrieved");
    EXPECT_EQ(tokens_of(in), (std::set<uint64_t>{1, 2, 3, 4, 5}));

    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0) << strerror(-ctl1.get());
    Fd is(lu_retrieve_session(ctl1.get(), "state"));
    ASSERT_GE(is.get(), 0) << strerror(-is.get());
    EXPECT_EQ(session_name(is.get()), "state");
    for (auto& c : m) {
        SCOPED_TRACE(c.what);
        Fd r(lu_retrieve_fd(is.get(), c.token));
        ASSERT_GE(r.get(), 0) << strerror(-r.get());
        EXPECT_EQ(file_size(r.get()), static_cast<off_t>(c.bytes.size()));
        EXPECT_EQ(position(r.get()), c.pos);
        Bytes got = contents(r.get());
        EXPECT_TRUE(got == c.bytes) << diff(got, c.bytes);
        int seals = fcntl(r.get(), F_GET_SEALS);
        EXPECT_EQ(seals & c.seals, c.seals) << "seals " << seals << " recorded " << c.seals;
        // The retrieved file is a new open file description, as the kernel's.
        ASSERT_EQ(lseek(r.get(), 0, SEEK_SET), 0);
        EXPECT_EQ(position(c.fd.get()), c.pos) << "the retrieved fd shares the original's position";
    }
    // The sealed one stays sealed: it cannot grow through the retrieved fd.
    {
        Fd r(lu_retrieve_fd(is.get(), 4));
        ASSERT_GE(r.get(), 0);
        EXPECT_NE(ftruncate(r.get(), 10000), 0);
    }

    Fd rl(lu_retrieve_fd(is.get(), 5));
    ASSERT_GE(rl.get(), 0) << strerror(-rl.get());
    EXPECT_EQ(local_port(rl.get()), port);
    int listening = 0;
    socklen_t len = sizeof listening;
    ASSERT_EQ(getsockopt(rl.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len), 0);
    EXPECT_EQ(listening, 1);
    // Both connections wait in the backlog of the same socket: accept them
    // through the retrieved fd and match them to their clients.
    std::map<uint16_t, Fd> accepted;  // by the client's port
    for (int i = 0; i < 2; i++) {
        Fd conn = accept_one(rl.get());
        ASSERT_TRUE(conn.ok()) << "connection " << i << " was lost across the update";
        accepted[peer_port(conn.get())] = std::move(conn);
    }
    for (int c : {before.get(), during.get()}) {
        auto it = accepted.find(local_port(c));
        ASSERT_NE(it, accepted.end()) << "a client's connection was not accepted";
        EXPECT_TRUE(flows(c, it->second.get(), "request from the client"));
        EXPECT_TRUE(flows(it->second.get(), c, "reply from the retrieved listener's connection"));
    }
    // Nothing was left for the original fd the test still holds.
    pollfd pl{listener.get(), POLLIN, 0};
    EXPECT_EQ(poll(&pl, 1, 0), 0);
    EXPECT_EQ(lu_finish(is.get()), 0);
}

// 2a. After commit, every fd of the old instance fails promptly with ESTALE,
// again and again, and the new instance serves the handed-over state.
TEST(RebootHandover, OldFdsFailWithEstaleAfterCommit) {
    DaemonProcess d;
    const pid_t old = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "kept"));
    Fd empty(lu_create_session(ctl.get(), "empty"));
    ASSERT_GE(s.get(), 0);
    ASSERT_GE(empty.get(), 0);
    Bytes b = random_bytes(4096, 7);
    Fd mfd = make_memfd("kept", b);
    ASSERT_EQ(lu_preserve_fd(s.get(), mfd.get(), 1), 0);

    ASSERT_EQ(d.reboot(), 0);
    const pid_t next = d.pid();
    EXPECT_NE(next, old);
    {
        Deadline guard("old fds after commit", {old, next});
        char name[LIVEUPDATE_SESSION_NAME_LENGTH] = {};
        Fd other = make_memfd("other", random_bytes(100, 8));
        for (int round = 0; round < 2; round++) {
            SCOPED_TRACE(round);
            EXPECT_EQ(lu_create_session(ctl.get(), "new"), -ESTALE);
            EXPECT_EQ(lu_retrieve_session(ctl.get(), "kept"), -ESTALE);
            EXPECT_EQ(lu_get_name(s.get(), name), -ESTALE);
            EXPECT_EQ(lu_get_name(empty.get(), name), -ESTALE);
            EXPECT_EQ(lu_preserve_fd(s.get(), other.get(), 2), -ESTALE);
            EXPECT_EQ(lu_preserve_fd(empty.get(), other.get(), 3), -ESTALE);
        }
    }
    // Closing the stale fds changes nothing in the new instance.
    ctl.reset();
    s.reset();
    empty.reset();
    json st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1);
    EXPECT_FALSE(find_session(st, "kept", "incoming").is_null()) << st.dump();
    EXPECT_FALSE(find_session(st, "empty", "incoming").is_null()) << st.dump();

    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0) << strerror(-ctl1.get());
    Fd in(lu_retrieve_session(ctl1.get(), "kept"));
    ASSERT_GE(in.get(), 0) << strerror(-in.get());
    Fd r(lu_retrieve_fd(in.get(), 1));
    ASSERT_GE(r.get(), 0);
    EXPECT_TRUE(contents(r.get()) == b);
    Fd in2(lu_retrieve_session(ctl1.get(), "empty"));
    EXPECT_GE(in2.get(), 0) << strerror(-in2.get());
    Fd fresh(lu_create_session(ctl1.get(), "new"));
    EXPECT_GE(fresh.get(), 0) << strerror(-fresh.get());
}

// 2b. A client opening the control socket while the update runs is served
// (by the old instance before the gate, by the next one after), never
// refused: no ENOENT, no ECONNREFUSED, and no EBUSY (no other holder exists).
TEST(RebootHandover, ControlSocketNeverRefusedDuringUpdate) {
    DaemonProcess d;
    const pid_t old = d.pid();
    Fd s;
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        s = Fd(lu_create_session(ctl.get(), "busy"));
        ASSERT_GE(s.get(), 0);
        Fd mfd = make_memfd("busy", random_bytes(65536, 9));
        ASSERT_EQ(lu_preserve_fd(s.get(), mfd.get(), 1), 0);
    }  // the control connection is closed: nobody holds it

    // The client is a child process. Not a thread: liveupdatectl is spawned
    // from this process, and a spawn copies the fd table until its exec; a
    // control fd caught in that copy really is held twice for a moment
    // (EBUSY, as the kernel's /dev/liveupdate would answer a forked holder).
    struct Shared {
        std::atomic<bool> stop, rebooted;
        std::atomic<int> opens, opens_after, errors, first_error;
    };
    void* mem =
        mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    Shared* sh = new (mem) Shared{};
    const pid_t client = fork();
    ASSERT_GE(client, 0);
    if (client == 0) {
        while (!sh->stop && sh->errors < 100) {
            int fd = lu_open();
            if (fd >= 0) {
                close(fd);
                sh->opens++;
                if (sh->rebooted) sh->opens_after++;
            } else {
                int zero = 0;
                sh->first_error.compare_exchange_strong(zero, fd);
                sh->errors++;
            }
        }
        _exit(0);
    }
    for (int i = 0; i < 2000 && sh->opens < 20; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int rc;
    {
        Deadline guard("lu_open loop during the update", {old, client});
        rc = d.reboot();
        sh->rebooted = true;
        guard.watch(d.pid());
        for (int i = 0; i < 2000 && sh->opens_after < 20 && sh->errors < 100; i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        sh->stop = true;
        int st = 0;
        EXPECT_EQ(waitpid(client, &st, 0), client);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "client status " << st;
    }
    EXPECT_EQ(rc, 0);
    EXPECT_GT(sh->opens.load(), sh->opens_after.load()) << "no open before the update";
    EXPECT_GE(sh->opens_after.load(), 20) << "the next instance did not serve control connections";
    EXPECT_EQ(sh->errors.load(), 0)
        << "lu_open failures, the first: " << strerror(-sh->first_error);
    EXPECT_EQ(num(d.status(), "epoch"), 1);
    munmap(mem, sizeof(Shared));
}

// 6. A dry run validates in a next instance and keeps serving: same pid,
// same epoch, the gate open, sessions usable; then a real update works.
TEST(RebootHandover, DryRunKeepsServing) {
    DaemonProcess d;
    const pid_t pid0 = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "dry"));
    ASSERT_GE(s.get(), 0);
    Bytes b1 = random_bytes(10000, 11), b2 = random_bytes(20000, 12);
    Fd m1 = make_memfd("m1", b1), m2 = make_memfd("m2", b2);
    ASSERT_EQ(lu_preserve_fd(s.get(), m1.get(), 1), 0);

    ASSERT_EQ(d.reboot({"--dry-run"}), 0);
    json st = d.status();
    EXPECT_EQ(num(st, "pid"), pid0);
    EXPECT_EQ(num(st, "epoch"), 0);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_EQ(str(st["update"], "state"), "idle");
    json out = find_session(st, "dry", "outgoing");
    EXPECT_EQ(str(out, "state"), "open") << st.dump();
    EXPECT_EQ(tokens_of(out), std::set<uint64_t>{1});
    if (auto kids = children_of(pid0)) {
        EXPECT_TRUE(kids->empty()) << "validating instance left: " << list(*kids);
    }

    EXPECT_EQ(session_name(s.get()), "dry");
    EXPECT_EQ(lu_preserve_fd(s.get(), m2.get(), 2), 0);
    Fd s2(lu_create_session(ctl.get(), "dry2"));
    EXPECT_GE(s2.get(), 0) << strerror(-s2.get());

    ASSERT_EQ(d.reboot(), 0);
    st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1);
    EXPECT_NE(num(st, "pid"), pid0);
    Fd ctl1(lu_open());
    ASSERT_GE(ctl1.get(), 0);
    Fd in(lu_retrieve_session(ctl1.get(), "dry"));
    ASSERT_GE(in.get(), 0);
    Fd r1(lu_retrieve_fd(in.get(), 1)), r2(lu_retrieve_fd(in.get(), 2));
    ASSERT_GE(r1.get(), 0);
    ASSERT_GE(r2.get(), 0);
    EXPECT_TRUE(contents(r1.get()) == b1);
    EXPECT_TRUE(contents(r2.get()) == b2);
    Fd in2(lu_retrieve_session(ctl1.get(), "dry2"));
    EXPECT_GE(in2.get(), 0);
}

// 7. Ten live updates in a row, a client carrying its state through each:
// retrieve, FINISH, preserve again (plus one new memfd a round). All bytes
// survive, the epoch counts, and the serving daemon's fds and RSS stay flat.
TEST(RebootHandover, TenRebootsInARow) {
    DaemonProcess d;
    std::map<uint64_t, Bytes> expected;
    Fd out;  // the outgoing session, held across each update
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        out = Fd(lu_create_session(ctl.get(), "svc"));
        ASSERT_GE(out.get(), 0);
        for (uint64_t t = 0; t < 5; t++) {
            expected[t] = random_bytes(4096 * (t + 1) + t, 100 + t);
            Fd m = make_memfd("svc", expected[t]);
            ASSERT_EQ(lu_preserve_fd(out.get(), m.get(), t), 0);
        }
    }
    long fds_extra3 = -1, fds_extra10 = -1, rss3 = -1, rss10 = -1;
    for (int round = 1; round <= 10; round++) {
        SCOPED_TRACE("round " + std::to_string(round));
        ASSERT_EQ(d.reboot(), 0);
        out.reset();  // stale now
        json st = d.status();
        ASSERT_EQ(num(st, "epoch"), round) << st.dump();
        EXPECT_EQ(tokens_of(find_session(st, "svc", "incoming")).size(), expected.size());

        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_GE(in.get(), 0) << strerror(-in.get());
        std::map<uint64_t, Fd> got;
        for (auto& [t, b] : expected) {
            Fd r(lu_retrieve_fd(in.get(), t));
            ASSERT_GE(r.get(), 0) << "token " << t << ": " << strerror(-r.get());
            Bytes c = contents(r.get());
            ASSERT_TRUE(c == b) << "token " << t << ": " << diff(c, b);
            got[t] = std::move(r);
        }
        ASSERT_EQ(lu_finish(in.get()), 0);
        in.reset();
        out = Fd(lu_create_session(ctl.get(), "svc"));
        ASSERT_GE(out.get(), 0) << strerror(-out.get());
        for (auto& [t, fd] : got)
            ASSERT_EQ(lu_preserve_fd(out.get(), fd.get(), t), 0) << "token " << t;
        uint64_t t_new = 100 + static_cast<uint64_t>(round);
        expected[t_new] = random_bytes(1000 + static_cast<size_t>(round), t_new);
        Fd m = make_memfd("new", expected[t_new]);
        ASSERT_EQ(lu_preserve_fd(out.get(), m.get(), t_new), 0);
        ctl.reset();
        got.clear();

        st = d.status();
        pid_t pid = static_cast<pid_t>(num(st, "pid"));
        long extra = static_cast<long>(settled_fd_count(pid)) - num(st, "preserved_files");
        EXPECT_EQ(num(st, "preserved_files"), static_cast<int64_t>(expected.size()));
        if (round == 3) fds_extra3 = extra, rss3 = vm_rss_kb(pid);
        if (round == 10) fds_extra10 = extra, rss10 = vm_rss_kb(pid);
    }
    // Resource-leak checks, not timing: fds beyond the preserved ones equal
    // within a few, RSS within 2x.
    EXPECT_NEAR(fds_extra10, fds_extra3, 3);
    ASSERT_GT(rss3, 0);
    EXPECT_LT(rss10, 2 * rss3) << "VmRSS " << rss3 << " KiB at epoch 3, " << rss10
                               << " KiB at epoch 10";

    // Everything once more, after the last update.
    ASSERT_EQ(d.reboot(), 0);
    EXPECT_EQ(num(d.status(), "epoch"), 11);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd in(lu_retrieve_session(ctl.get(), "svc"));
    ASSERT_GE(in.get(), 0);
    for (auto& [t, b] : expected) {
        Fd r(lu_retrieve_fd(in.get(), t));
        ASSERT_GE(r.get(), 0) << "token " << t;
        EXPECT_TRUE(contents(r.get()) == b) << "token " << t;
    }
}

// 8. A handover that validates but fails to deserialize (a file names a
// handler the next instance lacks: the daemon's test-only fault
// "deserialize"). The kernel's policy: ready was reported, so the update
// completes; the state is leaked, never half-restored; every control open
// fails with EIO, again and again.
TEST(RebootHandover, FailedDeserializeLeaksAndAnswersEio) {
    DaemonProcess d({"--test-handler"});
    const pid_t old = d.pid();
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "doomed"));
    ASSERT_GE(s.get(), 0);
    Fd m = make_memfd("doomed", random_bytes(5000, 13));
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    Fd pr(p[0]), pw(p[1]);
    ASSERT_EQ(lu_preserve_fd(s.get(), pr.get(), 2), 0);  // the test handler's

    ASSERT_EQ(d.reboot({"--inject-fault", "deserialize"}), 0);
    json st = d.status();
    ASSERT_FALSE(st.is_null());
    EXPECT_NE(num(st, "pid"), old);
    EXPECT_NE(num(st, "deserialize_error"), 0) << st.dump();
    EXPECT_FALSE(str(st, "failed").empty()) << st.dump();
    EXPECT_GT(num(st, "leaked_fds"), 0) << st.dump();
    {
        Deadline guard("control opens after a failed deserialize", {old, d.pid()});
        EXPECT_EQ(lu_open(), -EIO);
        EXPECT_EQ(lu_open(), -EIO);
        EXPECT_EQ(lu_create_session(ctl.get(), "x"), -ESTALE);
    }
    // Still the same (broken) instance: sticky, not a crash.
    st = d.status();
    EXPECT_NE(num(st, "deserialize_error"), 0);
    EXPECT_EQ(lu_open(), -EIO);
}

}  // namespace
}  // namespace lu::reboot_test

namespace lu::reboot_test {
namespace {

// The admin socket (status) stays served while live updates commit: the
// listening socket passes to the next instance, so no status request is
// ever dropped, and a client never sees the epoch go back.
// (Fails as of this writing: the old instance keeps accepting admin
// connections until it stops on SERVING and exits with some accepted but
// unanswered; their clients read EOF, lu_admin_request gives -ESTALE.)
TEST(RebootHandover, AdminStatusServedThroughoutUpdates) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "a"));
    Fd m = make_memfd("a", random_bytes(1000, 5));
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    ctl.reset();

    constexpr int kThreads = 3;
    std::atomic<bool> stop{false};
    std::atomic<int> served{0};
    std::mutex mu;
    std::vector<std::string> errors;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++)
        threads.emplace_back([&] {
            int64_t last_epoch = 0;
            while (!stop) {
                char* reply = nullptr;
                int rc = lu_admin_request(R"({"op":"status"})", &reply);
                std::lock_guard<std::mutex> l(mu);
                if (rc != 0) {
                    errors.push_back(std::string("status: ") + strerror(-rc));
                    continue;
                }
                json j = json::parse(reply, nullptr, false);
                lu_free(reply);
                int64_t e = num(j, "epoch");
                if (e < last_epoch)
                    errors.push_back("epoch " + std::to_string(e) + " after " +
                                     std::to_string(last_epoch));
                last_epoch = std::max(last_epoch, e);
                served++;
            }
        });
    std::vector<pid_t> pids{d.pid()};
    {
        Deadline guard("status during updates", pids);
        for (int round = 1; round <= 5; round++) {
            int before = served;
            for (int i = 0; i < 2000 && served < before + 10; i++)
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            EXPECT_EQ(d.reboot(), 0);
            guard.watch(d.pid());
        }
        stop = true;
        for (auto& t : threads) t.join();
    }
    EXPECT_EQ(num(d.status(), "epoch"), 5);
    EXPECT_TRUE(errors.empty()) << errors.size() << " failures, " << list(errors);
}

}  // namespace
}  // namespace lu::reboot_test

namespace lu::reboot_test {
namespace {

// After a successful live update the old instance exits with status 0: its
// supervisor (and we, its subreaper) must not see a successful update as a
// crash. Checked over five updates, without reaping (WNOWAIT: the fixture
// reaps), with status requests keeping the instances busy (which widens the
// window in which the next instance's end of the channel is already closed
// when the old one reads SERVING).
// (Fails as of this writing: after SERVING the old instance reads on, sees
// the channel's EOF, takes it for "the next instance died after commit" and
// exits with status 1.)
TEST(RebootHandover, OldInstanceExitsWithSuccessAfterCommit) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "x"));
    Fd m = make_memfd("x", random_bytes(1000, 61));
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    ctl.reset();
    std::atomic<bool> stop{false};
    std::vector<std::thread> load;
    for (int i = 0; i < 4; i++)
        load.emplace_back([&] {
            while (!stop) {
                char* reply = nullptr;
                if (lu_admin_request(R"({"op":"status"})", &reply) == 0) lu_free(reply);
            }
        });
    struct Joiner {
        std::atomic<bool>& stop;
        std::vector<std::thread>& threads;
        ~Joiner() {
            stop = true;
            for (auto& t : threads) t.join();
        }
    } joiner{stop, load};
    for (int round = 1; round <= 5; round++) {
        SCOPED_TRACE("update " + std::to_string(round));
        const pid_t old = static_cast<pid_t>(num(status_retry(d), "pid"));
        ASSERT_GT(old, 0);
        ASSERT_EQ(DaemonProcess::ctl({"reboot"}), 0);
        siginfo_t si{};
        {
            Deadline guard("the old instance's exit", {old});
            ASSERT_EQ(waitid(P_PID, static_cast<id_t>(old), &si, WEXITED | WNOWAIT), 0)
                << strerror(errno);
        }
        EXPECT_EQ(si.si_code, CLD_EXITED) << "killed by signal " << si.si_status;
        EXPECT_EQ(si.si_status, 0)
            << "the old instance of a successful update exited with status " << si.si_status;
        EXPECT_EQ(num(status_retry(d), "epoch"), round);
    }
}

}  // namespace
}  // namespace lu::reboot_test
