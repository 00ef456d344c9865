// SPDX-License-Identifier: Apache-2.0
#include "handoff.hpp"

#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "liveupdate/client.h"
#include "server.hpp"
#include "wire_reply.hpp"

namespace lu {

namespace {

constexpr size_t kEndedKept = 16;  // results kept for a wait() that comes late

UniqueFd pidfd_of(pid_t pid) {
    return UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

}  // namespace

const char* outcome_name(HandoffOutcome o) {
    switch (o) {
        case HandoffOutcome::Committed: return "committed";
        case HandoffOutcome::RolledBack: return "rolled_back";
        case HandoffOutcome::Validated: return "validated";
        case HandoffOutcome::None: break;
    }
    return "none";
}

int Handoffs::begin(const std::vector<Session*>& sessions, const Options& o, uint64_t* id) {
    // What can fail for want of resources comes before the engine freezes.
    UniqueFd pidfd;
    if (o.next_pid > 0 && !(pidfd = pidfd_of(o.next_pid))) return -errno;
    UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!timer) return -errno;
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(o.timeout_ms / 1000);
    its.it_value.tv_nsec = static_cast<long>(o.timeout_ms % 1000) * 1'000'000;
    if (timerfd_settime(timer.get(), 0, &its, nullptr) < 0) return -errno;
    const uint64_t gid = next_id_;
    Conn* tc = server_.add_watch(std::move(timer), [this, gid](Conn&) { end_all(gid, ETIMEDOUT); });
    if (!tc) return -ENOMEM;
    Conn* pc = nullptr;
    if (pidfd) {
        pc = server_.add_watch(std::move(pidfd), [this, gid](Conn&) { end_all(gid, ESRCH); });
        if (!pc) {
            server_.remove(*tc);
            return -ENOMEM;
        }
    }
    int err = server_.engine().handoff_begin(sessions, o.dry_run);
    if (err) {
        if (pc) server_.remove(*pc);
        server_.remove(*tc);
        return err;
    }
    next_id_++;
    Group& g = groups_[gid];
    g.pending = sessions;
    g.timer = tc;
    g.pidfd = pc;
    for (Session* s : sessions) entries_[s] = Entry{gid, o.owner_uid, s->name(), {}};
    spdlog::info("hand-off {}: {} session(s), first \"{}\"{}, timeout {} ms", gid, sessions.size(),
                 sessions[0]->name(), o.dry_run ? " (dry run)" : "", o.timeout_ms);
    *id = gid;
    return 0;
}

int Handoffs::watch_pid(uint64_t id, pid_t pid) {
    auto it = groups_.find(id);
    if (it == groups_.end()) return -ENOENT;
    if (it->second.pidfd) return -EBUSY;
    if (pid <= 0) return -EINVAL;
    UniqueFd pidfd = pidfd_of(pid);
    if (!pidfd) return -errno;
    it->second.pidfd = server_.add_watch(std::move(pidfd), [this, id](Conn&) { end_all(id, ESRCH); });
    return it->second.pidfd ? 0 : -ENOMEM;
}

bool Handoffs::abort(uint64_t id) {
    if (!groups_.count(id)) return false;
    end_all(id, ECANCELED);
    return true;
}

bool Handoffs::wait(uint64_t id, AdminRef to) {
    if (auto it = groups_.find(id); it != groups_.end()) {
        it->second.waiting.push_back(to);
        return true;
    }
    for (auto& [eid, results] : ended_)
        if (eid == id) {
            answer(to, results);
            return true;
        }
    return false;
}

void Handoffs::wait_owner(const Session* source, SessionRef to) {
    entries_.at(source).owners.push_back(to);
}

uid_t Handoffs::owner_uid(const Session* source) const { return entries_.at(source).owner_uid; }

void Handoffs::committed(const Session* source) {
    decided(source, HandoffOutcome::Committed, 0);
}

void Handoffs::end(Session* source, HandoffOutcome outcome, int reason) {
    if (!entries_.count(source) || source->handoff() == HandoffState::None) return;
    server_.engine().handoff_rollback(source, outcome, reason);  // may free `source`
    decided(source, outcome, reason);
}

// The next version exited, or the time is up: first whatever it sent
// before it closed its fds (a FINISH still queued commits), then the rest
// rolls back.
void Handoffs::end_all(uint64_t id, int reason) {
    server_.release_closed_sessions();
    auto it = groups_.find(id);
    if (it == groups_.end()) return;
    std::vector<Session*> pending = it->second.pending;
    for (Session* s : pending) end(s, HandoffOutcome::RolledBack, reason);
}

// `source` is a key here, never dereferenced: it may be gone.
void Handoffs::decided(const Session* source, HandoffOutcome outcome, int reason) {
    auto eit = entries_.find(source);
    if (eit == entries_.end()) return;
    Entry e = std::move(eit->second);
    entries_.erase(eit);
    spdlog::info("hand-off {}: \"{}\" {}{}{}", e.group, e.name, outcome_name(outcome),
                 reason ? ": " : "", reason ? strerror(reason) : "");
    lu_session_handoff_wait w{sizeof w, static_cast<uint32_t>(outcome == HandoffOutcome::Committed    ? LU_HANDOFF_COMMITTED
                                                              : outcome == HandoffOutcome::Validated ? LU_HANDOFF_VALIDATED
                                                                                                     : LU_HANDOFF_ROLLED_BACK),
                              reason, 0};
    for (const SessionRef& o : e.owners) {
        std::vector<uint8_t> arg(sizeof w);
        memcpy(arg.data(), &w, sizeof w);
        arg.resize(std::min<size_t>(o.user_size, sizeof w));
        server_.send_deferred(o.fd, o.serial, wire_reply(0, arg));
    }
    auto git = groups_.find(e.group);
    if (git == groups_.end()) return;
    Group& g = git->second;
    std::erase(g.pending, source);
    g.results.push_back({e.name, outcome, reason});
    if (!g.pending.empty()) return;
    // The last one: the hand-off is over.
    if (g.timer) server_.remove(*g.timer);
    if (g.pidfd) server_.remove(*g.pidfd);
    for (const AdminRef& to : g.waiting) answer(to, g.results);
    ended_.emplace_back(e.group, std::move(g.results));
    if (ended_.size() > kEndedKept) ended_.pop_front();
    groups_.erase(git);
}

void Handoffs::answer(AdminRef to, const std::vector<HandoffResult>& results) {
    nlohmann::json list = nlohmann::json::array();
    bool all_committed = true, all_validated = true;
    for (const HandoffResult& r : results) {
        nlohmann::json j{{"name", r.name}, {"outcome", outcome_name(r.outcome)}};
        if (r.reason) {
            j["errno"] = r.reason;
            j["error"] = strerror(r.reason);
        }
        all_committed = all_committed && r.outcome == HandoffOutcome::Committed;
        all_validated = all_validated && r.outcome == HandoffOutcome::Validated;
        list.push_back(std::move(j));
    }
    nlohmann::json reply{{"ok", all_committed || all_validated},
                         {"outcome", all_committed   ? "committed"
                                     : all_validated ? "validated"
                                                     : "rolled_back"},
                         {"sessions", std::move(list)}};
    if (!all_committed && !all_validated) {
        reply["errno"] = ECANCELED;
        reply["error"] = "the hand-off rolled back: the previous owner still serves";
        for (const HandoffResult& r : results)
            if (r.outcome == HandoffOutcome::RolledBack && r.reason) {
                reply["errno"] = r.reason;
                reply["error"] = std::string("the hand-off rolled back (") + strerror(r.reason) +
                                 "): the previous owner still serves";
                break;
            }
    }
    server_.admin_reply(to, reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace lu
