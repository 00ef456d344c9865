// SPDX-License-Identifier: Apache-2.0
// Every connection the daemon holds, by fd: the listeners, the control
// connection, the session sockets, admin connections and the live update's
// channel. Here is who gets in (accept, refuse, peer checks), how many fds
// are left (the reserve), and which sessions are closed (the hangup reaper).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine.hpp"
#include "event_loop.hpp"
#include "socket_io.hpp"
#include "unique_fd.hpp"
#include "upgrade_image.hpp"

namespace lu {

struct Access {
    uid_t uid = 0;                // the daemon's user
    std::optional<gid_t> group;   // --group: members may use the control socket
};

struct Conn {
    // Stale: a client connection of the epoch a reboot ended, handed to this
    // instance only to be answered ESTALE until its client closes it.
    enum class Kind { ControlListener, AdminListener, Control, Session, Admin, Channel, Watch, Stale };

    // Set when the connection is added, for its lifetime.
    Kind kind;
    UniqueFd fd;        // closed by ConnectionTable::remove
    uid_t uid = 0;      // peer credentials at accept (Control, Admin); Session: those
    pid_t pid = 0;      // of the control connection that created or retrieved it
    uint64_t since_ns = 0;  // Admin: accepted at (CLOCK_MONOTONIC)
    uint64_t serial = 0;    // Admin, Session: unique for this instance's lifetime
    std::function<void(Conn&, Message&)> on_message;  // Channel
    std::function<void(Conn&)> on_hangup;             // Channel
    std::function<void(Conn&)> on_ready;              // Watch: a timer, a pidfd

    // Set once the engine has the session (ConnectionTable::bind_session).
    lu::Session* session = nullptr;  // Session
    uint64_t peer_ino = 0;           // Session: the client end's inode

    // Changed as it is served.
    bool dead = false;       // removed: fd closed, the object lives until the loop turns
    bool requested = false;  // Admin: its request arrived
    // A reply the peer's socket could not take yet: requests from this
    // connection wait until it is sent (backpressure, never a drop).
    std::optional<std::vector<uint8_t>> pending;
    UniqueFd pending_fd;

    bool is_client() const {
        return kind == Kind::Control || kind == Kind::Session || kind == Kind::Stale;
    }
    EventLoop::Set set() const { return is_client() ? EventLoop::Set::Clients : EventLoop::Set::Main; }
};

class ConnectionTable {
public:
    ConnectionTable(EventLoop& loop, Engine& engine, Access access);

    // Adds and watches `fd` (taken). Null if it cannot be watched: then
    // `fd` is left to the caller.
    Conn* add(Conn::Kind kind, UniqueFd& fd, uint32_t events);
    // A listener: the loop watches it through its gate (event_loop.hpp).
    Conn* add_listener(Conn::Kind kind, UniqueFd fd);
    // Unwatches and closes; the object lives until free_removed().
    void remove(Conn& c);
    void free_removed() { removed_.clear(); }
    Conn* find(int fd) {
        auto it = conns_.find(fd);
        return it == conns_.end() ? nullptr : it->second.get();
    }
    size_t size() const { return conns_.size(); }
    size_t count(Conn::Kind kind) const;
    // The admin connection accepted first of those that sent nothing yet.
    Conn* idlest_admin() const;

    // Who gets in. accept4, but with a full fd table a spare fd is given up
    // to accept the connection and refuse it with EMFILE.
    UniqueFd accept_or_refuse(int listener);
    // SO_PEERCRED against the access rules; fills *uid and *pid.
    bool peer_allowed(int fd, uid_t* uid, pid_t* pid) const;

    // The fd reserve: true when one more fd would eat into what the
    // listeners, the loop and a live update need.
    // Gives up connections of an ended epoch (Kind::Stale) first.
    bool fds_exhausted();
    // A reply kept for a client that does not read (its fd counts).
    void keep_pending(Conn& c, std::vector<uint8_t> bytes, int fd);
    void drop_pending(Conn& c);

    // The control connection (exclusive, as open("/dev/liveupdate")).
    Conn* control() const { return control_; }
    void set_control(Conn* c) { control_ = c; }

    // A session socket: the daemon keeps `*conn`, the client gets
    // *client_end. Watched before the engine is asked, as the kernel
    // reserves the fd first. The daemon's end gets an abstract name with
    // LU_WIRE_SESSION_PEER_PREFIX (wire.h): the client end's getpeername
    // shows it, which is how the compat library knows a LUO fd. 0 or -errno.
    int new_session_socket(Conn** conn, UniqueFd* client_end);
    // REQUIRES: c is a session connection from new_session_socket.
    void bind_session(Conn& c, int client_end, lu::Session* s);
    // The connection of session `s`, or null (its fd was closed).
    Conn* session_conn(const lu::Session* s) const;
    // Every session's connection, in one pass (status lists them all).
    std::unordered_map<const lu::Session*, const Conn*> session_conns() const;
    // The daemon's own sockets (session ends, both sides, and clients' ends
    // of its listeners): never preservable.
    bool is_own_object(int fd) const;

    // The hangup reaper: session connections whose every client copy is
    // closed, except `skip`. With only_idle, only those with no request
    // left to read (their release cannot wait behind a request).
    std::vector<Conn*> closed_sessions(const Conn* skip, bool only_idle);

    // ---- a reboot: the epoch's client connections go stale ----
    // Their fds (borrowed): the control connection, the session sockets and
    // those already stale. The next instance answers ESTALE on them.
    std::vector<int> client_fds() const;
    // The previous epoch's: watched, answered ESTALE, closed by their client.
    // 0, or -ENOMEM if one cannot be watched (it is closed: its client then
    // sees the previous instance as died, never a wrong answer).
    int adopt_stale(std::vector<UniqueFd> fds);

    // ---- the upgrade (upgrade_format.hpp) ----
    // The control connection and the session sockets into image->conns,
    // their fds (borrowed) in *conn_fds and, for replies held with an fd,
    // *pending_fds; sessions by their index in the engine's lists.
    // REQUIRES: the clients' gate is closed.
    void snapshot(UpgradeImage* image, std::vector<int>* conn_fds, std::vector<int>* pending_fds) const;
    // The next binary takes them over: watched, bound to the adopted
    // sessions, held replies kept. 0 or -errno with *why; on failure the
    // instance must not serve. REQUIRES: conn_fds.size() == image.conns.size().
    int adopt(const UpgradeImage& image, std::vector<UniqueFd> conn_fds,
              std::vector<UniqueFd> pending_fds, const std::vector<lu::Session*>& outgoing,
              const std::vector<lu::Session*>& incoming, std::string* why);

private:
    // Set at construction, for the table's lifetime.
    EventLoop& loop_;
    Engine& engine_;
    const Access access_;

    // Changed as connections come and go.
    std::unordered_map<int, std::unique_ptr<Conn>> conns_;  // by fd
    // Removed connections, freed when the loop turns: callers up the stack
    // may still hold a reference (and check `dead`).
    std::vector<std::unique_ptr<Conn>> removed_;
    Conn* control_ = nullptr;
    std::unordered_map<uint64_t, int> own_inodes_;  // session socket inodes -> conn fd
    UniqueFd spare_fd_;         // given up to refuse a connection when fds run out
    std::string session_prefix_;  // "liveupdate/<pid>/<random>/": names our session ends
    uint64_t sessions_made_ = 0;  // the next session end's number (and its Conn::serial)
    size_t held_fds_ = 0;       // the fds of kept replies (Conn::pending_fd)
    // RLIMIT_NOFILE, read again at most once a millisecond (fds_exhausted).
    size_t fd_limit_ = 0;
    uint64_t fd_limit_read_ns_ = 0;
};

}  // namespace lu
