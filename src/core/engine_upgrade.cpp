// SPDX-License-Identifier: Apache-2.0
// The upgrade of the daemon: the engine's whole state, as it stands, handed
// to the next binary, which takes it over as if it had always held it. The
// kernel has no such step (a kexec starts the next kernel from the
// serialized outgoing side only); here both directions move, nothing is
// frozen, and the epoch stays. docs/live-update.md#upgrade states the
// rules.
//
// What cannot travel as bytes is rebuilt from them: an FLB's object (its
// outgoing one, or an incoming one already retrieved) is made again by the
// FLB's retrieve() from the data its preserve() wrote, as the next kernel
// would; a file handler's private_data is not kept (no handler here uses
// it between its own calls).
#include <sys/stat.h>

#include <algorithm>
#include <cassert>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

namespace {

// One file of a session image: its record, its fd slot, its fd. `known`:
// the slot read at preserve, if the file has one (type 0: read it now).
void add_file(HandoverImage& img, SessionImage& si, std::vector<int>& fds, std::string_view compatible,
              uint64_t token, const std::vector<uint8_t>& data, int fd, const FdSlot& known) {
    FileImage& fi = si.files.emplace_back();
    fi.compatible = std::string(compatible);
    fi.token = token;
    fi.data = data;
    fi.fd_slot = static_cast<uint32_t>(img.fd_slots.size());
    if (known.type) {
        img.fd_slots.push_back(known);
    } else {
        struct stat st {};
        fstat(fd, &st);
        img.fd_slots.push_back(fd_slot_of(st));
    }
    fds.push_back(fd);
}

}  // namespace

Engine::UpgradeState Engine::upgrade_state() const {
    UpgradeState st;
    UpgradeImage& img = st.image;
    img.liveupdate_num = liveupdate_num_;
    img.have_incoming = have_incoming_;
    img.deserialize_err = deserialize_err_;
    img.outgoing.liveupdate_num = img.incoming.liveupdate_num = liveupdate_num_;
    st.slot_fds.reserve(nr_files_);
    for (const Session& s : outgoing_) {
        SessionImage& si = img.outgoing.sessions.emplace_back();
        si.name = s.name_;
        for (const auto& f : s.files_)
            add_file(img.outgoing, si, st.slot_fds, f->fh->ops->compatible(), f->token,
                     f->args.serialized_data, f->file.get(), f->slot);
    }
    // An incoming file is one fd in every state: the retrieved file once
    // retrieved, the handed-over one before (or after a failed retrieve).
    for (const Session& s : incoming_) {
        SessionImage& si = img.incoming.sessions.emplace_back();
        si.name = s.name_;
        img.incoming_since_ns.push_back(s.incoming_since_ns_);
        img.incoming_flags.push_back((s.retrieved_ ? kUpgradeSessionRetrieved : 0) |
                                     (s.orphaned_ ? kUpgradeSessionOrphaned : 0) |
                                     (s.refuse_finish_once_ ? kUpgradeSessionRefuseFinishOnce : 0));
        for (const auto& f : s.files_) {
            const bool retrieved = f->args.retrieve_status == 1;
            add_file(img.incoming, si, st.slot_fds, f->fh->ops->compatible(), f->token,
                     f->args.serialized_data, retrieved ? f->file.get() : f->preserved.get(),
                     f->slot);  // type 0 once retrieved: read it
            img.incoming_status.push_back(f->args.retrieve_status);
        }
    }
    for (const auto& fs : flbs_) {
        const std::string compatible(fs->flb->compatible());
        if (fs->outgoing.count)
            img.outgoing.flbs.push_back({compatible, fs->outgoing.data, fs->outgoing.count});
        if (fs->incoming.present) {
            img.incoming.flbs.push_back({compatible, fs->incoming.data, fs->incoming.count});
            img.incoming_flb_status.push_back({fs->incoming.retrieve_status, fs->incoming.finished});
        }
    }
    for (const UniqueFd& fd : leaked_fds_) st.leaked_fds.push_back(fd.get());
    img.leaked_fds = leaked_fds_.size();
    return st;
}

// An FLB's object, made again from its data in this process.
int Engine::rebuild_flb_object(FlbState& fs, const std::vector<uint8_t>& data, void** obj) {
    FlbOpArgs a;
    a.flb = fs.flb;
    a.data = data;
    int err = fs.flb->retrieve(a);
    if (err) return err < 0 ? err : -EINVAL;
    *obj = a.obj;
    return 0;
}

// The file joins its session and the managed set, owning fd.
int Engine::adopt_file(Session& s, const FileImage& fi, const FdSlot& verified, UniqueFd fd,
                       int retrieve_status) {
    FileHandlerEntry* fh = find_handler(fi.compatible);
    if (!fh) return -ENOENT;
    auto f = std::make_unique<LuoFile>();
    f->fh = fh;
    f->token = fi.token;
    f->args.handler = fh->ops.get();
    f->args.serialized_data = fi.data;
    f->args.retrieve_status = retrieve_status;
    const int raw = fd.get();
    if (s.direction_ == Direction::Outgoing || retrieve_status == 1) f->file = std::move(fd);
    else f->preserved = std::move(fd);
    // The slot check_upgrade_fds compared with this very fd: the
    // managed-set key, and an outgoing file's fd slot at the next reboot.
    f->slot = verified;
    if (int err = fh->ops->get_id(raw, f->slot, &f->id)) return err;
    if (managed_.count(f->id)) return -EBUSY;
    add_managed_file(s, std::move(f));
    return 0;
}

int Engine::adopt(const UpgradeImage& img, std::vector<UniqueFd> slot_fds,
                  std::vector<UniqueFd> leaked, std::vector<Session*>* outgoing,
                  std::vector<Session*>* incoming) {
    assert(!have_incoming_ && outgoing_.empty() && incoming_.empty() && outgoing && incoming);
    assert(slot_fds.size() == img.outgoing.fd_slots.size() + img.incoming.fd_slots.size());
    liveupdate_num_ = img.liveupdate_num;
    have_incoming_ = img.have_incoming;
    deserialize_err_ = img.deserialize_err;
    leaked_fds_ = std::move(leaked);

    // 1. Outgoing sessions, files in preservation order.
    for (const SessionImage& si : img.outgoing.sessions) {
        Session& s = insert_session(Direction::Outgoing, si.name);
        outgoing->push_back(&s);
        for (const FileImage& fi : si.files)
            if (int err = adopt_file(s, fi, img.outgoing.fd_slots[fi.fd_slot],
                                     std::move(slot_fds[fi.fd_slot]), 0))
                return err;
    }
    // 2. Their FLBs: a count here and no FLB to hold it would lose state.
    for (const FlbImage& bi : img.outgoing.flbs) {
        auto it = std::find_if(flbs_.begin(), flbs_.end(),
                               [&](auto& fs) { return fs->flb->compatible() == bi.compatible; });
        if (it == flbs_.end()) return -ENOENT;
        FlbState& fs = **it;
        if (int err = rebuild_flb_object(fs, bi.data, &fs.outgoing.obj)) return err;
        fs.outgoing.count = bi.count;
        fs.outgoing.data = bi.data;
    }
    // 3. Incoming sessions, with their retrieve states.
    const size_t base = img.outgoing.fd_slots.size();
    size_t file = 0;
    for (size_t i = 0; i < img.incoming.sessions.size(); i++) {
        const SessionImage& si = img.incoming.sessions[i];
        Session& s = insert_session(Direction::Incoming, si.name);
        incoming->push_back(&s);
        const uint32_t flags = img.incoming_flags[i];
        s.retrieved_ = flags & kUpgradeSessionRetrieved;
        s.orphaned_ = flags & kUpgradeSessionOrphaned;
        s.refuse_finish_once_ = flags & kUpgradeSessionRefuseFinishOnce;
        s.incoming_since_ns_ = img.incoming_since_ns[i];
        for (const FileImage& fi : si.files)
            if (int err = adopt_file(s, fi, img.incoming.fd_slots[fi.fd_slot],
                                     std::move(slot_fds[base + fi.fd_slot]), img.incoming_status[file++]))
                return err;
    }
    // 4. Incoming FLBs; one no handler here links is ignored, as at deserialize.
    for (size_t i = 0; i < img.incoming.flbs.size(); i++) {
        const FlbImage& bi = img.incoming.flbs[i];
        for (auto& fs : flbs_) {
            if (fs->flb->compatible() != bi.compatible) continue;
            fs->incoming.present = true;
            fs->incoming.count = bi.count;
            fs->incoming.data = bi.data;
            fs->incoming.retrieve_status = img.incoming_flb_status[i].retrieve_status;
            fs->incoming.finished = img.incoming_flb_status[i].finished;
            if (fs->incoming.retrieve_status == 1 && !fs->incoming.finished)
                if (int err = rebuild_flb_object(*fs, bi.data, &fs->incoming.obj)) return err;
        }
    }
    return 0;
}

}  // namespace lu
