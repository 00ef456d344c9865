// SPDX-License-Identifier: Apache-2.0
// Sessions: create, retrieve, release, finish (the kernel's luo_session.c).
// docs/kernel-semantics.md#sessions states each rule and its tests.
#include <cassert>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

namespace {

// The name as the kernel compares it: strncmp over 64 bytes.
std::string name_of(std::span<const uint8_t, kSessionNameLength> raw) {
    const char* p = reinterpret_cast<const char*>(raw.data());
    return std::string(p, strnlen(p, kSessionNameLength));
}

// The name as luo_session_alloc stores it: strscpy into 64 bytes, so an
// unterminated one keeps its first 63 (kernels before v7.2 created those).
std::string stored_name(std::span<const uint8_t, kSessionNameLength> raw) {
    const char* p = reinterpret_cast<const char*>(raw.data());
    return std::string(p, strnlen(p, kSessionNameLength - 1));
}

uint64_t monotonic_now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

// docs/kernel-semantics.md#session-create: the checks in the kernel's order.
int Engine::create_session(std::span<const uint8_t, kSessionNameLength> raw, Session** out) {
    assert(out);
    size_t len = strnlen(reinterpret_cast<const char*>(raw.data()), kSessionNameLength);
    if (profile_.session_name_checked && (len == 0 || len >= kSessionNameLength)) return -EINVAL;
    if (deserialize_err_) return -EIO;
    if (gate_closed_) return -EAGAIN;
    // The limit before EEXIST: v7.2 grows its block set first, earlier
    // releases checked LUO_SESSION_MAX first (luo_session_insert).
    if (outgoing_.size() >= limits_.sessions) return -profile_.sessions_errno;
    std::string name = stored_name(raw);
    if (outgoing_by_name_.count(name)) return -EEXIST;
    *out = &insert_session(Direction::Outgoing, std::move(name));
    if (log_) log_->session_kept(**out);
    return 0;
}

// docs/kernel-semantics.md#session-retrieve: no name validation on this
// path, an invalid name just matches nothing.
int Engine::retrieve_session(std::span<const uint8_t, kSessionNameLength> raw, Session** out) {
    assert(out);
    if (deserialize_err_) return -EIO;
    if (gate_closed_) return -EAGAIN;
    auto it = incoming_by_name_.find(name_of(raw));
    if (it == incoming_by_name_.end()) return -ENOENT;
    Session* s = it->second;
    if (s->retrieved_) return -EINVAL;
    s->retrieved_ = true;
    if (s->source_) s->source_->handoff_ = HandoffState::Taken;
    *out = s;
    return 0;
}

// docs/kernel-semantics.md#session-release
int Engine::release_session(Session* s) {
    assert(s);
    // Gone (engine_handoff.cpp): nothing left but the node.
    if (s->gone_) {
        remove_session(*s);
        return 0;
    }
    // The kernel's release waits on the gate; the daemon retries this after
    // the reboot unwinds, and never needs to after it commits.
    if (gate_closed_) return -EAGAIN;
    // Handed off: the next owner has it now; the outcome decides (a
    // rollback releases it then, a commit moves it away).
    if (s->handoff_ != HandoffState::None) {
        s->owner_closed_ = true;
        return 0;
    }
    // A view closed unfinished: the hand-off rolls back, the view goes.
    if (s->source_) {
        handoff_rollback(s->source_, HandoffOutcome::RolledBack, ECONNRESET);
        remove_session(*s);
        return 0;
    }
    if (s->direction_ == Direction::Outgoing) {
        unpreserve_files(*s);
        remove_session(*s);
        return 0;
    }
    // A retrieved incoming session: implicit FINISH. If a handler refuses,
    // the session stays listed, orphaned.
    int err = finish_files(*s);
    if (err) {
        s->orphaned_ = true;
        return err;
    }
    remove_session(*s);
    return 0;
}

// docs/kernel-semantics.md#session-finish
int Engine::finish_session(Session* s) {
    assert(s);
    if (s->gone_) return -ESTALE;
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ != Direction::Incoming) {
        // Before v7.2 (no session-type check) luo_file_finish ran on an
        // outgoing session: 0 with no files; with files it finished
        // outgoing data, a kernel bug not reproduced (EINVAL, as v7.2).
        if (!profile_.session_type_checked && s->files_.empty()) return 0;
        return -EINVAL;
    }
    // The view of a hand-off: its FINISH is the commit (engine_handoff.cpp).
    if (s->source_ && s->source_->dry_run_) return -ECANCELED;
    int err = finish_files(*s);
    if (err) return err;
    forget(*s);  // finished: a crash must not bring it back
    if (s->source_) handoff_commit(*s);
    return 0;
}

void Engine::forget(Session& s) {
    if (!s.log_id) return;
    if (log_) log_->session_forgotten(s);
    s.log_id = 0;
}

Session& Engine::insert_session(Direction direction, std::string name) {
    bool out = direction == Direction::Outgoing;
    std::list<Session>& list = out ? outgoing_ : incoming_;
    Session& s = list.emplace_back();
    s.name_ = std::move(name);
    s.direction_ = direction;
    s.self_ = std::prev(list.end());
    if (!out) s.incoming_since_ns_ = monotonic_now_ns();
    (out ? outgoing_by_name_ : incoming_by_name_).emplace(s.name_, &s);
    return s;
}

void Engine::remove_session(Session& s) {
    forget(s);
    if (s.gone_) {
        gone_sessions_.erase(s.self_);
        return;
    }
    if (s.direction_ == Direction::Outgoing) {
        outgoing_by_name_.erase(s.name_);
        outgoing_.erase(s.self_);
    } else {
        incoming_by_name_.erase(s.name_);
        incoming_.erase(s.self_);
    }
}

}  // namespace lu
