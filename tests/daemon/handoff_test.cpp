// SPDX-License-Identifier: Apache-2.0
// The hand-off of one service's sessions to its next version, through a
// real liveupdated over its real sockets (docs/handoff.md): other services
// untouched, the commit at FINISH, a rollback at every step, the dry run,
// who may retrieve, and the reboot refused meanwhile.
#include <grp.h>
#include <sys/wait.h>

#include <atomic>
#include <thread>

#include "daemon/daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

// The control connection is exclusive: another client may hold it for a
// moment (a service being updated), so take turns.
Fd open_control() {
    int c = lu_open_wait(100000);
    EXPECT_GE(c, 0) << strerror(-c);
    return Fd(c < 0 ? -1 : c);
}

// The next version's retrieve: the hand-off may not have begun yet.
int retrieve_when_offered(int ctl, const char* name) {
    int s = -ENOENT;
    for (int i = 0; i < 100000 && s == -ENOENT; i++) {
        s = lu_retrieve_session(ctl, name);
        if (s == -ENOENT) usleep(1000);
    }
    return s;
}

// A service's session: "svc" with a memfd holding `content` as token 1.
struct Service {
    Fd session, mem;
    Service(const char* name, const std::string& content) {
        Fd ctl = open_control();
        session = Fd(lu_create_session(ctl.get(), name));
        EXPECT_TRUE(session) << strerror(-session.get());
        mem = make_memfd(content);
        EXPECT_EQ(lu_preserve_fd(session.get(), mem.get(), 1), 0);
    }
};

// The next version in this process: retrieves `name`, checks token 1
// holds `want`, writes `next` in it, finishes, and creates and preserves
// it again. Its new session fd.
Fd take_over(const char* name, const std::string& want, const std::string& next) {
    Fd ctl = open_control();
    Fd in(lu_retrieve_session(ctl.get(), name));
    EXPECT_TRUE(in) << strerror(-in.get());
    Fd mem(lu_retrieve_fd(in.get(), 1));
    EXPECT_TRUE(mem) << strerror(-mem.get());
    EXPECT_EQ(read_all_at(mem.get()), want);
    EXPECT_EQ(pwrite(mem.get(), next.data(), next.size(), 0), static_cast<ssize_t>(next.size()));
    EXPECT_EQ(lu_finish(in.get()), 0);
    Fd again(lu_create_session(ctl.get(), name));
    EXPECT_TRUE(again) << strerror(-again.get());
    EXPECT_EQ(lu_preserve_fd(again.get(), mem.get(), 1), 0);
    return again;
}

int outcome_of(int session, int* reason) {
    *reason = -1;
    return lu_handoff_wait(session, reason);
}

// What the next version, a forked child, does before it waits to be killed.
enum class Next { Nothing, Retrieve, Finish };

// A next version in a child process; it writes one byte to *ready when it
// has done its part, then waits to be killed.
pid_t spawn_next(const char* name, Next what, Fd* ready) {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (what != Next::Nothing) {
            int ctl = lu_open_wait(100000);
            int s = retrieve_when_offered(ctl, name);
            if (s < 0) _exit(10);
            if (lu_retrieve_fd(s, 1) < 0) _exit(11);
            if (what == Next::Finish && lu_finish(s) != 0) _exit(12);
        }
        if (write(p[1], "r", 1) != 1) _exit(13);
        for (;;) pause();
    }
    close(p[1]);
    ready->reset(p[0]);
    return pid;
}

void kill_when_ready(pid_t pid, const Fd& ready) {
    char c;
    EXPECT_EQ(read(ready.get(), &c, 1), 1) << "the next version failed before its part";
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
}

// The session is its owner's, every file as it was, and takes requests.
void expect_owned(int session, int mem, const std::string& content) {
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(session, name), 0);
    EXPECT_EQ(read_all_at(mem), content);
    static uint64_t token = 100;  // a new one each time
    Fd extra = make_memfd("extra");
    EXPECT_EQ(lu_preserve_fd(session, extra.get(), token++), 0);
}

TEST(Handoff, TwoServicesOneUpdatedThreeTimesTheOtherUntouched) {
    DaemonProcess d;
    Service a("a", "v0");
    Service b("b", "b-state");
    const uint64_t epoch = d.status()["epoch"];
    std::atomic<bool> stop{false};
    std::atomic<int> b_errors{0}, b_ops{0};
    std::vector<Fd> b_files;
    std::thread loop([&] {
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        for (uint64_t token = 2; !stop; token++) {
            Fd m = make_memfd("b" + std::to_string(token));
            if (lu_preserve_fd(b.session.get(), m.get(), token) != 0) b_errors++;
            if (lu_get_name(b.session.get(), name) != 0 || strcmp(name, "b") != 0) b_errors++;
            if (read_all_at(b.mem.get()) != "b-state") b_errors++;
            b_files.push_back(std::move(m));
            b_ops++;
        }
    });
    Fd owner = std::move(a.session);
    for (int i = 1; i <= 3; i++) {
        ASSERT_EQ(lu_handoff(owner.get(), 0, 0, 0), 0);
        Fd next = take_over("a", "v" + std::to_string(i - 1), "v" + std::to_string(i));
        int reason;
        EXPECT_EQ(outcome_of(owner.get(), &reason), LU_HANDOFF_COMMITTED);
        EXPECT_EQ(reason, 0);
        char name[LIVEUPDATE_SESSION_NAME_LENGTH];
        EXPECT_EQ(lu_get_name(owner.get(), name), -ESTALE);  // the old owner's fd
        owner = std::move(next);
    }
    while (b_ops < 10) usleep(1000);  // B worked through all three
    stop = true;
    loop.join();
    EXPECT_EQ(b_errors, 0);
    json st = d.status();
    EXPECT_EQ(st["epoch"], epoch);
    auto bs = find_session(st, "b");
    ASSERT_TRUE(bs);
    EXPECT_EQ((*bs)["files"].size(), static_cast<size_t>(b_ops) + 1);
    EXPECT_EQ((*bs)["state"], "open");
    EXPECT_EQ((*bs)["pid"], getpid());
    auto as = find_session(st, "a");
    ASSERT_TRUE(as);
    EXPECT_EQ((*as)["files"].size(), 1u);
    EXPECT_EQ((*as)["last_handoff"], nullptr);  // a new session, its own history
}

TEST(Handoff, NextVersionKilledBeforeRetrieveRollsBack) {
    DaemonProcess d;
    Service a("svc", "state");
    Fd ready;
    pid_t next = spawn_next("svc", Next::Nothing, &ready);
    ASSERT_EQ(lu_handoff(a.session.get(), next, 0, 0), 0);
    EXPECT_EQ(find_session(d.status(), "svc").value()["state"], "handed-off");
    Fd x = make_memfd("x");
    EXPECT_EQ(lu_preserve_fd(a.session.get(), x.get(), 7), -EAGAIN);  // refused, not lost
    kill_when_ready(next, ready);
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ESRCH);
    expect_owned(a.session.get(), a.mem.get(), "state");
    EXPECT_EQ(find_session(d.status(), "svc").value()["state"], "open");
    // A later update succeeds.
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, NextVersionKilledAfterRetrieveBeforeFinishRollsBack) {
    DaemonProcess d;
    Service a("svc", "state");
    Fd ready;
    pid_t next = spawn_next("svc", Next::Retrieve, &ready);
    ASSERT_EQ(lu_handoff(a.session.get(), next, 0, 0), 0);
    kill_when_ready(next, ready);
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_TRUE(reason == ESRCH || reason == ECONNRESET) << strerror(reason);
    expect_owned(a.session.get(), a.mem.get(), "state");
    json st = d.status();
    EXPECT_EQ(count_sessions(st), 1u);  // the next version's view is gone
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, NextVersionKilledAfterFinishStaysCommitted) {
    DaemonProcess d;
    Service a("svc", "state");
    Fd ready;
    pid_t next = spawn_next("svc", Next::Finish, &ready);
    ASSERT_EQ(lu_handoff(a.session.get(), next, 0, 0), 0);
    kill_when_ready(next, ready);
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(a.session.get(), name), -ESTALE);
    Fd x = make_memfd("x");
    EXPECT_EQ(lu_preserve_fd(a.session.get(), x.get(), 2), -ESTALE);
    // It was the next version's, which died with it: nothing left, and the
    // name is free for whoever starts next.
    Fd ctl = open_control();
    EXPECT_EQ(lu_retrieve_session(ctl.get(), "svc"), -ENOENT);
    Fd fresh(lu_create_session(ctl.get(), "svc"));
    ASSERT_TRUE(fresh);
    ctl.reset();
    EXPECT_EQ(lu_preserve_fd(fresh.get(), a.mem.get(), 1), 0);  // the old memfd: no longer held
    ASSERT_EQ(lu_handoff(fresh.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(fresh.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, TimeoutRollsBackBeforeAndAfterRetrieve) {
    DaemonProcess d;
    Service a("svc", "state");
    int reason;
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 50, 0), 0);
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ETIMEDOUT);
    expect_owned(a.session.get(), a.mem.get(), "state");

    ASSERT_EQ(lu_handoff(a.session.get(), 0, 50, 0), 0);
    Fd ctl = open_control();
    Fd in(lu_retrieve_session(ctl.get(), "svc"));
    ASSERT_TRUE(in);
    Fd m(lu_retrieve_fd(in.get(), 1));
    ASSERT_TRUE(m);
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ETIMEDOUT);
    EXPECT_EQ(lu_finish(in.get()), -ESTALE);  // too late: it is the owner's again
    EXPECT_EQ(lu_retrieve_fd(in.get(), 1), -ESTALE);
    expect_owned(a.session.get(), a.mem.get(), "state");
    in.reset();
    ctl.reset();
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, AbortByEitherSideAndCloseUnfinishedRollBack) {
    DaemonProcess d;
    Service a("svc", "state");
    int reason;
    // The next version aborts.
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    {
        Fd ctl = open_control();
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_TRUE(in);
        EXPECT_EQ(lu_handoff_abort(in.get()), 0);
        EXPECT_EQ(lu_handoff_abort(in.get()), -ESTALE);
    }
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ECANCELED);
    expect_owned(a.session.get(), a.mem.get(), "state");
    // The owner aborts.
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    EXPECT_EQ(lu_handoff_abort(a.session.get()), 0);
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(lu_handoff_abort(a.session.get()), -EINVAL);  // none runs
    // The next version closes the session unfinished.
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    {
        Fd ctl = open_control();
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_TRUE(in);
    }
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ECONNRESET);
    expect_owned(a.session.get(), a.mem.get(), "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, DryRunValidatesAndMovesNothing) {
    DaemonProcess d;
    Service a("svc", "state");
    int reason;
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, LU_HANDOFF_DRY_RUN), 0);
    {
        Fd ctl = open_control();
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_TRUE(in);
        Fd m(lu_retrieve_fd(in.get(), 1));
        ASSERT_TRUE(m);
        EXPECT_EQ(read_all_at(m.get()), "state");
        EXPECT_EQ(lu_handoff_abort(in.get()), 0);
    }
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_VALIDATED);
    EXPECT_EQ(reason, 0);
    expect_owned(a.session.get(), a.mem.get(), "state");
    // A next version that finishes in a dry run is told so, and nothing moves.
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, LU_HANDOFF_DRY_RUN), 0);
    {
        Fd ctl = open_control();
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_TRUE(in);
        EXPECT_EQ(lu_finish(in.get()), -ECANCELED);
    }
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_VALIDATED);
    expect_owned(a.session.get(), a.mem.get(), "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    Fd again = take_over("svc", "state", "new");
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, WaitIsAnsweredWhenTheOutcomeComes) {
    DaemonProcess d;
    Service a("svc", "state");
    int reason = -1;
    EXPECT_EQ(lu_handoff_wait(a.session.get(), &reason), -EINVAL);  // never handed off
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    std::atomic<int> outcome{-1};
    std::thread waiter([&] { outcome = lu_handoff_wait(a.session.get(), nullptr); });
    Fd again = take_over("svc", "state", "new");
    waiter.join();
    EXPECT_EQ(outcome, LU_HANDOFF_COMMITTED);
    EXPECT_EQ(lu_handoff_wait(a.session.get(), &reason), LU_HANDOFF_COMMITTED);  // again
}

TEST(Handoff, StatusShowsHoldersAndWaitingIncomingSessions) {
    DaemonProcess d;
    Service a("svc", "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    json st = d.status();
    EXPECT_EQ(st["handoffs"], "svc");
    int outgoing = 0, incoming = 0;
    for (const json& s : st["sessions"]) {
        if (s["name"] != "svc") continue;
        if (s["direction"] == "outgoing") {
            outgoing++;
            EXPECT_EQ(s["pid"], getpid());
            EXPECT_EQ(s["state"], "handed-off");
        } else {
            incoming++;
            EXPECT_TRUE(s["waiting_s"].is_number());
            EXPECT_FALSE(s.contains("pid"));  // nobody holds it yet
        }
    }
    EXPECT_EQ(outgoing, 1);
    EXPECT_EQ(incoming, 1);
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    EXPECT_NE(out.find("hand-off svc"), std::string::npos) << out;
    EXPECT_NE(out.find("waiting"), std::string::npos) << out;
    EXPECT_NE(out.find(std::to_string(getpid())), std::string::npos) << out;
    EXPECT_EQ(lu_handoff_abort(a.session.get()), 0);
}

TEST(Handoff, RebootDuringAHandOffIsRefused) {
    DaemonProcess d;
    Service a("svc", "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    json r = d.admin(R"({"op":"reboot"})");
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["errno"], EBUSY);
    EXPECT_NE(r["error"].get<std::string>().find("a hand-off is in progress: svc"), std::string::npos) << r;
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"reboot", "--dry-run"}, &out), 5);  // busy
    // Nothing moved: the hand-off goes on and commits.
    Fd again = take_over("svc", "state", "new");
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
    EXPECT_EQ(d.status()["epoch"], 0);
}

TEST(Handoff, AnotherUidCannotRetrieveDuringTheHandOff) {
    group* g = getgrnam("nogroup");
    ASSERT_NE(g, nullptr);
    DaemonProcess d({"--group", "nogroup"});
    Service a("svc", "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setgroups(0, nullptr) != 0 || setresgid(g->gr_gid, g->gr_gid, g->gr_gid) != 0 ||
            setresuid(65534, 65534, 65534) != 0)
            _exit(100);
        int ctl = lu_open();
        if (ctl < 0) _exit(101);
        int s = lu_retrieve_session(ctl, "svc");
        _exit(s == -EACCES ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0) << "100: could not become nobody; 101: no control; 1: not EACCES";
    // Still there for its owner's uid.
    Fd again = take_over("svc", "state", "new");
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
}

TEST(Handoff, LiveupdatectlUpdateCommitsDryRunsAndRollsBack) {
    DaemonProcess d;
    Service a("svc", "state");
    std::string pid_arg;
    // --pid: a next version already running, waiting for its session.
    {
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        pid_t next = fork();
        ASSERT_GE(next, 0);
        if (next == 0) {
            int ctl = lu_open_wait(100000);
            int s = retrieve_when_offered(ctl, "svc");
            if (s < 0 || lu_retrieve_fd(s, 1) < 0) _exit(10);
            if (lu_handoff_abort(s) != 0) _exit(11);  // a dry run: validated, abort
            _exit(0);
        }
        close(p[0]);
        close(p[1]);
        std::string out;
        EXPECT_EQ(DaemonProcess::ctl({"update", "svc", "--dry-run", "--pid", std::to_string(next)}, &out), 0)
            << out;
        EXPECT_NE(out.find("svc: validated"), std::string::npos) << out;
        int st = 0;
        waitpid(next, &st, 0);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    expect_owned(a.session.get(), a.mem.get(), "state");
    // --exec: a next version that fails at once.
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"update", "svc", "--exec", "exit 3"}, &out), 1) << out;
    EXPECT_NE(out.find("svc: rolled_back"), std::string::npos) << out;
    expect_owned(a.session.get(), a.mem.get(), "state");
    // A commit, reported as such.
    pid_t next = fork();
    ASSERT_GE(next, 0);
    if (next == 0) {
        int ctl = lu_open_wait(100000);
        int s = retrieve_when_offered(ctl, "svc");
        if (s < 0 || lu_retrieve_fd(s, 1) < 0 || lu_finish(s) != 0) _exit(10);
        _exit(0);
    }
    EXPECT_EQ(DaemonProcess::ctl({"update", "svc", "--json", "--pid", std::to_string(next)}, &out), 0) << out;
    json j = json::parse(out, nullptr, false);
    EXPECT_EQ(j["outcome"], "committed") << out;
    waitpid(next, nullptr, 0);
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_COMMITTED);
    // Bad requests are refused, and nothing is handed off.
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":"svc"})")["errno"], EINVAL);
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":["nope"]})")["errno"], ENOENT);
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":["x"],"timeout":-1})")["errno"], EINVAL);
    EXPECT_EQ(d.admin(R"({"op":"update-wait","id":12345})")["errno"], ENOENT);
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

// --strict: the kernel has no hand-off; its commands answer what the kernel
// answers for a session command it does not know.
TEST(HandoffStrict, CommandsAreUnknownAndTheAdminOpRefused) {
    DaemonProcess d({"--strict"});
    Service a("svc", "state");
    EXPECT_EQ(lu_handoff(a.session.get(), 0, 0, 0), -EINVAL);
    EXPECT_EQ(lu_handoff_wait(a.session.get(), nullptr), -EINVAL);
    EXPECT_EQ(lu_handoff_abort(a.session.get()), -EINVAL);
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":["svc"]})")["errno"], EOPNOTSUPP);
    expect_owned(a.session.get(), a.mem.get(), "state");
}

}  // namespace
}  // namespace lu::testing

#include "liveupdate/client.hpp"

namespace lu::testing {
namespace {

// The C++ layer's cycle: a next version started in advance waits for its
// session, takes it, commits and owns it again; a dry run moves nothing.
TEST(HandoffCpp, TheWholeCycle) {
    DaemonProcess d;
    Service a("svc", "state");
    liveupdate::Session owner{liveupdate::UniqueFd(a.session.release())};
    std::thread next([] {
        liveupdate::Session in = liveupdate::await_session("svc");
        liveupdate::UniqueFd mem = in.retrieve(1);
        EXPECT_EQ(read_all_at(mem.get()), "state");
        auto orch = liveupdate::Orchestrator::open();
        liveupdate::Session s = liveupdate::reown(orch, in, "svc");
        s.preserve(mem.get(), 1);
        s.release();  // stays preserved: the test's daemon ends it
    });
    liveupdate::HandoffResult r = liveupdate::hand_off(owner, 0);
    next.join();
    EXPECT_TRUE(r.committed());
    EXPECT_EQ(r.reason, 0);
    try {
        owner.name();
        ADD_FAILURE() << "the old owner's fd still answers";
    } catch (const liveupdate::Error& e) {
        EXPECT_EQ(e.errno_value(), ESTALE);
    }
    auto orch = liveupdate::Orchestrator::open();
    EXPECT_FALSE(liveupdate::retrieve_if_any(orch, "nothing-here"));
}

TEST(HandoffCpp, DryRunAndAbort) {
    DaemonProcess d;
    Service a("svc", "state");
    liveupdate::Session owner{liveupdate::UniqueFd(a.session.release())};
    std::thread next([] {
        liveupdate::Session in = liveupdate::await_session("svc");
        in.retrieve(1);
        try {
            in.finish();
            ADD_FAILURE() << "FINISH of a dry run succeeded";
        } catch (const liveupdate::Error& e) {
            EXPECT_EQ(e.errno_value(), ECANCELED);
        }
    });
    liveupdate::HandoffResult r = liveupdate::hand_off(owner, 0, {}, /*dry_run=*/true);
    next.join();
    EXPECT_EQ(r.outcome, liveupdate::HandoffOutcome::Validated);
    owner.handoff();
    owner.abort_handoff();
    r = owner.wait_handoff();
    EXPECT_EQ(r.outcome, liveupdate::HandoffOutcome::RolledBack);
    EXPECT_EQ(r.reason, ECANCELED);
    owner.preserve(make_memfd("more").get(), 2);
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

// The owner's fd closed during the hand-off: the next owner still gets it;
// rolled back instead, it is released then, as its close asked.
TEST(Handoff, OwnerClosingItsFdMeanwhile) {
    DaemonProcess d;
    {
        Service a("svc", "state");
        ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
        a.session.reset();
        Fd again = take_over("svc", "state", "new");  // commits
        EXPECT_EQ(find_session(d.status(), "svc").value()["direction"], "outgoing");
    }
    Service b("other", "b");
    ASSERT_EQ(lu_handoff(b.session.get(), 0, 0, 0), 0);
    b.session.reset();
    EXPECT_EQ(count_sessions(d.status()), 2u);  // still there: its next owner may take it
    json r = d.admin(R"({"op":"update-abort","id":2})");
    EXPECT_EQ(r["outcome"], "rolled_back") << r;
    EXPECT_EQ(count_sessions(d.status()), 0u);  // released, as its owner asked
}

// The operator's requests, field by field.
TEST(Handoff, AdminUpdateWaitAndAbort) {
    DaemonProcess d;
    Service a("svc", "state");
    json r = d.admin(R"({"op":"update","sessions":["svc"],"wait":false,"timeout":60})");
    ASSERT_EQ(r["ok"], true) << r;
    const uint64_t id = r["id"];
    EXPECT_EQ(find_session(d.status(), "svc").value()["state"], "handed-off");
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":["svc"]})")["errno"], EBUSY);
    r = d.admin(json{{"op", "update-abort"}, {"id", id}}.dump());
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["outcome"], "rolled_back");
    EXPECT_EQ(r["sessions"][0]["errno"], ECANCELED);
    // Over: a late wait gets the same outcome.
    EXPECT_EQ(d.admin(json{{"op", "update-wait"}, {"id", id}}.dump())["outcome"], "rolled_back");
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    EXPECT_EQ(reason, ECANCELED);
    expect_owned(a.session.get(), a.mem.get(), "state");
    for (const char* bad : {R"({"op":"update","sessions":[]})", R"({"op":"update","sessions":[1]})",
                            R"({"op":"update","sessions":["svc"],"pid":-3})",
                            R"({"op":"update","sessions":["svc"],"pid":"x"})",
                            R"({"op":"update","sessions":["svc"],"dry_run":1})",
                            R"({"op":"update","sessions":["svc","svc"]})",
                            R"({"op":"update","sessions":["svc"],"timeout":7200})",
                            R"({"op":"update-wait","id":-1})", R"({"op":"update-abort"})"})
        EXPECT_EQ(d.admin(bad)["errno"], EINVAL) << bad;
    EXPECT_EQ(d.admin(R"({"op":"update","sessions":["svc"],"pid":2147483000})")["errno"], ESRCH);
    expect_owned(a.session.get(), a.mem.get(), "state");  // nothing moved by any of them
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

// docs/handoff.md: a rollback gives the session back, not its content. What
// the next version wrote into the shared memfd before it failed stays.
TEST(Handoff, WhatTheNextVersionWroteStaysAfterARollback) {
    DaemonProcess d;
    Service a("svc", "state");
    ASSERT_EQ(lu_handoff(a.session.get(), 0, 0, 0), 0);
    {
        Fd ctl = open_control();
        Fd in(lu_retrieve_session(ctl.get(), "svc"));
        ASSERT_TRUE(in);
        Fd mem(lu_retrieve_fd(in.get(), 1));
        ASSERT_TRUE(mem);
        ASSERT_EQ(pwrite(mem.get(), "STATE", 5, 0), 5);  // before FINISH: a mistake
    }  // closed unfinished: rolled back
    int reason;
    EXPECT_EQ(outcome_of(a.session.get(), &reason), LU_HANDOFF_ROLLED_BACK);
    expect_owned(a.session.get(), a.mem.get(), "STATE");
}

}  // namespace
}  // namespace lu::testing
