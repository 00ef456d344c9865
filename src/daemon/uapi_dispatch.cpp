// The uAPI over the wire: the kernel's checks in the kernel's order
// (spec §2.3), then the engine. Replies carry what copy_to_user would write.
#include <linux/ioctl.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "server.hpp"
#include "trace.hpp"
#include "liveupdate/uapi.h"
#include "wire.h"

namespace lu {

namespace {

struct Ioctl {
    unsigned long cmd;
    uint32_t min_size;  // offsetofend(struct, last field)
    uint32_t ksize;     // sizeof(struct)
};

constexpr Ioctl kControl[] = {
    {LIVEUPDATE_IOCTL_CREATE_SESSION, 72, sizeof(liveupdate_ioctl_create_session)},
    {LIVEUPDATE_IOCTL_RETRIEVE_SESSION, 72, sizeof(liveupdate_ioctl_retrieve_session)},
};
constexpr Ioctl kSession[] = {
    {LIVEUPDATE_SESSION_PRESERVE_FD, 16, sizeof(liveupdate_session_preserve_fd)},
    {LIVEUPDATE_SESSION_RETRIEVE_FD, 16, sizeof(liveupdate_session_retrieve_fd)},
    {LIVEUPDATE_SESSION_FINISH, 8, sizeof(liveupdate_session_finish)},
    {LIVEUPDATE_SESSION_GET_NAME, 72, sizeof(liveupdate_session_get_name)},
};

// Steps 2 onwards of the generic path, with `type_ok` the v7.2 session-type
// check (true on the control device, which has none). On success `k` holds
// the struct as copy_struct_from_user leaves it and *size the caller's size.
int copy_struct(const Ioctl& io, uint32_t cmd, uint32_t flags, const std::vector<uint8_t>& arg,
                bool type_ok, std::vector<uint8_t>* k, uint32_t* size) {
    if (flags & LU_WIRE_FAULT_SIZE) return -EFAULT;  // get_user(size)
    uint32_t usize = 0;
    if (arg.size() >= sizeof usize) memcpy(&usize, arg.data(), sizeof usize);
    if (cmd != io.cmd) return -ENOTTY;  // -ENOIOCTLCMD
    if (!type_ok) return -EINVAL;
    if (usize < io.min_size) return -EINVAL;
    // copy_struct_from_user: a non-zero byte past the known struct is E2BIG.
    size_t sent = std::min<size_t>(usize, arg.size());
    for (size_t i = io.ksize; i < sent; i++)
        if (arg[i]) return -E2BIG;
    if (usize > io.ksize && (flags & LU_WIRE_TAIL_NONZERO)) return -E2BIG;
    if ((flags & LU_WIRE_FAULT_ARG) || arg.size() < std::min<size_t>(usize, LU_WIRE_MAX_ARG))
        return -EFAULT;
    k->assign(io.ksize, 0);
    memcpy(k->data(), arg.data(), std::min<size_t>(usize, io.ksize));
    *size = usize;
    return 0;
}

std::span<const uint8_t, kSessionNameLength> name_field(const std::vector<uint8_t>& k) {
    return std::span<const uint8_t, kSessionNameLength>(k.data() + 8, kSessionNameLength);
}

}  // namespace

void Server::dispatch(Conn& c, Message& m) {
    lu_wire_request req{};
    bool ok = !m.truncated && m.bytes.size() >= sizeof req;
    if (ok) memcpy(&req, m.bytes.data(), sizeof req);
    ok = ok && req.magic == LU_WIRE_MAGIC && (req.flags & ~LU_WIRE_FLAGS_ALL) == 0 &&
         req.arg_len <= LU_WIRE_MAX_ARG && m.bytes.size() == sizeof req + req.arg_len;
    TraceEntry traced = trace_begin(c, m);  // trace.hpp: before the engine takes the fd
    std::vector<uint8_t> reply_arg;
    int err = 0;
    UniqueFd owned_fd;
    int out_fd = -1;
    if (!ok) {
        // Not something an ioctl can produce: a broken or hostile client. It
        // gets an answer and its fds back to the kernel; nothing else moves.
        err = EPROTO;
        m.fds.clear();
    } else {
        std::vector<uint8_t> arg(m.bytes.begin() + sizeof req, m.bytes.end());
        if (c.kind == Kind::Control) {
            m.fds.clear();  // no control ioctl takes an fd
            dispatch_control(c, req.cmd, req.flags, arg, &reply_arg, &err, &owned_fd);
            out_fd = owned_fd.get();
        } else {
            dispatch_session(c, req.cmd, req.flags, arg, m.fds, &reply_arg, &err, &out_fd);
        }
    }
    trace_end(traced, err);
    if (err) reply_arg.clear();  // the kernel writes nothing back on failure
    std::vector<uint8_t> bytes(sizeof(lu_wire_reply) + reply_arg.size());
    lu_wire_reply rep{LU_WIRE_MAGIC, err, static_cast<uint32_t>(reply_arg.size()),
                      out_fd >= 0 ? 1u : 0u};
    memcpy(bytes.data(), &rep, sizeof rep);
    if (!reply_arg.empty()) memcpy(bytes.data() + sizeof rep, reply_arg.data(), reply_arg.size());
    send_reply(c, std::move(bytes), out_fd);
}

// The session socket a client receives: the daemon keeps one end, the
// client gets the other; the session lives while any copy of it is open.
// Made before the engine is asked, as the kernel reserves the fd first.
int Server::new_session_socket(Conn** conn, UniqueFd* client_end) {
    if (fds_exhausted()) return -EMFILE;  // as get_unused_fd_flags() would
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    client_end->reset(sv[1]);
    enable_sender_pid(sv[0]);  // trace.hpp
    auto c = std::make_unique<Conn>();
    c->kind = Kind::Session;
    c->fd.reset(sv[0]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);  // only the daemon's end: the client's blocks
    Conn& ref = *c;
    conns_.emplace(sv[0], std::move(c));
    // Watched before the engine is asked: a session whose socket nobody
    // watches would never be served, nor released.
    if (!watch(ref, EPOLLIN | EPOLLRDHUP)) {
        remove(ref);
        client_end->reset();
        return -ENOMEM;
    }
    *conn = &ref;
    return 0;
}

void Server::add_session_conn(Conn& c, int client_end, lu::Session* s) {
    c.session = s;
    struct stat st;
    if (fstat(client_end, &st) == 0) c.peer_ino = st.st_ino;
    if (fstat(c.fd.get(), &st) == 0) own_inodes_[st.st_ino] = c.fd.get();
    own_inodes_[c.peer_ino] = c.fd.get();
}

void Server::dispatch_control(Conn& c, uint32_t cmd, uint32_t flags, std::vector<uint8_t>& arg,
                              std::vector<uint8_t>* reply, int* err, UniqueFd* out_fd) {
    unsigned nr = _IOC_NR(cmd);
    if (nr - LIVEUPDATE_CMD_BASE >= std::size(kControl)) {
        *err = EINVAL;  // not ENOTTY: the kernel's luo_ioctl range check
        return;
    }
    std::vector<uint8_t> k;
    uint32_t size = 0;
    int r = copy_struct(kControl[nr], cmd, flags, arg, true, &k, &size);
    lu::Session* s = nullptr;
    Conn* mine = nullptr;
    // At the fd reserve, sessions whose last fd was closed before this
    // request give theirs back first: a close is synchronous for the closer
    // (as for EEXIST below), even when its hangup arrived while this
    // connection was being served. Otherwise a client that closes a session
    // to make room is refused (EMFILE) depending on timing.
    if (!r && fds_exhausted()) reap_hangups(c);
    if (!r) r = new_session_socket(&mine, out_fd);
    if (!r) {
        bool create = nr == LIVEUPDATE_CMD_CREATE_SESSION;
        r = create ? engine_.create_session(name_field(k), &s)
                   : engine_.retrieve_session(name_field(k), &s);
        // The holder of that name (or of the retrieved session) may have
        // closed it already: a close is synchronous for the closer.
        if (r == -EEXIST && create && reap_hangups(c)) r = engine_.create_session(name_field(k), &s);
        if (r == -EINVAL && !create && reap_hangups(c))
            r = engine_.retrieve_session(name_field(k), &s);
    }
    if (!r) add_session_conn(*mine, out_fd->get(), s);
    if (r && mine) remove(*mine);
    if (r) out_fd->reset();
    if (r) {
        *err = -r;
        return;
    }
    int32_t placeholder = -1;  // the client writes its own fd number here
    memcpy(k.data() + 4, &placeholder, sizeof placeholder);
    reply->assign(k.begin(), k.begin() + std::min<size_t>(size, k.size()));
}

void Server::dispatch_session(Conn& c, uint32_t cmd, uint32_t flags, std::vector<uint8_t>& arg,
                              std::vector<UniqueFd>& fds, std::vector<uint8_t>* reply, int* err,
                              int* out_fd) {
    unsigned nr = _IOC_NR(cmd);
    // kernel release: GET_NAME exists from v7.2 (src/core/kernel_profile.hpp)
    const KernelProfile& kp = engine_.profile();
    if (nr < LIVEUPDATE_CMD_SESSION_BASE || nr - LIVEUPDATE_CMD_SESSION_BASE >= kp.session_ioctls) {
        *err = EINVAL;
        return;
    }
    lu::Session* s = c.session;
    bool incoming = s->direction() == Direction::Incoming;
    bool type_ok = true;
    if (nr == LIVEUPDATE_CMD_SESSION_PRESERVE_FD) type_ok = !incoming;
    if (nr == LIVEUPDATE_CMD_SESSION_RETRIEVE_FD || nr == LIVEUPDATE_CMD_SESSION_FINISH)
        type_ok = incoming;
    if (!kp.session_type_checked) type_ok = true;  // kernel release: no type check before v7.2
    std::vector<uint8_t> k;
    uint32_t size = 0;
    int r = copy_struct(kSession[nr - LIVEUPDATE_CMD_SESSION_BASE], cmd, flags, arg, type_ok, &k,
                        &size);
    if (!r) {
        switch (nr) {
            case LIVEUPDATE_CMD_SESSION_PRESERVE_FD: {
                uint64_t token;
                memcpy(&token, k.data() + 8, sizeof token);
                UniqueFd fd;
                if (fds.size() == 1) fd = std::move(fds[0]);
                fds.clear();  // more than one fd: none is taken, EBADF
                // An O_PATH fd opens nothing; the kernel's fget refuses it
                // (EBADF), and a reopen of it must not grant what it lacks.
                if (fd && (fcntl(fd.get(), F_GETFL) & O_PATH)) fd.reset();
                UniqueFd again(fd ? fcntl(fd.get(), F_DUPFD_CLOEXEC, 0) : -1);
                // Each preserved file is an fd we keep, from the table the
                // session sockets use too: the engine's file budget alone
                // does not stop it filling once sessions took their share.
                // Past the reserve, ENOSPC; filled to the last fd, the next
                // request's fd would be dropped on receipt (EPROTO) and every
                // new connection, status included, refused (EMFILE). Sessions
                // closed before this request give their fds back first (see
                // dispatch_control).
                bool room = !fds_exhausted() || (reap_hangups(c) && !fds_exhausted());
                r = engine_.preserve_fd(s, token, std::move(fd), room);
                if (r == -EBUSY && reap_hangups(c))  // held by a session closed meanwhile?
                    r = engine_.preserve_fd(s, token, std::move(again), !fds_exhausted());
                break;
            }
            case LIVEUPDATE_CMD_SESSION_RETRIEVE_FD: {
                uint64_t token;
                memcpy(&token, k.data() + 8, sizeof token);
                // The fd is reserved first (get_unused_fd_flags): EMFILE
                // before the token is looked up, as in the kernel.
                bool room = !fds_exhausted() || (reap_hangups(c) && !fds_exhausted());
                r = room ? engine_.retrieve_fd(s, token, out_fd) : -EMFILE;
                int32_t placeholder = -1;
                memcpy(k.data() + 4, &placeholder, sizeof placeholder);
                break;
            }
            case LIVEUPDATE_CMD_SESSION_FINISH:
                r = engine_.finish_session(s);  // `reserved` is not checked (spec §2.9)
                break;
            case LIVEUPDATE_CMD_SESSION_GET_NAME: {
                uint32_t reserved;
                memcpy(&reserved, k.data() + 4, sizeof reserved);
                if (reserved) {
                    r = -EINVAL;
                    break;
                }
                // strscpy: the name and its NUL; the caller's bytes after it stay.
                memcpy(k.data() + 8, s->name().c_str(), s->name().size() + 1);
                break;
            }
        }
    }
    fds.clear();  // fds nobody asked for go back to the kernel
    if (r) {
        *err = -r;
        *out_fd = -1;
        return;
    }
    reply->assign(k.begin(), k.begin() + std::min<size_t>(size, k.size()));
}

}  // namespace lu
