// SPDX-License-Identifier: Apache-2.0
// The uAPI over the wire: the kernel's checks in the kernel's order
// (luo_ioctl, luo_session_ioctl, copy_struct_from_user), then the engine.
// Replies carry what copy_to_user would write.
#include "uapi_dispatch.hpp"

#include <fcntl.h>
#include <linux/ioctl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "agent_mode.hpp"
#include "handoff.hpp"
#include "liveupdate/client.h"
#include "liveupdate/uapi.h"
#include "server.hpp"
#include "trace.hpp"
#include "wire.h"
#include "wire_reply.hpp"

namespace lu {

namespace {

// copy_struct_from_user and the checks before it, in the kernel's order:
// get_user(size), the command number, the session type, the minimum size,
// the tail, the copy. `type_ok` is the session-type check (true on the
// control device). 0 or -errno; fills u->k and u->user_size.
int copy_struct(const UapiOp& op, uint32_t cmd, uint32_t flags, const std::vector<uint8_t>& arg,
                bool type_ok, Ucmd* u) {
    if (flags & LU_WIRE_FAULT_SIZE) return -EFAULT;  // get_user(size)
    uint32_t usize = 0;
    if (arg.size() >= sizeof usize) memcpy(&usize, arg.data(), sizeof usize);
    if (cmd != op.ioctl_num) return -ENOTTY;  // -ENOIOCTLCMD
    if (!type_ok) return -EINVAL;
    if (usize < op.min_size) return -EINVAL;
    // A non-zero byte past the known struct is E2BIG.
    size_t sent = std::min<size_t>(usize, arg.size());
    for (size_t i = op.size; i < sent; i++)
        if (arg[i]) return -E2BIG;
    if (usize > op.size && (flags & LU_WIRE_TAIL_NONZERO)) return -E2BIG;
    if ((flags & LU_WIRE_FAULT_ARG) || arg.size() < std::min<size_t>(usize, LU_WIRE_MAX_ARG))
        return -EFAULT;
    u->k.assign(op.size, 0);
    memcpy(u->k.data(), arg.data(), std::min<size_t>(usize, op.size));
    u->user_size = usize;
    return 0;
}

std::span<const uint8_t, kSessionNameLength> name_field(const std::vector<uint8_t>& k) {
    return std::span<const uint8_t, kSessionNameLength>(k.data() + 8, kSessionNameLength);
}

uint64_t token_field(const std::vector<uint8_t>& k) {
    uint64_t token;
    memcpy(&token, k.data() + 8, sizeof token);
    return token;
}

// The fd field: the client library writes its own number for the fd it receives.
void set_fd_placeholder(std::vector<uint8_t>& k) {
    int32_t placeholder = -1;
    memcpy(k.data() + 4, &placeholder, sizeof placeholder);
}

}  // namespace

void Server::dispatch(Conn& c, Message& m) {
    // A connection of an epoch a reboot ended: whatever it asks, its
    // session lives in the next epoch now (or was dropped with it).
    if (c.kind == Conn::Kind::Stale) return send_reply(c, errno_reply(ESTALE), -1);
    lu_wire_request req{};
    bool ok = !m.truncated && m.bytes.size() >= sizeof req;
    if (ok) memcpy(&req, m.bytes.data(), sizeof req);
    ok = ok && req.magic == LU_WIRE_MAGIC && (req.flags & ~LU_WIRE_FLAGS_ALL) == 0 &&
         req.arg_len <= LU_WIRE_MAX_ARG && m.bytes.size() == sizeof req + req.arg_len;
    TraceEntry traced = trace_begin(c, m);  // trace.hpp: before the engine takes the fd
    UapiReply rep;
    if (!ok) {
        // Not something an ioctl can produce: a broken or hostile client. It
        // gets an answer and its fds back to the kernel; nothing else moves.
        rep = UapiReply::error(-EPROTO);
    } else {
        std::vector<uint8_t> arg(m.bytes.begin() + sizeof req, m.bytes.end());
        rep = uapi_ioctl(c, req.cmd, req.flags, arg, m.fds);
    }
    m.fds.clear();  // fds nobody asked for go back to the kernel
    trace_end(traced, rep.err);
    if (rep.deferred) return;  // handoff.cpp answers it
    send_reply(c, wire_reply(rep.err, rep.arg, rep.fd >= 0), rep.err ? -1 : rep.fd);
}

// The generic path of luo_ioctl and luo_session_ioctl: the number first
// (its range, whatever the type byte: EINVAL, not ENOTTY), then the struct,
// then the op; what the op leaves in the struct is written back.
UapiReply Server::uapi_ioctl(Conn& c, uint32_t cmd, uint32_t flags, const std::vector<uint8_t>& arg,
                             std::vector<UniqueFd>& fds) {
    assert(c.kind == Conn::Kind::Control || (c.kind == Conn::Kind::Session && c.session));
    const bool control = c.kind == Conn::Kind::Control;
    if (control) fds.clear();  // no control ioctl takes an fd
    // The kernel release decides which numbers exist (GET_NAME from v7.2)
    // and whether the session type is checked (from v7.2): kernel_profile.hpp.
    const KernelProfile& kp = engine_.profile();
    const unsigned nr = _IOC_NR(cmd);
    const UapiOp* op = find_uapi_op(control, nr, agent_mode().strict);
    const bool extension = !control && nr >= LU_CMD_SESSION_EXT_BASE;
    if (!op || (!control && !extension && nr - LIVEUPDATE_CMD_SESSION_BASE >= kp.session_ioctls))
        return UapiReply::error(-EINVAL);
    // Handed off and committed, or rolled back under the next owner: the
    // session is another's now (handoff.hpp). Only the outcome is read.
    if (!control && c.session->gone() && nr != LU_CMD_SESSION_HANDOFF_WAIT)
        return UapiReply::error(-ESTALE);
    Ucmd u{*this, c, {}, 0, fds};
    const bool type_ok = !kp.session_type_checked || !op->direction ||
                         c.session->direction() == *op->direction;
    if (int r = copy_struct(*op, cmd, flags, arg, type_ok, &u)) return UapiReply::error(r);
    UapiReply rep = op->execute(u);
    if (!rep.err && !rep.deferred)
        rep.arg.assign(u.k.begin(), u.k.begin() + std::min<size_t>(u.user_size, u.k.size()));
    return rep;
}

// ---- the control device's ops ----

namespace {

// The session socket is made (and watched) before the engine is asked, as
// the kernel reserves the fd first; it gets its session after.
UapiReply open_session(Ucmd& u, bool create) {
    ConnectionTable& conns = u.server.conns();
    Engine& engine = u.server.engine();
    // At the fd reserve, sessions whose last fd was closed before this
    // request give theirs back first: a close is synchronous for the closer
    // (as for EEXIST below), even when its hangup arrived while this
    // connection was being served. Otherwise a client that closes a session
    // to make room is refused (EMFILE) depending on timing.
    if (conns.fds_exhausted()) u.server.reap_hangups(u.conn);
    UapiReply rep;
    Conn* mine = nullptr;
    int r = conns.new_session_socket(&mine, &rep.owned_fd);
    lu::Session* s = nullptr;
    if (!r) {
        auto open = [&] {
            if (create) return engine.create_session(name_field(u.k), &s);
            // During a hand-off, only its owner's uid (or root) takes it.
            const Session* src = engine.handoff_source_of(name_field(u.k));
            if (src && u.conn.uid != 0 && u.conn.uid != u.server.handoffs().owner_uid(src))
                return -EACCES;
            return engine.retrieve_session(name_field(u.k), &s);
        };
        r = open();
        // The holder of that name (or of the retrieved session) may have
        // closed it already: a close is synchronous for the closer.
        if (((r == -EEXIST && create) || (r == -EINVAL && !create)) && u.server.reap_hangups(u.conn))
            r = open();
    }
    if (r) {
        if (mine) conns.remove(*mine);
        return UapiReply::error(r);
    }
    conns.bind_session(*mine, rep.owned_fd.get(), s);
    mine->uid = u.conn.uid;  // its owner, for a hand-off and for status
    mine->pid = u.conn.pid;
    set_fd_placeholder(u.k);
    rep.fd = rep.owned_fd.get();
    return rep;
}

UapiReply create_session(Ucmd& u) { return open_session(u, true); }
UapiReply retrieve_session(Ucmd& u) { return open_session(u, false); }

// ---- a session's ops ----

// Room for one more fd, sessions closed before this request giving theirs
// back first (see open_session).
bool fd_room(Ucmd& u) {
    ConnectionTable& conns = u.server.conns();
    return !conns.fds_exhausted() || (u.server.reap_hangups(u.conn) && !conns.fds_exhausted());
}

UapiReply preserve_fd(Ucmd& u) {
    UniqueFd fd;
    if (u.fds.size() == 1) fd = std::move(u.fds[0]);
    u.fds.clear();  // more than one fd: none is taken, EBADF
    // An O_PATH fd opens nothing; the kernel's fget refuses it (EBADF), and
    // a reopen of it must not grant what it lacks.
    if (fd && (fcntl(fd.get(), F_GETFL) & O_PATH)) fd.reset();
    // Each preserved file is an fd we keep, from the table the session
    // sockets use too: the engine's file budget alone does not stop it
    // filling once sessions took their share. Past the reserve, ENOSPC;
    // filled to the last fd, the next request's fd would be dropped on
    // receipt (EPROTO) and every new connection, status included, refused
    // (EMFILE).
    Engine& engine = u.server.engine();
    lu::Session* s = u.conn.session;
    int r = engine.preserve_fd(s, token_field(u.k), std::move(fd), fd_room(u));
    // Held by a session closed meanwhile? The engine took no fd on failure.
    if (r == -EBUSY && u.server.reap_hangups(u.conn))
        r = engine.preserve_fd(s, token_field(u.k), std::move(fd), !u.server.conns().fds_exhausted());
    return r ? UapiReply::error(r) : UapiReply{};
}

UapiReply retrieve_fd(Ucmd& u) {
    // The fd is reserved first (get_unused_fd_flags): EMFILE before the
    // token is looked up, as in the kernel.
    UapiReply rep;
    int r = fd_room(u) ? u.server.engine().retrieve_fd(u.conn.session, token_field(u.k), &rep.fd) : -EMFILE;
    if (r) return UapiReply::error(r);
    set_fd_placeholder(u.k);
    return rep;
}

// `reserved` is not checked, as in luo_session_finish. A hand-off's view:
// its FINISH commits, or ends a dry run (handoff.hpp).
UapiReply finish_session(Ucmd& u) {
    Session* src = u.conn.session->handoff_source();
    int r = u.server.engine().finish_session(u.conn.session);
    if (src && r == 0) u.server.handoffs().committed(src);
    if (src && r == -ECANCELED) u.server.handoffs().end(src, HandoffOutcome::Validated, 0);
    return r ? UapiReply::error(r) : UapiReply{};
}

UapiReply get_name(Ucmd& u) {
    uint32_t reserved;
    memcpy(&reserved, u.k.data() + 4, sizeof reserved);
    if (reserved) return UapiReply::error(-EINVAL);
    // strscpy: the name and its NUL; the caller's bytes after it stay.
    const std::string& name = u.conn.session->name();
    memcpy(u.k.data() + 8, name.c_str(), name.size() + 1);
    return {};
}

// ---- the hand-off, this daemon's extension (handoff.hpp) ----

UapiReply handoff(Ucmd& u) {
    lu_session_handoff a;
    memcpy(&a, u.k.data(), sizeof a);
    if ((a.flags & ~LU_HANDOFF_DRY_RUN) || a.next_pid < 0 || a.timeout_ms > Handoffs::kMaxTimeoutMs)
        return UapiReply::error(-EINVAL);
    Handoffs::Options o;
    o.dry_run = a.flags & LU_HANDOFF_DRY_RUN;
    o.timeout_ms = a.timeout_ms ? a.timeout_ms : Handoffs::kDefaultTimeoutMs;
    o.next_pid = a.next_pid;
    o.owner_uid = u.conn.uid;
    uint64_t id;
    int r = u.server.handoffs().begin({u.conn.session}, o, &id);
    return r ? UapiReply::error(r) : UapiReply{};
}

// The outcome: later, if the hand-off runs; at once if it is over.
UapiReply handoff_wait(Ucmd& u) {
    lu_session_handoff_wait a;
    memcpy(&a, u.k.data(), sizeof a);
    if (a.reserved) return UapiReply::error(-EINVAL);
    const Session* s = u.conn.session;
    if (s->handoff() != HandoffState::None) {
        u.server.handoffs().wait_owner(s, {u.conn.fd.get(), u.conn.serial, u.user_size});
        UapiReply rep;
        rep.deferred = true;
        return rep;
    }
    switch (s->last_handoff()) {
        case HandoffOutcome::None: return UapiReply::error(-EINVAL);
        case HandoffOutcome::Committed: a.outcome = LU_HANDOFF_COMMITTED; break;
        case HandoffOutcome::RolledBack: a.outcome = LU_HANDOFF_ROLLED_BACK; break;
        case HandoffOutcome::Validated: a.outcome = LU_HANDOFF_VALIDATED; break;
    }
    a.reason = s->last_handoff_reason();
    memcpy(u.k.data(), &a, sizeof a);
    return {};
}

// From the owner (its source) or the next version (the view). The next
// version's abort of a dry run is the dry run passing.
UapiReply handoff_abort(Ucmd& u) {
    lu_session_handoff_abort a;
    memcpy(&a, u.k.data(), sizeof a);
    if (a.reserved) return UapiReply::error(-EINVAL);
    Session* s = u.conn.session;
    Session* src = s->handoff_source() ? s->handoff_source() : s;
    if (src->handoff() == HandoffState::None) return UapiReply::error(-EINVAL);
    bool passed = src != s && src->handoff_dry_run();
    u.server.handoffs().end(src, passed ? HandoffOutcome::Validated : HandoffOutcome::RolledBack,
                            passed ? 0 : ECANCELED);
    return {};
}

// ---- the tables, indexed by command number less the base, as
// luo_ioctl_ops and luo_session_ioctl_ops ----

#define OP(ioctl, fn, type, last, dir) \
    UapiOp { ioctl, sizeof(type), LU_OFFSETOFEND(type, last), dir, fn }

const UapiOp kControlOps[] = {
    OP(LIVEUPDATE_IOCTL_CREATE_SESSION, create_session, liveupdate_ioctl_create_session, name,
       std::nullopt),
    OP(LIVEUPDATE_IOCTL_RETRIEVE_SESSION, retrieve_session, liveupdate_ioctl_retrieve_session, name,
       std::nullopt),
};

const UapiOp kSessionOps[] = {
    OP(LIVEUPDATE_SESSION_PRESERVE_FD, preserve_fd, liveupdate_session_preserve_fd, token,
       Direction::Outgoing),
    OP(LIVEUPDATE_SESSION_RETRIEVE_FD, retrieve_fd, liveupdate_session_retrieve_fd, token,
       Direction::Incoming),
    OP(LIVEUPDATE_SESSION_FINISH, finish_session, liveupdate_session_finish, reserved,
       Direction::Incoming),
    OP(LIVEUPDATE_SESSION_GET_NAME, get_name, liveupdate_session_get_name, name, std::nullopt),
};

// Not the kernel's: numbered from LU_CMD_SESSION_EXT_BASE, past its range.
const UapiOp kSessionExtOps[] = {
    OP(LU_SESSION_HANDOFF, handoff, lu_session_handoff, timeout_ms, Direction::Outgoing),
    OP(LU_SESSION_HANDOFF_WAIT, handoff_wait, lu_session_handoff_wait, reserved, std::nullopt),
    OP(LU_SESSION_HANDOFF_ABORT, handoff_abort, lu_session_handoff_abort, reserved, std::nullopt),
};

#undef OP

static_assert(_IOC_NR(LU_SESSION_HANDOFF_ABORT) - LU_CMD_SESSION_EXT_BASE == 2);
static_assert(_IOC_NR(LIVEUPDATE_IOCTL_RETRIEVE_SESSION) - LIVEUPDATE_CMD_BASE == 1);
static_assert(_IOC_NR(LIVEUPDATE_SESSION_GET_NAME) - LIVEUPDATE_CMD_SESSION_BASE == 3);

}  // namespace

// Unsigned: a number below the base wraps past the end.
const UapiOp* find_uapi_op(bool control, unsigned nr, bool strict) {
    if (!control && !strict && nr - LU_CMD_SESSION_EXT_BASE < std::size(kSessionExtOps))
        return &kSessionExtOps[nr - LU_CMD_SESSION_EXT_BASE];
    if (control)
        return nr - LIVEUPDATE_CMD_BASE < std::size(kControlOps) ? &kControlOps[nr - LIVEUPDATE_CMD_BASE]
                                                                 : nullptr;
    return nr - LIVEUPDATE_CMD_SESSION_BASE < std::size(kSessionOps)
               ? &kSessionOps[nr - LIVEUPDATE_CMD_SESSION_BASE]
               : nullptr;
}

}  // namespace lu
