// SPDX-License-Identifier: Apache-2.0
// The reboot: the gate, freeze and its unwind, and the handover of the
// frozen state (the kernel's liveupdate_reboot and luo_session_serialize).
// docs/kernel-semantics.md#reboot states each rule and its tests.
#include <cassert>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

int Engine::session_freeze(Session& s) {
    for (size_t k = 0; k < s.files_.size(); k++) {
        LuoFile& f = *s.files_[k];
        f.args.file = f.file.get();
        int err = injected_freeze_error();
        if (!err) err = f.fh->ops->freeze(f.args);
        if (err) {
            session_unfreeze(s, k);
            return err < 0 ? err : -EINVAL;
        }
    }
    return 0;
}

// Unfreezes the first nr_frozen files, in forward order as the kernel does.
void Engine::session_unfreeze(Session& s, size_t nr_frozen) {
    for (size_t k = 0; k < nr_frozen; k++) {
        LuoFile& f = *s.files_[k];
        f.args.file = f.file.get();
        f.fh->ops->unfreeze(f.args);
    }
}

// docs/kernel-semantics.md#reboot-freeze
int Engine::reboot_freeze() {
    if (gate_closed_) return -EBUSY;
    // A hand-off's sessions are frozen for their next owner, not for the
    // next instance (the daemon refuses the reboot before this).
    if (!handoffs_in_progress().empty()) return -EBUSY;
    gate_closed_ = true;
    freeze_seq_ = 0;
    for (auto it = outgoing_.begin(); it != outgoing_.end(); ++it) {
        int err = session_freeze(*it);
        if (err) {
            // The failing session unfroze its own files; walk back over the
            // earlier ones, then reopen the gate.
            while (it != outgoing_.begin()) {
                --it;
                session_unfreeze(*it, it->files_.size());
            }
            gate_closed_ = false;
            freeze_fault_at_ = -1;
            return err;
        }
    }
    freeze_fault_at_ = -1;
    return 0;
}

// docs/kernel-semantics.md#reboot-unwind: the kernel has no such step, a
// kexec cannot fail after LUO; starting a userspace instance can.
void Engine::reboot_unfreeze() {
    if (!gate_closed_) return;
    for (auto it = outgoing_.rbegin(); it != outgoing_.rend(); ++it)
        session_unfreeze(*it, it->files_.size());
    gate_closed_ = false;
}

// The kernel drops them silently at the next kexec; an operator wants to know.
std::vector<std::string> Engine::unretrieved_incoming() const {
    std::vector<std::string> names;
    for (const Session& s : incoming_)
        if (!s.retrieved_) names.push_back(s.name_);
    return names;
}

// docs/kernel-semantics.md#reboot-serialize
Handover Engine::handover() const {
    assert(gate_closed_);
    Handover h;
    h.image.liveupdate_num = liveupdate_num_ + 1;
    h.image.sessions.reserve(outgoing_.size());
    h.fds.reserve(nr_files_);
    h.image.fd_slots.reserve(nr_files_);
    for (const Session& s : outgoing_) {
        SessionImage& si = h.image.sessions.emplace_back();
        si.name = s.name_;
        si.files.reserve(s.files_.size());
        for (const auto& f : s.files_) {
            FileImage& fi = si.files.emplace_back();
            fi.compatible = std::string(f->fh->ops->compatible());
            fi.token = f->token;
            fi.data = f->args.serialized_data;
            fi.fd_slot = static_cast<uint32_t>(h.fds.size());
            h.image.fd_slots.push_back(f->slot);
            h.fds.push_back(f->file.get());
        }
    }
    // FLBs after sessions, so their counts are final.
    for (const auto& st : flbs_) {
        if (st->outgoing.count == 0) continue;
        h.image.flbs.push_back(FlbImage{std::string(st->flb->compatible()), st->outgoing.data,
                                        st->outgoing.count});
    }
    return h;
}

}  // namespace lu
