// SPDX-License-Identifier: Apache-2.0
// The fault campaign. For each step of a live update, and of a
// session release, the old or the next instance is killed there (SIGKILL),
// or the libc call it makes there fails (EINTR, ENOMEM, EMFILE, ENOSPC,
// a short write, fds that do not fit). After each, the system must be
// rolled back with every session intact, or committed with every session
// intact, and a later live update must succeed.
//
// The steps are found, not listed: a clean run is traced first (the
// sysfault preload library, tests/faults/preload) and every call it counted
// becomes a step, so a new call in the daemon is covered without editing
// this file. Each test prints its table: step x fault -> outcome.
//
// One outcome is allowed to lose the sessions: SIGKILL of the instance that
// is their only holder. The old instance is the only holder until its last
// fd batch is in the channel (from then the next instance has everything
// and serves); a daemon at rest, releasing a session, is the only holder
// too. That is the kernel's own limit (a panic before kexec loses
// everything) and docs/live-update.md says so; the campaign checks that the
// window is no wider than that.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include "handover_channel.hpp"
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
    std::string role;  // "old" or "next"
    Step step;
    std::string action;  // "kill", an errno name, "short", "ctrunc"
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

struct Result {
    // "rolled back", "committed", "released" (the release campaign: the
    // daemon serves on, the closed session is gone, the others intact),
    // "lost", "not reached" (the call was not made in this run), or
    // "BROKEN: why".
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

// The sendmsg after which the holder of the state changes. The old instance
// stops being the only holder once its last fd batch is sent on the channel;
// the next instance becomes it once its SERVING (its last message on the
// channel) is sent: the old one then exits, and before that it rolls back
// if the next dies. Channel messages are told apart by their size.
int holder_send(const std::vector<Step>& steps, const std::string& role) {
    const std::string channel_msg = std::to_string(sizeof(ChannelMsg)) + " bytes, ";
    int last = 0;
    for (auto& s : steps)
        if (s.call == "sendmsg" && s.detail.rfind(channel_msg, 0) == 0 &&
            (role == "next" || s.detail != channel_msg + "0 fds"))
            last = s.nth;
    return last;
}

void run_campaign(Campaign campaign, const std::string& role) {
    std::vector<Step> steps = steps_of(campaign, role);
    ASSERT_FALSE(steps.empty()) << "the clean run counted no calls";
    int holder_changes = campaign != Campaign::Release ? holder_send(steps, role) : -1;
    std::map<std::string, int> totals;
    std::ostringstream table;
    table << "\n" << (campaign == Campaign::LiveUpdate ? "live update"
                      : campaign == Campaign::Upgrade  ? "upgrade"
                                                       : "session release")
          << ", faults in the " << role << " instance: step x fault -> outcome\n";
    bool seen_holder_send = false;
    for (const Step& s : steps) {
        table << "  " << std::left << std::setw(40) << (s.call + " #" + std::to_string(s.nth) + " (" + s.detail + ")");
        // A kill *at* the sendmsg that changes the holder comes before it.
        bool only_holder = campaign == Campaign::Release || (role == "old") != seen_holder_send;
        if (s.call == "sendmsg" && s.nth == holder_changes) seen_holder_send = true;
        for (const std::string& action : actions_for(s)) {
            // LU_FAULT_CASE=role:call:nth:action reruns one case (to debug it).
            std::string id = role + ":" + s.call + ":" + std::to_string(s.nth) + ":" + action;
            if (getenv("LU_FAULT_CASE") && id != getenv("LU_FAULT_CASE")) continue;
            auto t0 = std::chrono::steady_clock::now();
            Result r = run_case(campaign, Fault{role, s, action});
            // Progress, as each case ends (the table comes at the end).
            std::cerr << "[ case ] " << role << " " << s.call << " #" << s.nth << " " << action << ": "
                      << r.outcome << " ("
                      << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
                      << " ms)" << std::endl;
            bool lost_allowed = action == "kill" && only_holder;
            if (r.outcome == "lost" && !lost_allowed) r.ok = false;
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

}  // namespace
}  // namespace lu::reboot_test
