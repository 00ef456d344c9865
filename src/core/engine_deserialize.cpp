// SPDX-License-Identifier: Apache-2.0
// The next instance: the handover turned back into incoming sessions, files
// and FLB state (the kernel's luo_session_deserialize, luo_file_deserialize).
// docs/kernel-semantics.md#next-instance states each rule and its tests.
#include <cassert>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

// docs/kernel-semantics.md#deserialize-failure: the first error stops the
// walk and is recorded here, on the one path every failure takes.
int Engine::deserialize(HandoverImage image, std::vector<UniqueFd> fds) {
    assert(!have_incoming_);
    have_incoming_ = true;
    liveupdate_num_ = image.liveupdate_num;
    deserialize_flbs(image.flbs);
    managed_.reserve(managed_.size() + fds.size());
    int err = 0;
    for (SessionImage& si : image.sessions) {
        err = deserialize_session(si, image.fd_slots, fds);
        if (err) break;
    }
    if (err) {
        // Note on error handling (as the kernel's): undoing a partial restore
        // is error-prone and buys nothing, the instance is already broken.
        // What was restored stays, unreachable; what was not is kept open
        // (leaked) so no preserved data is destroyed. Every later open of the
        // control device fails with EIO until a cold restart.
        for (auto& fd : fds)
            if (fd) leaked_fds_.push_back(std::move(fd));
        deserialize_err_ = err;
    }
    return err;
}

void Engine::refuse_incoming(int err, std::vector<UniqueFd> fds) {
    assert(!have_incoming_ && err < 0);
    have_incoming_ = true;
    for (auto& fd : fds)
        if (fd) leaked_fds_.push_back(std::move(fd));
    deserialize_err_ = err;
}

// Each registered FLB the previous instance handed over, with its count
// loaded now (docs/kernel-semantics.md#flb-incoming). An FLB not registered
// here is ignored: nothing here could ask for it.
void Engine::deserialize_flbs(std::vector<FlbImage>& flbs) {
    for (FlbImage& fi : flbs) {
        for (auto& st : flbs_) {
            if (st->flb->compatible() != fi.compatible) continue;
            st->incoming.present = true;
            st->incoming.count = fi.count;
            st->incoming.data = std::move(fi.data);
        }
    }
}

// The session joins the incoming list before its files are restored: on a
// failure it stays there, with the files restored so far.
int Engine::deserialize_session(SessionImage& si, const std::vector<FdSlot>& slots,
                                std::vector<UniqueFd>& fds) {
    if (incoming_by_name_.count(si.name)) return -EEXIST;
    Session& s = insert_session(Direction::Incoming, si.name);
    s.files_.reserve(si.files.size());
    s.by_token_.reserve(si.files.size());
    for (FileImage& fimg : si.files)
        if (int err = deserialize_file(s, fimg, slots, fds)) return err;
    return 0;
}

int Engine::deserialize_file(Session& s, FileImage& fimg, const std::vector<FdSlot>& slots,
                             std::vector<UniqueFd>& fds) {
    FileHandlerEntry* fh = find_handler(fimg.compatible);
    if (!fh) return -ENOENT;
    if (fimg.fd_slot >= fds.size() || fimg.fd_slot >= slots.size() || !fds[fimg.fd_slot] ||
        s.by_token_.count(fimg.token))
        return -EINVAL;
    auto f = std::make_unique<LuoFile>();
    f->fh = fh;
    f->token = fimg.token;
    f->args.handler = fh->ops.get();
    f->args.serialized_data = std::move(fimg.data);
    f->preserved = std::move(fds[fimg.fd_slot]);
    // Unlike the kernel (which inserts at retrieve), the identity is managed
    // from now on: here the process that preserved the object may still hold
    // it, and must not preserve it again until this incoming file is
    // finished (docs/kernel-semantics.md#file-managed-set). The slot is the
    // fd's own type and inode: check_handover_fds compared them with it.
    f->slot = slots[fimg.fd_slot];
    int err = fh->ops->get_id(f->preserved.get(), f->slot, &f->id);
    if (!err && managed_.count(f->id)) err = -EBUSY;
    if (err) {
        leaked_fds_.push_back(std::move(f->preserved));
        return err;
    }
    add_managed_file(s, std::move(f));
    return 0;
}

}  // namespace lu
