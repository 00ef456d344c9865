// SPDX-License-Identifier: Apache-2.0
// File-Lifecycle-Bound data: registration, the outgoing and the incoming
// reference counts (the kernel's luo_flb.c). docs/kernel-semantics.md#flb
// states each rule and its tests.
#include <algorithm>
#include <cassert>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

// docs/kernel-semantics.md#flb-register
int Engine::register_flb(FileHandler* fh, Flb* flb) {
    if (!flb || !valid_compatible(flb->compatible())) return -EINVAL;
    auto it = std::find_if(handlers_.begin(), handlers_.end(),
                           [&](auto& e) { return e->ops.get() == fh; });
    if (it == handlers_.end()) return -EINVAL;
    FileHandlerEntry& entry = **it;
    FlbState* st = flb_state(flb);
    if (st && std::find(entry.flbs.begin(), entry.flbs.end(), st) != entry.flbs.end())
        return -EEXIST;
    if (!st) {  // first link: join the global list
        if (flbs_.size() >= kMaxFlbs) return -ENOSPC;
        for (auto& other : flbs_)
            if (other->flb->compatible() == flb->compatible()) return -EEXIST;
        flbs_.push_back(std::make_unique<FlbState>());
        st = flbs_.back().get();
        st->flb = flb;
    }
    st->users++;
    entry.flbs.push_back(st);
    return 0;
}

FlbState* Engine::flb_state(Flb* flb) {
    for (auto& st : flbs_)
        if (st->flb == flb) return st.get();
    return nullptr;
}

// docs/kernel-semantics.md#flb-outgoing: one reference per preserved file on
// each linked FLB, in link order; the first one preserves the FLB.
int Engine::flb_preserve_file(FileHandlerEntry* fh) {
    for (size_t i = 0; i < fh->flbs.size(); i++) {
        FlbState* st = fh->flbs[i];
        if (st->outgoing.count == 0) {
            FlbOpArgs a;
            a.flb = st->flb;
            int err = st->flb->preserve(a);
            if (err) {
                flb_unpreserve_file(fh, i);
                return err;
            }
            st->outgoing.data = std::move(a.data);
            st->outgoing.obj = a.obj;
        }
        st->outgoing.count++;
    }
    return 0;
}

// Drops this file's reference on the first nr_flbs FLBs, in reverse link order.
void Engine::flb_unpreserve_file(FileHandlerEntry* fh, size_t nr_flbs) {
    for (size_t i = nr_flbs; i-- > 0;) {
        FlbState* st = fh->flbs[i];
        if (--st->outgoing.count == 0) {
            FlbOpArgs a;
            a.flb = st->flb;
            a.data = std::move(st->outgoing.data);
            a.obj = st->outgoing.obj;
            st->flb->unpreserve(a);
            st->outgoing.data.clear();
            st->outgoing.obj = nullptr;
        }
    }
}

int Engine::flb_get_outgoing(Flb* flb, void** obj) {
    assert(obj);
    FlbState* st = flb_state(flb);
    if (!st) return -ENOENT;
    *obj = st->outgoing.obj;
    return 0;
}

// docs/kernel-semantics.md#flb-incoming: the first get retrieves, every get
// takes a reference; a failed retrieve is final.
int Engine::flb_get_incoming(Flb* flb, void** obj) {
    assert(obj);
    FlbState* st = flb_state(flb);
    if (!st) return -ENOENT;
    if (st->incoming.finished) return -ENODATA;
    if (!st->incoming.present) return have_incoming_ ? -ENOENT : -ENODATA;
    if (st->incoming.retrieve_status < 0) return st->incoming.retrieve_status;
    if (st->incoming.retrieve_status == 0) {
        FlbOpArgs a;
        a.flb = flb;
        a.data = st->incoming.data;
        int err = flb->retrieve(a);
        if (err) {
            st->incoming.retrieve_status = err < 0 ? err : -EINVAL;
            return st->incoming.retrieve_status;
        }
        st->incoming.obj = a.obj;
        st->incoming.retrieve_status = 1;
    }
    st->incoming.count++;
    *obj = st->incoming.obj;
    return 0;
}

void Engine::flb_put_incoming(Flb* flb) {
    FlbState* st = flb_state(flb);
    if (!st || !st->incoming.present || st->incoming.finished || st->incoming.count == 0) return;
    if (--st->incoming.count > 0) return;
    // Last reference: finish exactly once, retrieving first if nobody did.
    if (st->incoming.retrieve_status == 0) {
        FlbOpArgs a;
        a.flb = flb;
        a.data = st->incoming.data;
        int err = flb->retrieve(a);
        st->incoming.retrieve_status = err ? (err < 0 ? err : -EINVAL) : 1;
        st->incoming.obj = a.obj;
    }
    if (st->incoming.retrieve_status == 1) {
        FlbOpArgs a;
        a.flb = flb;
        a.obj = st->incoming.obj;
        flb->finish(a);
    }
    st->incoming.obj = nullptr;
    st->incoming.data.clear();
    st->incoming.finished = true;
}

// A finished file gives back one reference on each linked FLB, in reverse
// link order.
void Engine::flb_finish_file(FileHandlerEntry* fh) {
    for (size_t i = fh->flbs.size(); i-- > 0;) flb_put_incoming(fh->flbs[i]->flb);
}

}  // namespace lu
