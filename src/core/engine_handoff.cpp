// SPDX-License-Identifier: Apache-2.0
// The hand-off of one service's sessions to its next version, inside this
// instance (docs/handoff.md). The kernel has no such thing: it is its
// reboot narrowed to a few sessions, with the kernel's own seams. The
// freeze and unfreeze are the reboot's (engine_reboot.cpp); the next owner
// meets an incoming session (the view) and the incoming rules of
// engine_session.cpp and engine_file.cpp: RETRIEVE_SESSION once,
// RETRIEVE_FD by token through the handler's retrieve, FINISH. The state
// of a session is Session::handoff_ (None, Offered, Taken) and its view.
#include <fcntl.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

int Engine::handoff_begin(std::span<Session* const> sessions, bool dry_run) {
    if (sessions.empty()) return -EINVAL;
    if (deserialize_err_) return -EIO;
    if (gate_closed_) return -EBUSY;
    std::unordered_set<const Session*> seen;
    for (Session* s : sessions) {
        assert(s);
        if (s->gone_ || s->direction_ != Direction::Outgoing || !seen.insert(s).second) return -EINVAL;
        if (s->handoff_ != HandoffState::None) return -EBUSY;
        if (incoming_by_name_.count(s->name_)) return -EEXIST;
    }
    // Each view's file is one more fd of ours, counted as any file (the
    // daemon's budget). Then those fds: the only step that can fail for
    // want of resources, before anything is frozen.
    size_t more = 0;
    for (Session* s : sessions) more += s->files_.size();
    if (nr_files_ + more > limits_.files) return -ENOSPC;
    std::vector<std::vector<UniqueFd>> dups(sessions.size());
    for (size_t i = 0; i < sessions.size(); i++) {
        for (const auto& f : sessions[i]->files_) {
            UniqueFd d(fcntl(f->file.get(), F_DUPFD_CLOEXEC, 0));
            if (!d) return -errno;
            dups[i].push_back(std::move(d));
        }
    }
    // The freeze, as the reboot's, but of these sessions only. An agent's
    // freeze fault is armed for the next reboot, not for this.
    const long armed = std::exchange(freeze_fault_at_, -1);
    for (size_t i = 0; i < sessions.size(); i++) {
        int err = session_freeze(*sessions[i]);
        if (err) {
            while (i-- > 0) session_unfreeze(*sessions[i], sessions[i]->files_.size());
            freeze_fault_at_ = armed;
            return err;
        }
    }
    freeze_fault_at_ = armed;
    // The views: what a reboot's deserialize would make of each session.
    for (size_t i = 0; i < sessions.size(); i++) {
        Session& src = *sessions[i];
        Session& v = insert_session(Direction::Incoming, src.name_);
        for (size_t k = 0; k < src.files_.size(); k++) {
            const LuoFile& from = *src.files_[k];
            auto f = std::make_unique<LuoFile>();
            f->fh = from.fh;
            f->token = from.token;
            f->args.handler = from.fh->ops.get();
            f->args.serialized_data = from.args.serialized_data;
            f->preserved = std::move(dups[i][k]);
            // Not managed: the source's file is, and stays so until the outcome.
            v.by_token_.emplace(f->token, f.get());
            v.files_.push_back(std::move(f));
            nr_files_++;
        }
        v.source_ = &src;
        src.view_ = &v;
        src.handoff_ = HandoffState::Offered;
        src.dry_run_ = dry_run;
        src.owner_closed_ = false;
    }
    return 0;
}

// The view was finished (its handlers' finish ran): the source's files
// left with the next owner, as a reboot's outgoing files leave with the
// old kernel. No handler callback runs for them (the kernel's old side
// never gets one), but the FLBs' outgoing counts and the managed set give
// them back. Cannot fail.
void Engine::handoff_commit(Session& view) {
    Session& src = *view.source_;
    view.source_ = nullptr;  // an ordinary incoming session, finished
    while (!src.files_.empty()) {
        LuoFile& f = *src.files_.back();
        flb_unpreserve_file(f.fh, f.fh->flbs.size());
        managed_erase(f);
        src.by_token_.erase(f.token);
        src.files_.pop_back();
        nr_files_--;
    }
    src.view_ = nullptr;
    src.handoff_ = HandoffState::None;
    src.dry_run_ = false;
    src.last_handoff_ = HandoffOutcome::Committed;
    src.last_reason_ = 0;
    if (src.owner_closed_) {
        remove_session(src);
        return;
    }
    make_gone(src);
}

bool Engine::handoff_rollback(Session* src, HandoffOutcome outcome, int reason) {
    assert(src && src->handoff_ != HandoffState::None && src->view_);
    assert(outcome == HandoffOutcome::RolledBack || outcome == HandoffOutcome::Validated);
    // The view first (made last): what it handed out stays with whoever
    // holds it; its own fds close. No finish runs: it did not commit.
    Session& v = *src->view_;
    v.source_ = nullptr;
    nr_files_ -= v.files_.size();
    v.by_token_.clear();
    v.files_.clear();
    if (v.retrieved_) make_gone(v);
    else remove_session(v);
    // Then the freeze, undone as the reboot's unwind does.
    session_unfreeze(*src, src->files_.size());
    src->view_ = nullptr;
    src->handoff_ = HandoffState::None;
    src->dry_run_ = false;
    src->last_handoff_ = outcome;
    src->last_reason_ = reason;
    if (!src->owner_closed_) return true;
    // Its fd was closed during the hand-off: the release deferred till now.
    unpreserve_files(*src);
    remove_session(*src);
    return false;
}

void Engine::make_gone(Session& s) {
    forget(s);  // committed away: the next owner has its files
    std::list<Session>& from = s.direction_ == Direction::Outgoing ? outgoing_ : incoming_;
    (s.direction_ == Direction::Outgoing ? outgoing_by_name_ : incoming_by_name_).erase(s.name_);
    gone_sessions_.splice(gone_sessions_.end(), from, s.self_);  // s.self_ stays valid
    s.gone_ = true;
}

std::string Engine::handoffs_in_progress() const {
    std::string names;
    for (const Session& s : outgoing_) {
        if (s.handoff_ == HandoffState::None) continue;
        if (!names.empty()) names += ", ";
        names += s.name_;
    }
    return names;
}

const Session* Engine::handoff_source_of(std::span<const uint8_t, kSessionNameLength> raw) const {
    const char* p = reinterpret_cast<const char*>(raw.data());
    auto it = incoming_by_name_.find(std::string(p, strnlen(p, kSessionNameLength)));
    return it == incoming_by_name_.end() ? nullptr : it->second->source_;
}

}  // namespace lu
