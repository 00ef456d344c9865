// The engine. Comments cite the kernel behaviour they reproduce (spec §N) or
// the bug they avoid (lessons BN). Every path that can fail undoes its own
// work in exact reverse order before it returns (lessons rule 15).
#include "engine.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lu {

struct FlbState {
    Flb* flb = nullptr;
    int users = 0;  // handlers linked to it
    struct {
        uint64_t count = 0;  // preserved files of linked handlers, all sessions
        std::vector<uint8_t> data;
        void* obj = nullptr;
    } outgoing;
    struct {
        bool present = false;  // the previous instance handed this FLB over
        uint64_t count = 0;    // loaded from the handover up front (not spec §5.4's defect)
        std::vector<uint8_t> data;
        void* obj = nullptr;
        int retrieve_status = 0;  // 0 never, 1 ok, <0 failed (lessons B8, for FLBs)
        bool finished = false;
    } incoming;
};

struct FileHandlerEntry {
    std::unique_ptr<FileHandler> ops;
    std::vector<FlbState*> flbs;  // link order
};

namespace {

bool valid_compatible(std::string_view c) {
    return !c.empty() && c.size() < kCompatibleLength && c.find('\0') == std::string_view::npos;
}

// The name as the kernel compares it: strncmp over 64 bytes.
std::string name_of(std::span<const uint8_t, kSessionNameLength> raw) {
    const char* p = reinterpret_cast<const char*>(raw.data());
    return std::string(p, strnlen(p, kSessionNameLength));
}

}  // namespace

Engine::Engine(Limits limits) : limits_(limits) {}

// Instance teardown is not a release: sessions still open when the engine
// goes away belong to the next instance (or are lost with this process), so
// no handler callback runs here. Owned fds close with their UniqueFd.
Engine::~Engine() = default;

int Engine::register_file_handler(std::unique_ptr<FileHandler> fh) {
    if (!fh || !valid_compatible(fh->compatible())) return -EINVAL;
    for (auto& e : handlers_)
        if (e->ops->compatible() == fh->compatible()) return -EEXIST;
    auto entry = std::make_unique<FileHandlerEntry>();
    entry->ops = std::move(fh);
    handlers_.push_back(std::move(entry));
    return 0;
}

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

// ---- sessions (spec §2.5, §2.6, §3) ----

int Engine::create_session(std::span<const uint8_t, kSessionNameLength> raw, Session** out) {
    // v7.2: empty or unterminated names are refused before anything else.
    size_t len = strnlen(reinterpret_cast<const char*>(raw.data()), kSessionNameLength);
    if (len == 0 || len >= kSessionNameLength) return -EINVAL;
    if (deserialize_err_) return -EIO;
    if (gate_closed_) return -EAGAIN;
    // The kernel grows its block set before the duplicate check, so a full
    // set answers ENOSPC even for a duplicate name (spec §2.5 step 4).
    if (outgoing_.size() >= limits_.sessions) return -ENOSPC;
    std::string name = name_of(raw);
    if (outgoing_by_name_.count(name)) return -EEXIST;

    Session& s = outgoing_.emplace_back();
    s.name_ = std::move(name);
    s.direction_ = Direction::Outgoing;
    s.self_ = std::prev(outgoing_.end());
    outgoing_by_name_.emplace(s.name_, &s);
    *out = &s;
    return 0;
}

int Engine::retrieve_session(std::span<const uint8_t, kSessionNameLength> raw, Session** out) {
    // No name validation on this path (spec §2.6): an invalid name just
    // matches nothing.
    if (deserialize_err_) return -EIO;
    if (gate_closed_) return -EAGAIN;
    auto it = incoming_by_name_.find(name_of(raw));
    if (it == incoming_by_name_.end()) return -ENOENT;
    Session* s = it->second;
    if (s->retrieved_) return -EINVAL;
    s->retrieved_ = true;
    *out = s;
    return 0;
}

int Engine::release_session(Session* s) {
    // The kernel's release waits on the gate; the daemon retries this after
    // the reboot unwinds, and never needs to after it commits.
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ == Direction::Outgoing) {
        unpreserve_files(*s);
        remove_session(*s);
        return 0;
    }
    // A retrieved incoming session: implicit FINISH. If a handler refuses,
    // the session stays listed, orphaned (spec §3.5, lessons B16).
    int err = finish_files(*s);
    if (err) {
        s->orphaned_ = true;
        return err;
    }
    remove_session(*s);
    return 0;
}

void Engine::remove_session(Session& s) {
    if (s.direction_ == Direction::Outgoing) {
        outgoing_by_name_.erase(s.name_);
        outgoing_.erase(s.self_);
    } else {
        incoming_by_name_.erase(s.name_);
        incoming_.erase(s.self_);
    }
}

// ---- files (spec §4) ----

int Engine::preserve_fd(Session* s, uint64_t token, UniqueFd fd, bool fd_room) {
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ != Direction::Outgoing) return -EINVAL;
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

    FileId id;
    int err = fh->ops->get_id(fd.get(), &id);
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
    f->managed = true;
    managed_.emplace(id, f.get());
    s->by_token_.emplace(token, f.get());
    s->files_.push_back(std::move(f));
    nr_files_++;
    return 0;
}

int Engine::retrieve_fd(Session* s, uint64_t token, int* fd) {
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ != Direction::Incoming) return -EINVAL;
    auto it = s->by_token_.find(token);
    if (it == s->by_token_.end()) return -ENOENT;
    LuoFile& f = *it->second;
    // A failed retrieve is permanent (lessons B8); a successful one hands
    // out the same open file description every time (spec §2.8).
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

int Engine::finish_session(Session* s) {
    if (gate_closed_) return -EAGAIN;
    if (s->direction_ != Direction::Incoming) return -EINVAL;
    return finish_files(*s);
}

void Engine::managed_erase(LuoFile& f) {
    if (f.managed) managed_.erase(f.id);
    f.managed = false;
}

// Close of an outgoing session: last file first (spec §4.5). The identity
// recorded at preserve time is used, so no handler code runs after the
// handler's own teardown (lessons B5).
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

// FINISH (spec §4.6): all can_finish in order, then finish last to first,
// for every file, retrieved or not.
int Engine::finish_files(Session& s) {
    if (s.files_.empty()) return 0;
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

std::string_view Engine::compatible_of(const LuoFile& f) const { return f.fh->ops->compatible(); }

// ---- FLB (spec §5) ----

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
    FlbState* st = flb_state(flb);
    if (!st) return -ENOENT;
    *obj = st->outgoing.obj;
    return 0;
}

int Engine::flb_get_incoming(Flb* flb, void** obj) {
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

void Engine::flb_finish_file(FileHandlerEntry* fh) {
    for (size_t i = fh->flbs.size(); i-- > 0;) flb_put_incoming(fh->flbs[i]->flb);
}

// ---- the reboot (spec §3.6, §4.4; lessons rule 1) ----

int Engine::session_freeze(Session& s) {
    for (size_t k = 0; k < s.files_.size(); k++) {
        LuoFile& f = *s.files_[k];
        f.args.file = f.file.get();
        int err = f.fh->ops->freeze(f.args);
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

int Engine::reboot_freeze() {
    if (gate_closed_) return -EBUSY;
    gate_closed_ = true;
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
            return err;
        }
    }
    return 0;
}

void Engine::reboot_unfreeze() {
    if (!gate_closed_) return;
    for (auto it = outgoing_.rbegin(); it != outgoing_.rend(); ++it)
        session_unfreeze(*it, it->files_.size());
    gate_closed_ = false;
}

Handover Engine::handover() const {
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
            struct stat st {};
            fstat(f->file.get(), &st);
            h.image.fd_slots.push_back(fd_slot_of(st));
            h.fds.push_back(f->file.get());
        }
    }
    // FLBs after sessions, so their counts are final (lessons rule 7).
    for (const auto& st : flbs_) {
        if (st->outgoing.count == 0) continue;
        h.image.flbs.push_back(FlbImage{std::string(st->flb->compatible()), st->outgoing.data,
                                        st->outgoing.count});
    }
    return h;
}

// ---- the next instance (spec §3.7, §4.7; lessons rule 8) ----

int Engine::deserialize(HandoverImage image, std::vector<UniqueFd> fds) {
    have_incoming_ = true;
    liveupdate_num_ = image.liveupdate_num;
    int err = 0;
    for (FlbImage& fi : image.flbs) {
        for (auto& st : flbs_) {
            if (st->flb->compatible() != fi.compatible) continue;
            st->incoming.present = true;
            st->incoming.count = fi.count;
            st->incoming.data = std::move(fi.data);
        }
    }
    for (SessionImage& si : image.sessions) {
        if (incoming_by_name_.count(si.name)) {
            err = -EEXIST;
            break;
        }
        Session& s = incoming_.emplace_back();
        s.name_ = si.name;
        s.direction_ = Direction::Incoming;
        s.self_ = std::prev(incoming_.end());
        incoming_by_name_.emplace(s.name_, &s);
        for (FileImage& fimg : si.files) {
            auto h = std::find_if(handlers_.begin(), handlers_.end(), [&](auto& e) {
                return e->ops->compatible() == fimg.compatible;
            });
            if (h == handlers_.end()) {
                err = -ENOENT;
                break;
            }
            if (fimg.fd_slot >= fds.size() || !fds[fimg.fd_slot] || s.by_token_.count(fimg.token)) {
                err = -EINVAL;
                break;
            }
            auto f = std::make_unique<LuoFile>();
            f->fh = h->get();
            f->token = fimg.token;
            f->args.handler = f->fh->ops.get();
            f->args.serialized_data = std::move(fimg.data);
            f->preserved = std::move(fds[fimg.fd_slot]);
            // Unlike the kernel (which inserts at retrieve), the identity is
            // managed from now on: here the process that preserved the object
            // may still hold it, and must not preserve it again until this
            // incoming file is finished.
            err = f->fh->ops->get_id(f->preserved.get(), &f->id);
            if (!err && managed_.count(f->id)) err = -EBUSY;
            if (err) {
                leaked_fds_.push_back(std::move(f->preserved));
                break;
            }
            f->managed = true;
            managed_.emplace(f->id, f.get());
            s.by_token_.emplace(f->token, f.get());
            s.files_.push_back(std::move(f));
            nr_files_++;
        }
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

}  // namespace lu
