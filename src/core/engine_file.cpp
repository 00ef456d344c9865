// SPDX-License-Identifier: Apache-2.0
// Files: preserve, unpreserve, retrieve, finish, and the managed set (the
// kernel's luo_file.c). docs/kernel-semantics.md#files states each rule and
// its tests. Every path that can fail undoes its own work in exact reverse
// order before it returns.
#include <sys/stat.h>

#include <cassert>
#include <cerrno>
#include <utility>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

// docs/kernel-semantics.md#file-preserve: the checks in the kernel's order.
int Engine::preserve_fd(Session* s, uint64_t token, UniqueFd&& fd, bool fd_room) {
    assert(s);
    if (s->gone_) return -ESTALE;
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ != Direction::Outgoing) return -EINVAL;
    // Handed off (engine_handoff.cpp): frozen until the outcome, as a
    // session behind the reboot's gate.
    if (s->handoff_ != HandoffState::None) return -EAGAIN;
    if (s->by_token_.count(token)) return -EEXIST;
    if (s->files_.size() >= limits_.files_per_session || nr_files_ >= limits_.files || !fd_room)
        return -ENOSPC;
    if (!fd) return -EBADF;

    FileHandlerEntry* fh = nullptr;
    for (auto& e : handlers_) {
        if (e->ops->can_preserve(fd.get())) {
            fh = e.get();
            break;
        }
    }
    if (!fh) return -ENOENT;

    // Read once: they key the managed set (through get_id) and fill the
    // file's fd slot at every reboot, when the gate is closed and time counts.
    struct stat st;
    const FdSlot slot = fstat(fd.get(), &st) == 0 ? fd_slot_of(st) : FdSlot{};
    FileId id;
    int err = fh->ops->get_id(fd.get(), slot, &id);
    if (err) return err;
    if (managed_.count(id)) return -EBUSY;

    err = flb_preserve_file(fh);
    if (err) return err;

    auto f = std::make_unique<LuoFile>();
    f->fh = fh;
    f->token = token;
    f->args.handler = fh->ops.get();
    f->args.file = fd.get();
    // The handler cleans up after itself when preserve fails: no unpreserve.
    err = fh->ops->preserve(f->args);
    if (err) {
        flb_unpreserve_file(fh, fh->flbs.size());
        return err;
    }
    f->file = std::move(fd);
    f->id = id;
    f->slot = slot;
    LuoFile& kept = *f;
    add_managed_file(*s, std::move(f));
    if (log_) log_->file_kept(*s, kept);
    return 0;
}

// The file joins the managed set (by f->id) and its session, in order.
void Engine::add_managed_file(Session& s, std::unique_ptr<LuoFile> f) {
    f->managed = true;
    managed_.emplace(f->id, f.get());
    s.by_token_.emplace(f->token, f.get());
    s.files_.push_back(std::move(f));
    nr_files_++;
}

// docs/kernel-semantics.md#file-retrieve
int Engine::retrieve_fd(Session* s, uint64_t token, int* fd) {
    assert(s && fd);
    if (s->gone_) return -ESTALE;
    if (gate_closed_) return -EAGAIN;
    // Before v7.2 (no session-type check in luo_session_ioctl) an outgoing
    // session's token was looked up too: ENOENT when absent. A token found
    // there had the handler retrieve outgoing data, a kernel bug not
    // reproduced: EINVAL, as v7.2 answers.
    bool outgoing = s->direction_ != Direction::Incoming;
    if (outgoing && profile_.session_type_checked) return -EINVAL;
    auto it = s->by_token_.find(token);
    if (it == s->by_token_.end()) return -ENOENT;
    if (outgoing) return -EINVAL;
    LuoFile& f = *it->second;
    // A failed retrieve is final (docs/kernel-semantics.md#retrieve-is-final);
    // a successful one hands out the same open file description every time.
    if (f.args.retrieve_status < 0) return f.args.retrieve_status;
    if (f.args.retrieve_status == 0) {
        f.args.preserved = f.preserved.get();
        f.args.file = -1;
        int err = f.fh->ops->retrieve(f.args);
        if (err) {
            f.args.file = -1;
            f.args.retrieve_status = err < 0 ? err : -EINVAL;
            return f.args.retrieve_status;
        }
        f.file.reset(f.args.file);
        f.slot = FdSlot{};  // the handed-over fd's; the retrieved file may be another object
        f.args.retrieve_status = 1;
        // The retrieved file takes the handed-over fd's place (as the
        // kernel's retrieve consumes the preserved state): each preserved
        // file is one fd of ours in every state, so the budget derived from
        // RLIMIT_NOFILE holds in the next instance too. Held twice until
        // FINISH, a client retrieving everything at the budget ran us out
        // of fds: its retrieves failed for good (EMFILE), status was refused.
        f.preserved.reset();
    }
    *fd = f.file.get();
    return 0;
}

void Engine::managed_erase(LuoFile& f) {
    if (f.managed) managed_.erase(f.id);
    f.managed = false;
}

// docs/kernel-semantics.md#file-unpreserve: last file first. The identity
// recorded at preserve time leaves the managed set, so no handler code runs
// after the handler's own teardown.
void Engine::unpreserve_files(Session& s) {
    while (!s.files_.empty()) {
        LuoFile& f = *s.files_.back();
        f.args.file = f.file.get();
        f.fh->ops->unpreserve(f.args);
        flb_unpreserve_file(f.fh, f.fh->flbs.size());
        managed_erase(f);
        s.by_token_.erase(f.token);
        s.files_.pop_back();  // closes the engine's fd: the file is the user's again
        nr_files_--;
    }
}

// docs/kernel-semantics.md#file-finish: all can_finish in order, then finish
// last to first, for every file, retrieved or not.
int Engine::finish_files(Session& s) {
    if (s.files_.empty()) return 0;
    // An agent's test asked for a can_finish refusal (engine_faults.cpp).
    if (std::exchange(s.refuse_finish_once_, false)) return -EBUSY;
    for (auto& fp : s.files_) {
        LuoFile& f = *fp;
        f.args.file = f.args.retrieve_status == 1 ? f.file.get() : -1;
        f.args.preserved = f.preserved.get();
        if (!f.fh->ops->can_finish(f.args)) return -EBUSY;
    }
    while (!s.files_.empty()) {
        LuoFile& f = *s.files_.back();
        f.args.file = f.args.retrieve_status == 1 ? f.file.get() : -1;
        f.args.preserved = f.preserved.get();
        f.fh->ops->finish(f.args);
        flb_finish_file(f.fh);
        managed_erase(f);
        s.by_token_.erase(f.token);
        s.files_.pop_back();
        nr_files_--;
    }
    return 0;
}

}  // namespace lu
