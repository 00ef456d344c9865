// SPDX-License-Identifier: Apache-2.0
// The fault campaign. For each step of a live update, and of a
// session release, the old or the next instance is killed there (SIGKILL),
// or the libc call it makes there fails (EINTR, ENOMEM, EMFILE, ENOSPC,
// a short write, fds that do not fit). After each, the system must be
// rolled back with every session intact, committed with every session
// intact, or recovered by the keeper (docs/crash-safety.md): a new instance
// serves one epoch on with every session that was open back as incoming,
// every file's bytes as they were, and nothing released back. A later live
// update must then succeed.
//
// The steps are found, not listed: a clean run is traced first (the
// sysfault preload library, tests/faults/preload) and every call it counted
// becomes a step, so a new call in the daemon is covered without editing
// this file. Each test prints its table: step x fault -> outcome.
//
// No case may lose the sessions: whichever instance dies, the keeper holds
// what it held. The keeper's own death is the exception the campaign
// allows, counted apart: it is killed at each of its steps of a clean live
// update and at rest, and the daemon must start a new one, keep its state
// and survive a later crash of its own; only the keeper dying with the
// serving instance loses the state, as a kernel panic would.
//
// Faults go into the process the case names and no other: the keeper and
// the instances it starts after a crash inherit the daemon's environment,
// and the preload tells them apart by their command line.
//
// Time: every step is covered, but a run of calls of one kind with the
// same detail is kept at its first and last call only, and the keeper is
// only killed, not made to fail calls (a failed read of a link is retried
// or ends that link, which its death covers). The whole campaign runs in a
// few minutes.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include "handover_channel.hpp"
#include "keeper_protocol.hpp"
#include "reboot/reboot_util.hpp"

namespace lu::reboot_test {
namespace {

// A reboot, an upgrade of the daemon, a session's release.
enum class Campaign { LiveUpdate, Upgrade, Release };

struct Step {
    std::string call;
    int nth = 0;
    std::string detail;
};

struct Fault {
    std::string role;  // "old", "next" or "keeper"
    Step step;
    std::string action;  // "kill", an errno name, "short", "ctrunc"
    // A release's kill before the instance told the keeper the session is
    // gone: the client never learns whether a close was served, so the
    // session may come back.
    bool victim_may_return = false;
};

// The faults worth making at a call: SIGKILL always, and the errors that
// call really returns.
std::vector<std::string> actions_for(const Step& s) {
    std::vector<std::string> a{"kill"};
    auto add = [&](std::initializer_list<const char*> more) { a.insert(a.end(), more.begin(), more.end()); };
    if (s.call == "sendmsg") add({"EINTR", "ENOBUFS"});
    if (s.call == "recvmsg") {
        add({"EINTR", "ENOMEM"});
        if (s.detail.find(" 0 fds") == std::string::npos) add({"ctrunc"});
    }
    if (s.call == "write") add({"EINTR", "ENOSPC", "short"});
    if (s.call == "pread") add({"EINTR", "EIO", "short"});
    if (s.call == "memfd_create") add({"EMFILE", "ENOMEM"});
    if (s.call == "socketpair") add({"EMFILE"});
    if (s.call == "accept4") add({"EMFILE", "ECONNABORTED"});
    if (s.call == "connect") add({"ECONNREFUSED", "EINTR"});
    if (s.call == "epoll_ctl") add({"ENOMEM"});
    if (s.call == "epoll_wait" || s.call == "poll") add({"EINTR"});
    if (s.call == "close") add({"EINTR"});
    if (s.call == "fcntl") add({s.detail == "dupfd" ? "EMFILE" : "EBUSY"});
    if (s.call == "posix_spawn") add({"EAGAIN", "ENOMEM"});
    return a;
}

// What the campaign preserves: "bulk" needs two fd batches on the channel
// (253 per message), "small" a few, "victim" is closed by the release
// campaign.
const std::vector<std::pair<std::string, int>> kSessions{{"bulk", 260}, {"small", 2}, {"victim", 1}};

Bytes content_of(const std::string& session, uint64_t token) {
    std::string s = session + "/" + std::to_string(token);
    return Bytes(s.begin(), s.end());
}

// A case's scratch directory: the arm file and the trace.
struct Env {
    std::string dir;
    ~Env() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::string arm() const { return dir + "/armed"; }
    std::string trace() const { return dir + "/trace"; }
};

// liveupdated with the sysfault library preloaded, configured for one fault
// (or none, to trace). Only the daemon gets the library: the environment is
// set for its spawn and restored at once.
std::unique_ptr<DaemonProcess> start_daemon(const Env& env, const std::string& role,
                                            const std::string& spec) {
    std::map<std::string, std::string> vars{{"LD_PRELOAD", LU_SYSFAULT_LIB},
                                            {"LU_SYSFAULT_ARM", env.arm()},
                                            {"LU_SYSFAULT_ROLE", role},
                                            {"LU_SYSFAULT_TRACE", env.trace()},
                                            {"LU_SYSFAULT", spec}};
    // Under ASan the preload comes before the sanitizer's runtime: allowed.
    std::string asan = getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "";
    vars["ASAN_OPTIONS"] = asan + (asan.empty() ? "" : ":") + "verify_asan_link_order=0";
    std::map<std::string, std::optional<std::string>> saved;
    for (auto& [k, v] : vars) {
        const char* old = getenv(k.c_str());
        saved[k] = old ? std::optional<std::string>(old) : std::nullopt;
        setenv(k.c_str(), v.c_str(), 1);
    }
    auto d = std::make_unique<DaemonProcess>();
    for (auto& [k, v] : saved) {
        if (v) setenv(k.c_str(), v->c_str(), 1);
        else unsetenv(k.c_str());
    }
    return d;
}

// The client side: the control fd, the session fds and what they preserve.
struct Client {
    Fd ctl;
    std::map<std::string, Fd> sessions;
};

::testing::AssertionResult populate(Client* c) {
    c->ctl = Fd(lu_open());
    if (!c->ctl.ok()) return ::testing::AssertionFailure() << "lu_open: " << strerror(-c->ctl.get());
    for (auto& [name, nfiles] : kSessions) {
        Fd s(lu_create_session(c->ctl.get(), name.c_str()));
        if (!s.ok()) return ::testing::AssertionFailure() << "create " << name << ": " << s.get();
        for (int t = 1; t <= nfiles; t++) {
            Fd m = make_memfd("campaign", content_of(name, t));
            int r = lu_preserve_fd(s.get(), m.get(), t);
            if (r != 0) return ::testing::AssertionFailure() << "preserve " << name << "/" << t << ": " << r;
        }
        c->sessions[name] = std::move(s);
    }
    return ::testing::AssertionSuccess();
}

// Does any instance still hold the admin listener? Refused: none does (a
// listener in flight on the channel still counts, and accepts).
bool listener_held(const std::string& dir) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s/admin", dir.c_str());
    Fd s(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    return connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 || errno != ECONNREFUSED;
}

// The serving instance's status, waiting a little for one to answer (a
// next instance may still be starting); null at once if nobody can.
json serving_status(DaemonProcess& d) {
    for (int i = 0; i < 300 && listener_held(d.dir()); i++) {
        json s = d.status();
        if (!s.is_null()) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

// The expected sessions, as the serving instance's status lists them.
std::string check_listed(const json& st, const std::vector<std::string>& names, const char* direction) {
    if (st.value("gate", "") != "open") return "the gate is " + st.value("gate", "?");
    for (auto& [name, nfiles] : kSessions) {
        bool want = std::find(names.begin(), names.end(), name) != names.end();
        json s = find_session(st, name, direction);
        if (want && s.is_null()) return "session " + name + " is missing";
        if (!want && !s.is_null()) return "session " + name + " was not released";
        if (want && s["files"].size() != static_cast<size_t>(nfiles))
            return "session " + name + " has " + std::to_string(s["files"].size()) + " files";
    }
    return "";
}

// The daemon's status once an instance other than `gone` serves (a crash
// being recovered: the keeper holds the listeners, so the request waits in
// their backlog meanwhile); null if none does within the bound.
json status_after_crash(DaemonProcess& d, pid_t gone) {
    for (int i = 0; i < 1000; i++) {
        json s = d.status();
        if (!s.is_null() && s.value("pid", -1) != gone) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

// Retrieves every session from the (new) serving instance, checks every
// file's content, finishes it and preserves the files again into a new
// outgoing session of the same name: the state as it was, one epoch on.
std::string retrieve_all(Client* c, const std::vector<std::string>& names) {
    c->sessions.clear();
    c->ctl = Fd(lu_open());
    if (!c->ctl.ok()) return "lu_open: " + std::string(strerror(-c->ctl.get()));
    for (auto& [name, nfiles] : kSessions) {
        if (std::find(names.begin(), names.end(), name) == names.end()) continue;
        Fd in(lu_retrieve_session(c->ctl.get(), name.c_str()));
        if (!in.ok()) return "retrieve session " + name + ": " + strerror(-in.get());
        std::vector<Fd> files;
        for (int t = 1; t <= nfiles; t++) {
            Fd f(lu_retrieve_fd(in.get(), t));
            if (!f.ok()) return "retrieve " + name + "/" + std::to_string(t) + ": " + strerror(-f.get());
            if (contents(f.get()) != content_of(name, t))
                return "content of " + name + "/" + std::to_string(t) + " differs";
            files.push_back(std::move(f));
        }
        if (int r = lu_finish(in.get()); r != 0) return "finish " + name + ": " + strerror(-r);
        Fd out(lu_create_session(c->ctl.get(), name.c_str()));
        if (!out.ok()) return "create " + name + " again: " + strerror(-out.get());
        for (int t = 1; t <= nfiles; t++)
            if (int r = lu_preserve_fd(out.get(), files[t - 1].get(), t); r != 0)
                return "preserve " + name + "/" + std::to_string(t) + " again: " + strerror(-r);
        c->sessions[name] = std::move(out);
    }
    return "";
}

// The sessions a crash brought back must be these, as incoming ones, every
// file's bytes intact; they are then retrieved and preserved again.
std::string check_recovered(const json& st, Client* c, const std::vector<std::string>& names) {
    if (std::string why = check_listed(st, names, "incoming"); !why.empty()) return why;
    return retrieve_all(c, names);
}

// Once a keeper protects the state again (not `dead_keeper`, if one was
// killed: -1 if none was), SIGKILL of the serving instance must be recovered from, every
// session intact: what the keeper's death left is still protected.
std::string later_crash_recovers(DaemonProcess& d, Client* c, const std::vector<std::string>& names,
                                 int64_t dead_keeper) {
    json st = wait_status(d, [&](const json& s) {
        return s["keeper"].value("protecting", false) && s["keeper"].value("pid", int64_t{-1}) != dead_keeper;
    });
    if (!st["keeper"].value("protecting", false)) return "no new keeper protects the state: " + st.dump();
    pid_t serving = st.value("pid", -1);
    int64_t crashes = st.value("crashes_recovered", int64_t{0});
    int64_t epoch = st.value("epoch", int64_t{-1});
    if (serving <= 0 || kill(serving, SIGKILL) != 0) return "cannot kill the serving instance";
    json after = status_after_crash(d, serving);
    if (after.is_null()) return "the crash was not recovered";
    if (after.value("crashes_recovered", int64_t{0}) != crashes + 1 || after.value("epoch", int64_t{-1}) != epoch + 1)
        return "the recovered instance does not count the crash: " + after.dump();
    if (std::string why = check_recovered(after, c, names); !why.empty()) return "after the crash: " + why;
    return "";
}

struct Result {
    // "rolled back", "committed", "released" (the release campaign: the
    // daemon serves on, the closed session is gone, the others intact),
    // "recovered" (an instance died and the keeper started the next, which
    // serves the state as it was, one epoch on), "lost", "not reached"
    // (the call was not made in this run), or "BROKEN: why".
    std::string outcome;
    bool ok = true;
};

// The daemon's open fds once it is idle: a request on a session waits until
// whatever it was doing (closing an admin connection, say) is done.
size_t settled_fds(pid_t pid, int session) {
    session_name(session);
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
        (void)e;
        n++;
    }
    return n;
}

// The calls the instance made while armed, in order.
std::vector<Step> read_trace(const Env& env) {
    std::vector<Step> steps;
    std::ifstream in(env.trace());
    Step s;
    while (in >> s.call >> s.nth && std::getline(in, s.detail)) {
        s.detail.erase(0, s.detail.find_first_not_of(' '));
        steps.push_back(s);
    }
    return steps;
}

// One case: start, populate, arm, do the step, disarm, judge.
Result run_case(Campaign campaign, const Fault& f, std::vector<Step>* trace_out = nullptr) {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {  // instances orphaned by an earlier kill
    }
    char tmpl[] = "/tmp/lu-fault-XXXXXX";
    Env env{mkdtemp(tmpl)};
    std::string spec = f.action.empty() ? "" : f.step.call + ":" + std::to_string(f.step.nth) + ":" + f.action;
    auto d = start_daemon(env, f.role, spec);
    Client c;
    if (auto r = populate(&c); !r) return {"BROKEN: set-up: " + std::string(r.message()), false};
    json st0 = d->status();
    pid_t old_pid = st0.value("pid", -1);
    int64_t epoch0 = st0.value("epoch", -1);
    int64_t crashes0 = st0.value("crashes_recovered", int64_t{0});
    int64_t keeper0 = st0["keeper"].value("pid", int64_t{-1});
    std::vector<std::string> names{"bulk", "small", "victim"};
    std::string reply;
    int rc = 0;

    // The status reply is sent before its connection is closed: one more
    // request, on a session, waits for that close, so the daemon is idle
    // when the counting starts and each run counts the same calls.
    if (session_name(c.sessions["small"].get()) != "small") return {"BROKEN: set-up: no answer", false};
    const size_t fds_before = settled_fds(old_pid, c.sessions["small"].get());
    { std::ofstream(env.arm()); }
    if (campaign != Campaign::Release) {
        // The timeout is a liveness bound: no case waits for it.
        rc = DaemonProcess::ctl(
            {campaign == Campaign::Upgrade ? "upgrade" : "reboot", "--json", "--timeout", "10"}, &reply);
    } else {
        c.sessions.erase("victim");
        names.pop_back();
        // Wait until the release happened (or the daemon is gone).
        for (int i = 0; i < 300; i++) {
            json st = d->status();
            if (st.is_null() || find_session(st, "victim", "outgoing").is_null()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    unlink(env.arm().c_str());

    Result res;
    auto broken = [&](const std::string& why) { return Result{"BROKEN: " + why, false}; };
    json st = serving_status(*d);
    std::vector<Step> trace = read_trace(env);
    if (trace_out) *trace_out = trace;
    bool reached = f.action.empty() || std::any_of(trace.begin(), trace.end(), [&](const Step& s) {
                       return s.call == f.step.call && s.nth == f.step.nth;
                   });
    if (st.is_null()) {
        res.outcome = "lost";
    } else if (st.value("crashes_recovered", int64_t{0}) > crashes0) {
        // An instance died and the keeper started the next: from the old
        // instance's generation (epoch0 + 1), or from a live update's next
        // instance's once it committed (its epoch + 1).
        res.outcome = "recovered";
        int64_t epoch = st.value("epoch", int64_t{-1});
        int64_t next_epoch = campaign == Campaign::LiveUpdate ? epoch0 + 1 : epoch0;
        if (st.value("pid", -1) == old_pid) return broken("a crash was recovered, yet the old instance serves");
        if (st.value("crashes_recovered", int64_t{0}) != crashes0 + 1)
            return broken("more than one crash was recovered: " + st.dump());
        if (epoch != epoch0 + 1 && epoch != next_epoch + 1)
            return broken("recovered at epoch " + std::to_string(epoch) + ", from " + std::to_string(epoch0));
        if (f.victim_may_return && !find_session(st, "victim", "incoming").is_null()) names.push_back("victim");
        if (std::string why = check_recovered(st, &c, names); !why.empty()) return broken(why);
    } else if (st.value("pid", -1) == old_pid && st.value("epoch", -1) == epoch0) {
        res.outcome = campaign == Campaign::Release ? "released" : "rolled back";
        if (campaign != Campaign::Release && rc == 0)
            return broken("liveupdatectl reported success, but the old instance still serves");
        if (std::string why = check_listed(st, names, "outgoing"); !why.empty()) return broken(why);
        for (auto& [name, fd] : c.sessions)
            if (session_name(fd.get()) != name) return broken("session " + name + " does not answer");
        // Nothing leaked: a failed update leaves the fds as they were; a
        // release closes the session's socket and its one file.
        size_t want = fds_before - (campaign == Campaign::Release ? 2 : 0);
        if (size_t now = settled_fds(old_pid, c.sessions["small"].get()); now != want)
            return broken("the daemon has " + std::to_string(now) + " fds, " + std::to_string(want) +
                          " expected");
    } else if (campaign == Campaign::Upgrade && st.value("epoch", -1) == epoch0) {
        // Upgraded: the same connections, served by the next binary.
        res.outcome = "committed";
        bool old_killed = f.role == "old" && f.action == "kill" && reached;
        if (!old_killed && rc != 0) return broken("committed, but liveupdatectl said: " + reply);
        if (std::string why = check_listed(st, names, "outgoing"); !why.empty()) return broken(why);
        for (auto& [name, fd] : c.sessions)
            if (session_name(fd.get()) != name) return broken("session " + name + " does not answer");
        Fd probe(lu_create_session(c.ctl.get(), "probe"));
        if (!probe.ok()) return broken("the control fd does not answer: " + std::string(strerror(-probe.get())));
    } else if (campaign != Campaign::Upgrade && st.value("epoch", -1) == epoch0 + 1) {
        res.outcome = "committed";
        // The old instance survived to answer: it must have said so.
        bool old_killed = f.role == "old" && f.action == "kill" && reached;
        if (!old_killed && rc != 0) return broken("committed, but liveupdatectl said: " + reply);
        if (std::string why = check_listed(st, names, "incoming"); !why.empty()) return broken(why);
        if (std::string why = retrieve_all(&c, names); !why.empty()) return broken(why);
    } else {
        return broken("unexpected state after the fault: " + st.dump());
    }
    if (!reached) res.outcome = "not reached";

    // A later live update succeeds, and carries every session intact.
    if (res.outcome != "lost") {
        if (int r = d->reboot(); r != 0) return broken("the later live update failed: exit " + std::to_string(r));
        json after = serving_status(*d);
        if (std::string why = check_listed(after, names, "incoming"); !why.empty())
            return broken("after the later live update: " + why);
        if (std::string why = retrieve_all(&c, names); !why.empty())
            return broken("after the later live update: " + why);
    }
    // The keeper's death left the state protected: a new keeper holds it,
    // and a crash of the daemon now is recovered from.
    const bool keeper_killed = f.role == "keeper" && f.action == "kill" && reached;
    if (f.role == "keeper" && res.outcome != "lost")
        if (std::string why = later_crash_recovers(*d, &c, names, keeper_killed ? keeper0 : -1); !why.empty())
            return broken("a later crash: " + why);
    return res;
}

// The steps of a clean run, as the role's instance made them. Repeats of a
// step with the same detail (one close per preserved fd) are kept once, at
// their first and last occurrence.
std::vector<Step> steps_of(Campaign campaign, const std::string& role) {
    std::vector<Step> all;
    Result r = run_case(campaign, Fault{role, {}, ""}, &all);
    EXPECT_TRUE(r.ok) << "clean run: " << r.outcome;
    std::vector<Step> steps;
    for (size_t i = 0; i < all.size(); i++) {
        bool same_prev = i > 0 && all[i - 1].call == all[i].call && all[i - 1].detail == all[i].detail;
        bool same_next = i + 1 < all.size() && all[i + 1].call == all[i].call &&
                         all[i + 1].detail == all[i].detail;
        if (!(same_prev && same_next)) steps.push_back(all[i]);
    }
    return steps;
}

// Where a release is recorded with the keeper: the DROP of the victim's two
// records (its session and its one file). Its index among the steps, or -1.
int release_recorded_at(const std::vector<Step>& steps) {
    const std::string drop = std::to_string(sizeof(KeeperMsg) + 2 * sizeof(uint64_t)) + " bytes, 0 fds";
    for (size_t i = 0; i < steps.size(); i++)
        if (steps[i].call == "sendmsg" && steps[i].detail == drop) return static_cast<int>(i);
    return -1;
}

void run_campaign(Campaign campaign, const std::string& role) {
    std::vector<Step> steps = steps_of(campaign, role);
    ASSERT_FALSE(steps.empty()) << "the clean run counted no calls";
    int dropped_at = campaign == Campaign::Release ? release_recorded_at(steps) : -1;
    if (campaign == Campaign::Release) {
        ASSERT_GE(dropped_at, 0) << "the clean release sent the keeper no DROP";
    }
    std::map<std::string, int> totals;
    std::ostringstream table;
    table << "\n" << (campaign == Campaign::LiveUpdate ? "live update"
                      : campaign == Campaign::Upgrade  ? "upgrade"
                                                       : "session release")
          << ", faults in the " << role << (role == "keeper" ? "" : " instance")
          << ": step x fault -> outcome\n";
    for (size_t i = 0; i < steps.size(); i++) {
        const Step& s = steps[i];
        table << "  " << std::left << std::setw(40) << (s.call + " #" + std::to_string(s.nth) + " (" + s.detail + ")");
        std::vector<std::string> actions = role == "keeper" ? std::vector<std::string>{"kill"} : actions_for(s);
        for (const std::string& action : actions) {
            // LU_FAULT_CASE=role:call:nth:action reruns one case (to debug it).
            std::string id = role + ":" + s.call + ":" + std::to_string(s.nth) + ":" + action;
            if (getenv("LU_FAULT_CASE") && id != getenv("LU_FAULT_CASE")) continue;
            auto t0 = std::chrono::steady_clock::now();
            Result r = run_case(campaign, Fault{role, s, action, static_cast<int>(i) <= dropped_at});
            // With a keeper no instance's death loses the state; the
            // keeper's may, if the instance dies with it.
            if (r.outcome == "lost") {
                if (role == "keeper") r.outcome = "lost (allowed: keeper)";
                else r.ok = false;
            }
            // Progress, as each case ends (the table comes at the end).
            std::cerr << "[ case ] " << role << " " << s.call << " #" << s.nth << " " << action << ": "
                      << r.outcome << " ("
                      << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
                      << " ms)" << std::endl;
            EXPECT_TRUE(r.ok) << role << " " << s.call << " #" << s.nth << " (" << s.detail << ") "
                              << action << ": " << r.outcome;
            table << "  " << action << ": " << r.outcome;
            totals[r.ok ? r.outcome : "FAILED"]++;
        }
        table << "\n";
    }
    table << "  totals:";
    for (auto& [k, v] : totals) table << "  " << k << " " << v;
    std::cout << table.str() << std::endl;
}

TEST(FaultCampaign, LiveUpdateFaultsInTheOldInstance) { run_campaign(Campaign::LiveUpdate, "old"); }
TEST(FaultCampaign, LiveUpdateFaultsInTheNextInstance) { run_campaign(Campaign::LiveUpdate, "next"); }
TEST(FaultCampaign, UpgradeFaultsInTheOldInstance) { run_campaign(Campaign::Upgrade, "old"); }
TEST(FaultCampaign, UpgradeFaultsInTheNextInstance) { run_campaign(Campaign::Upgrade, "next"); }
TEST(FaultCampaign, SessionReleaseFaults) { run_campaign(Campaign::Release, "old"); }
TEST(FaultCampaign, LiveUpdateKillsTheKeeper) { run_campaign(Campaign::LiveUpdate, "keeper"); }

// The keeper killed while nothing happens: the daemon starts another, which
// holds the state as it was, so a crash of the daemon then loses nothing.
TEST(FaultCampaign, KeeperKilledAtRest) {
    char tmpl[] = "/tmp/lu-fault-XXXXXX";
    Env env{mkdtemp(tmpl)};
    auto d = start_daemon(env, "keeper", "");
    Client c;
    ASSERT_TRUE(populate(&c));
    json st0 = d->status();
    int64_t keeper0 = st0["keeper"].value("pid", int64_t{-1});
    ASSERT_GT(keeper0, 0) << st0.dump();
    ASSERT_EQ(kill(static_cast<pid_t>(keeper0), SIGKILL), 0);
    json st = wait_status(*d, [&](const json& s) {
        return s["keeper"].value("protecting", false) && s["keeper"].value("pid", int64_t{-1}) != keeper0;
    });
    ASSERT_TRUE(st["keeper"].value("protecting", false)) << "no new keeper: " << st.dump();
    EXPECT_EQ(st.value("pid", -1), st0.value("pid", -1));
    std::vector<std::string> names{"bulk", "small", "victim"};
    EXPECT_EQ(check_listed(st, names, "outgoing"), "");
    for (auto& [name, fd] : c.sessions) EXPECT_EQ(session_name(fd.get()), name);
    EXPECT_EQ(later_crash_recovers(*d, &c, names, keeper0), "");
    // And the recovered daemon updates as any other.
    ASSERT_EQ(d->reboot(), 0);
    EXPECT_EQ(check_listed(serving_status(*d), names, "incoming"), "");
    EXPECT_EQ(retrieve_all(&c, names), "");
}

}  // namespace
}  // namespace lu::reboot_test
