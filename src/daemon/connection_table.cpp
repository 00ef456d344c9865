// SPDX-License-Identifier: Apache-2.0
#include "connection_table.hpp"
#include "trace.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "wire.h"
#include "wire_reply.hpp"

namespace lu {

namespace {

// Unguessable, so no other process can take our session ends' names first.
std::string session_prefix() {
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, GRND_NONBLOCK) != sizeof nonce) nonce = static_cast<uint64_t>(time(nullptr));
    char buf[64];
    snprintf(buf, sizeof buf, "%s%d/%016llx/", LU_WIRE_SESSION_PEER_PREFIX, getpid(),
             static_cast<unsigned long long>(nonce));
    return buf;
}

// Binds `fd` to the abstract name "\0<name>". 0 or -errno.
int bind_abstract(int fd, const std::string& name) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (name.size() + 1 > sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path + 1, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    return bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0 ? 0 : -errno;
}

}  // namespace

ConnectionTable::ConnectionTable(EventLoop& loop, Engine& engine, Access access)
    : loop_(loop), engine_(engine), access_(access),
      spare_fd_(open("/dev/null", O_RDONLY | O_CLOEXEC)), session_prefix_(session_prefix()) {}

Conn* ConnectionTable::add(Conn::Kind kind, UniqueFd& fd, uint32_t events) {
    auto c = std::make_unique<Conn>();
    c->kind = kind;
    if (loop_.watch(c->set(), fd.get(), c.get(), events) < 0) return nullptr;
    c->fd = std::move(fd);
    Conn* ref = c.get();
    conns_.emplace(ref->fd.get(), std::move(c));
    return ref;
}

Conn* ConnectionTable::add_listener(Conn::Kind kind, UniqueFd fd) {
    auto c = std::make_unique<Conn>();
    c->kind = kind;
    c->fd = std::move(fd);
    Conn* ref = c.get();
    conns_.emplace(ref->fd.get(), std::move(c));
    return ref;
}

void ConnectionTable::remove(Conn& c) {
    if (&c == control_) control_ = nullptr;
    if (c.kind == Conn::Kind::Session) {
        struct stat st;
        if (fstat(c.fd.get(), &st) == 0) own_inodes_.erase(st.st_ino);
        own_inodes_.erase(c.peer_ino);
    }
    loop_.unwatch(c.set(), c.fd.get());
    auto it = conns_.find(c.fd.get());
    c.dead = true;
    drop_pending(c);
    c.fd.reset();
    if (it != conns_.end()) {
        removed_.push_back(std::move(it->second));
        conns_.erase(it);
    }
}

size_t ConnectionTable::count(Conn::Kind kind) const {
    return std::count_if(conns_.begin(), conns_.end(), [kind](auto& kv) { return kv.second->kind == kind; });
}

Conn* ConnectionTable::idlest_admin() const {
    Conn* idlest = nullptr;
    for (auto& [_, c] : conns_)
        if (c->kind == Conn::Kind::Admin && !c->requested && (!idlest || c->since_ns < idlest->since_ns))
            idlest = c.get();
    return idlest;
}

// With a full fd table the pending connection would stay queued and the
// listener ready for ever (a busy loop, and a client that hangs).
UniqueFd ConnectionTable::accept_or_refuse(int listener) {
    UniqueFd fd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (fd || (errno != EMFILE && errno != ENFILE)) return fd;
    spare_fd_.reset();
    UniqueFd refused(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (refused) {
        send_errno_reply(refused.get(), EMFILE);
        spdlog::warn("out of fds: refused a connection with EMFILE");
    }
    refused.reset();
    spare_fd_.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
    return UniqueFd();
}

bool ConnectionTable::peer_allowed(int fd, uid_t* uid, pid_t* pid) const {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return false;
    *uid = cred.uid;
    *pid = cred.pid;
    if (cred.uid == 0 || cred.uid == access_.uid) return true;
    if (!access_.group) return false;
    if (cred.gid == *access_.group) return true;
    // Supplementary groups of the peer's user.
    passwd* pw = getpwuid(cred.uid);
    if (!pw) return false;
    int ngroups = 64;
    std::vector<gid_t> groups(ngroups);
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &ngroups) < 0) {
        groups.resize(ngroups);
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &ngroups) < 0) return false;
    }
    groups.resize(ngroups);
    return std::find(groups.begin(), groups.end(), *access_.group) != groups.end();
}

// Each connection and session holds one fd, each preserved file one, each
// reply kept for a client that does not read one. The limit is read again
// at most once a millisecond, not on every request: an administrator may
// change it (prlimit), and within a millisecond only the reserve is used.
// A connection of an ended epoch is the one fd that serves nothing: it
// goes first (its client then sees an end of file, EOWNERDEAD, instead of
// ESTALE: docs/client.md).
bool ConnectionTable::fds_exhausted() {
    constexpr size_t kReserve = 64;  // listeners, epoll, timer, logs, handover work
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const uint64_t now_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(now.tv_nsec);
    if (!fd_limit_ || now_ns - fd_limit_read_ns_ >= 1'000'000) {
        rlimit rl{};
        getrlimit(RLIMIT_NOFILE, &rl);
        fd_limit_ = static_cast<size_t>(rl.rlim_cur);
        fd_limit_read_ns_ = now_ns;
    }
    auto exhausted = [&] {
        return conns_.size() + engine_.preserved_files() + held_fds_ + kReserve >= fd_limit_;
    };
    while (exhausted()) {
        auto stale = std::find_if(conns_.begin(), conns_.end(),
                                  [](auto& kv) { return kv.second->kind == Conn::Kind::Stale; });
        if (stale == conns_.end()) return true;
        remove(*stale->second);
    }
    return false;
}

void ConnectionTable::keep_pending(Conn& c, std::vector<uint8_t> bytes, int fd) {
    c.pending = std::move(bytes);
    if (fd >= 0) c.pending_fd.reset(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    // No fd to keep it with: never announce an fd we do not send. The file
    // stays retrieved; a retry gets it (as after the kernel's failed
    // copy_to_user in luo_session_retrieve_fd).
    if (fd >= 0 && !c.pending_fd) c.pending = errno_reply(EMFILE);
    if (c.pending_fd) held_fds_++;
}

void ConnectionTable::drop_pending(Conn& c) {
    if (c.pending_fd) held_fds_--;
    c.pending_fd.reset();
    c.pending.reset();
}

int ConnectionTable::new_session_socket(Conn** conn, UniqueFd* client_end) {
    if (fds_exhausted()) return -EMFILE;  // as get_unused_fd_flags() would
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    client_end->reset(sv[1]);
    UniqueFd ours(sv[0]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);  // only the daemon's end: the client's blocks
    // Out of memory for the name is the one way this fails for a unique name.
    if (bind_abstract(sv[0], session_prefix_ + std::to_string(sessions_made_++)) < 0) {
        client_end->reset();
        return -ENOMEM;
    }
    enable_sender_pid(sv[0]);  // trace.hpp: the trace names each request's sender
    // Watched before the engine is asked: a session whose socket nobody
    // watches would never be served, nor released.
    *conn = add(Conn::Kind::Session, ours, EPOLLIN | EPOLLRDHUP);
    if (*conn) {
        (*conn)->serial = sessions_made_;  // a reply deferred to it finds it by this
        return 0;
    }
    client_end->reset();
    return -ENOMEM;
}

void ConnectionTable::bind_session(Conn& c, int client_end, lu::Session* s) {
    assert(c.kind == Conn::Kind::Session && !c.session && s);
    c.session = s;
    struct stat st;
    if (fstat(client_end, &st) == 0) c.peer_ino = st.st_ino;
    if (fstat(c.fd.get(), &st) == 0) own_inodes_[st.st_ino] = c.fd.get();
    own_inodes_[c.peer_ino] = c.fd.get();
}

Conn* ConnectionTable::session_conn(const lu::Session* s) const {
    for (auto& [_, c] : conns_)
        if (c->kind == Conn::Kind::Session && c->session == s) return c.get();
    return nullptr;
}

std::unordered_map<const lu::Session*, const Conn*> ConnectionTable::session_conns() const {
    std::unordered_map<const lu::Session*, const Conn*> by_session;
    for (auto& [_, c] : conns_)
        if (c->kind == Conn::Kind::Session && c->session) by_session.emplace(c->session, c.get());
    return by_session;
}

// Session sockets are recorded by inode; a client's end of a control or
// admin connection is recognised by its peer, our listening socket.
bool ConnectionTable::is_own_object(int fd) const {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return false;
    if (own_inodes_.count(st.st_ino)) return true;
    sockaddr_storage peer{}, ours{};
    socklen_t plen = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) < 0 || peer.ss_family != AF_UNIX)
        return false;
    for (auto& [l, c] : conns_) {
        if (c->kind != Conn::Kind::ControlListener && c->kind != Conn::Kind::AdminListener) continue;
        socklen_t olen = sizeof ours;
        if (getsockname(l, reinterpret_cast<sockaddr*>(&ours), &olen) == 0 && olen == plen &&
            memcmp(&ours, &peer, plen) == 0)
            return true;
    }
    return false;
}

std::vector<Conn*> ConnectionTable::closed_sessions(const Conn* skip, bool only_idle) {
    std::vector<pollfd> pfds;
    for (auto& [fd, c] : conns_)
        if (c->kind == Conn::Kind::Session && c.get() != skip)
            pfds.push_back({fd, static_cast<short>(only_idle ? POLLIN | POLLRDHUP : POLLRDHUP), 0});
    std::vector<Conn*> closed;
    if (poll_now(pfds.data(), pfds.size()) <= 0) return closed;
    for (auto& p : pfds) {
        if (!(p.revents & POLLHUP)) continue;
        char byte;
        if (only_idle && recv(p.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) != 0) continue;  // requests pending
        closed.push_back(conns_.at(p.fd).get());
    }
    return closed;
}

// ---- a reboot ----

std::vector<int> ConnectionTable::client_fds() const {
    std::vector<int> fds;
    for (const auto& [fd, c] : conns_)
        if (c->is_client()) fds.push_back(fd);
    return fds;
}

int ConnectionTable::adopt_stale(std::vector<UniqueFd> fds) {
    int err = 0;
    for (UniqueFd& fd : fds) {
        if (int fl = fcntl(fd.get(), F_GETFL); fl >= 0 && !(fl & O_NONBLOCK))
            fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
        Conn* c = add(Conn::Kind::Stale, fd, EPOLLIN | EPOLLRDHUP);
        if (!c) {
            err = -ENOMEM;
            continue;
        }
        // One answer now, unasked: a client that waits for its fd to become
        // readable (as it did when the old instance closed it) wakes up and
        // reads ESTALE. Every answer on this fd is ESTALE, so one more in
        // the queue answers a later request as rightly as its own would.
        send_errno_reply(c->fd.get(), ESTALE);
    }
    return err;
}

// ---- the upgrade ----

void ConnectionTable::snapshot(UpgradeImage* image, std::vector<int>* conn_fds,
                               std::vector<int>* pending_fds) const {
    std::unordered_map<const lu::Session*, std::pair<uint32_t, uint64_t>> index;
    uint64_t i = 0;
    for (const lu::Session& s : engine_.outgoing()) index[&s] = {0, i++};
    i = 0;
    for (const lu::Session& s : engine_.incoming()) index[&s] = {1, i++};
    for (const auto& [fd, c] : conns_) {
        if (!c->is_client()) continue;
        ConnImage ci;
        ci.uid = c->uid;
        ci.pid = c->pid;  // a session's: the process that made or retrieved it
        if (c->kind == Conn::Kind::Control) {
            ci.kind = ConnImage::Control;
        } else if (c->kind == Conn::Kind::Stale) {
            ci.kind = ConnImage::Stale;
        } else {
            // A session a hand-off left gone (committed away, or a view
            // rolled back) stays here: its fd answers ESTALE, as the end
            // of file this connection gets when this instance exits does.
            auto it = index.find(c->session);
            if (it == index.end()) continue;
            ci.kind = ConnImage::Session;
            ci.incoming = it->second.first;
            ci.session = it->second.second;
            ci.peer_ino = c->peer_ino;
        }
        if (c->pending) {
            ci.has_pending = true;
            ci.pending = *c->pending;
            ci.pending_fd = static_cast<bool>(c->pending_fd);
            if (c->pending_fd) pending_fds->push_back(c->pending_fd.get());
        }
        image->conns.push_back(std::move(ci));
        conn_fds->push_back(fd);
    }
}

int ConnectionTable::adopt(const UpgradeImage& image, std::vector<UniqueFd> conn_fds,
                           std::vector<UniqueFd> pending_fds, const std::vector<lu::Session*>& outgoing,
                           const std::vector<lu::Session*>& incoming, std::string* why) {
    assert(conn_fds.size() == image.conns.size());
    size_t next_pending = 0;
    for (size_t i = 0; i < image.conns.size(); i++) {
        const ConnImage& ci = image.conns[i];
        const bool control = ci.kind == ConnImage::Control;
        const bool held = ci.has_pending;
        const Conn::Kind kind = control                         ? Conn::Kind::Control
                                : ci.kind == ConnImage::Stale ? Conn::Kind::Stale
                                                              : Conn::Kind::Session;
        Conn* c = add(kind, conn_fds[i], (held ? EPOLLOUT : EPOLLIN) | EPOLLRDHUP);
        if (!c) return *why = "cannot watch a connection", -ENOMEM;
        // O_NONBLOCK is on the open file description, so it came with the
        // fd; checked all the same, as a blocking read would stop the loop.
        // (SO_PASSCRED, for the trace, is on the socket: it came too.)
        if (int fl = fcntl(c->fd.get(), F_GETFL); fl >= 0 && !(fl & O_NONBLOCK))
            fcntl(c->fd.get(), F_SETFL, fl | O_NONBLOCK);
        c->uid = ci.uid;
        c->pid = ci.pid;
        if (control) {
            control_ = c;
        } else if (kind == Conn::Kind::Session) {
            c->session = (ci.incoming ? incoming : outgoing)[ci.session];
            c->peer_ino = ci.peer_ino;
            struct stat st;
            if (fstat(c->fd.get(), &st) == 0) own_inodes_[st.st_ino] = c->fd.get();
            own_inodes_[c->peer_ino] = c->fd.get();
        }
        if (held) {
            c->pending = ci.pending;
            if (ci.pending_fd) {
                c->pending_fd = std::move(pending_fds[next_pending++]);
                held_fds_++;
            }
        }
    }
    return 0;
}

}  // namespace lu
