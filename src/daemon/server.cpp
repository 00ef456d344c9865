#include "server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "admin.hpp"
#include "handover_channel.hpp"
#include "reboot_sender.hpp"
#include "wire.h"

namespace lu {

namespace {

// Bounds on what one peer can make the loop do.
constexpr size_t kMaxAdminConns = 16;
constexpr uint64_t kAdminIdleNs = 2'000'000'000;  // an admin client that sent nothing for 2 s
constexpr int kMessagesPerWakeup = 16;  // fairness between flooding and quiet clients
constexpr size_t kMaxRequestBytes = sizeof(lu_wire_request) + LU_WIRE_MAX_ARG;
constexpr size_t kMaxRequestFds = kMaxFdsPerMessage;  // receive all, to close all

}  // namespace

sigset_t stop_signals() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    return s;
}

Server::Server(Engine& engine, Access access, UniqueFd control_listener, UniqueFd admin_listener)
    : engine_(engine), access_(access) {
    spare_fd_.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
    epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
    clients_epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
    timerfd_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    sigset_t stop = stop_signals();
    signalfd_.reset(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
    control_listener_ = control_listener.get();
    admin_listener_ = admin_listener.get();
    auto add = [&](Kind k, UniqueFd fd) -> Conn& {
        auto c = std::make_unique<Conn>();
        c->kind = k;
        c->fd = std::move(fd);
        Conn& ref = *c;
        conns_.emplace(ref.fd.get(), std::move(c));
        return ref;
    };
    ok_ = spare_fd_ && epfd_ && clients_epfd_ && timerfd_ && signalfd_ &&
          watch(add(Kind::ControlListener, std::move(control_listener)), EPOLLIN) &&
          watch(add(Kind::AdminListener, std::move(admin_listener)), EPOLLIN);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the nested client set
    ok_ = ok_ && epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, clients_epfd_.get(), &ev) == 0;
    ev.data.ptr = &timerfd_;  // the timer
    ok_ = ok_ && epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, timerfd_.get(), &ev) == 0;
    ev.data.ptr = &signalfd_;
    ok_ = ok_ && epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, signalfd_.get(), &ev) == 0;
    if (!ok_) spdlog::critical("cannot set up the event loop: {}", strerror(errno));
}

Server::~Server() = default;

std::unique_ptr<Server> Server::create(Engine& engine, Access access, UniqueFd control_listener,
                                       UniqueFd admin_listener, std::string* why) {
    auto s = std::make_unique<Server>(engine, access, std::move(control_listener), std::move(admin_listener));
    if (s->ok_) return s;
    *why = std::string("cannot set up the event loop: ") + strerror(errno);
    return nullptr;
}

bool Server::watch(Conn& c, uint32_t events) {
    bool client = c.kind == Kind::Control || c.kind == Kind::Session;
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &c;
    return epoll_ctl(client ? clients_epfd_.get() : epfd_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev) == 0;
}

// Pausing and resuming change what an fd already in the set waits for
// (EPOLL_CTL_MOD): unlike a delete and an add, that allocates nothing and
// cannot fail, so a rollback cannot leave the clients unserved.
void Server::set_listening(void* tag, int fd, bool on) {
    epoll_event ev{};
    ev.events = on ? uint32_t{EPOLLIN} : 0u;
    ev.data.ptr = tag;
    epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void Server::pause_clients() {
    if (paused_) return;
    paused_ = true;
    set_listening(nullptr, clients_epfd_.get(), false);
    set_listening(conns_.at(control_listener_).get(), control_listener_, false);
}

void Server::resume_clients() {
    if (!paused_) return;
    paused_ = false;
    set_listening(nullptr, clients_epfd_.get(), true);
    set_listening(conns_.at(control_listener_).get(), control_listener_, true);
}

Server::Conn* Server::add_channel(UniqueFd fd, std::function<void(Conn&, Message&)> on_message,
                                  std::function<void(Conn&)> on_hangup) {
    auto c = std::make_unique<Conn>();
    c->kind = Kind::Channel;
    c->fd = std::move(fd);
    c->on_message = std::move(on_message);
    c->on_hangup = std::move(on_hangup);
    Conn& ref = *c;
    conns_.emplace(ref.fd.get(), std::move(c));
    if (watch(ref, EPOLLIN | EPOLLRDHUP)) return &ref;
    remove(ref);
    return nullptr;
}

void Server::remove(Conn& c) {
    if (&c == control_conn_) control_conn_ = nullptr;
    if (c.kind == Kind::Session) {
        struct stat st;
        if (fstat(c.fd.get(), &st) == 0) own_inodes_.erase(st.st_ino);
        own_inodes_.erase(c.peer_ino);
    }
    bool client = c.kind == Kind::Control || c.kind == Kind::Session;
    epoll_ctl(client ? clients_epfd_.get() : epfd_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    auto it = conns_.find(c.fd.get());
    c.dead = true;
    drop_pending(c);
    c.fd.reset();
    if (it != conns_.end()) {
        graveyard_.push_back(std::move(it->second));
        conns_.erase(it);
    }
}

void Server::set_timer(uint64_t timeout_ms, std::function<void()> on_expiry) {
    on_timer_ = std::move(on_expiry);
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(timeout_ms / 1000);
    its.it_value.tv_nsec = static_cast<long>((timeout_ms % 1000) * 1000000);
    if (timeout_ms == 0) its.it_value.tv_nsec = 1;
    timerfd_settime(timerfd_.get(), 0, &its, nullptr);
}

void Server::cancel_timer() {
    itimerspec its{};
    timerfd_settime(timerfd_.get(), 0, &its, nullptr);
    on_timer_ = nullptr;
}

int Server::run() {
    while (running_) {
        int r = run_once(-1);
        if (r < 0) return 1;
        if (draining_ && std::none_of(conns_.begin(), conns_.end(),
                                      [](auto& kv) { return kv.second->kind == Kind::Admin; }))
            running_ = false;
    }
    return exit_code_;
}

void Server::pause_admin() {
    if (admin_paused_) return;
    admin_paused_ = true;
    set_listening(conns_.at(admin_listener_).get(), admin_listener_, false);
}

void Server::resume_admin() {
    if (!admin_paused_) return;
    admin_paused_ = false;
    set_listening(conns_.at(admin_listener_).get(), admin_listener_, true);
}

void Server::drain_admin_and_stop(int exit_code, uint64_t timeout_ms) {
    exit_code_ = exit_code;
    draining_ = true;
    pause_admin();
    set_timer(timeout_ms, [this] { running_ = false; });
}

// A stop drops every session, as a cold reboot does: that is what the
// administrator asked for. A live update still before its commit is rolled
// back first, so the next instance does not serve a state nobody hands it.
void Server::on_stop_signal() {
    signalfd_siginfo si{};
    if (read(signalfd_.get(), &si, sizeof si) != sizeof si) return;
    spdlog::info("signal {}: stopping, dropping {} sessions and {} preserved files",
                 si.ssi_signo, engine_.outgoing().size(), engine_.preserved_files());
    if (reboot_) reboot_->cancel("the daemon is stopping (signal)");
    stop(0);
}

void Server::release_closed_sessions() {
    std::vector<pollfd> pfds;
    for (auto& [fd, c] : conns_)
        if (c->kind == Kind::Session) pfds.push_back({fd, POLLRDHUP, 0});
    if (poll_now(pfds.data(), pfds.size()) <= 0) return;
    for (auto& p : pfds) {
        if (!(p.revents & POLLHUP)) continue;
        if (Conn* c = find(p.fd)) serve_client(*c, true);
    }
}

int Server::run_once(int timeout_ms) {
    epoll_event events[256];
    graveyard_.clear();
    int n = epoll_wait(epfd_.get(), events, 256, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        spdlog::critical("epoll_wait: {}", strerror(errno));
        return -1;
    }
    for (int i = 0; i < n && running_; i++) {
        void* p = events[i].data.ptr;
        if (p == &timerfd_) {
            uint64_t ticks;
            while (read(timerfd_.get(), &ticks, sizeof ticks) > 0) {
            }
            if (auto cb = std::exchange(on_timer_, nullptr)) cb();
            continue;
        }
        if (p == &signalfd_) {
            on_stop_signal();
            continue;
        }
        if (p == nullptr) {
            if (paused_) continue;
            // Client connections: hangups first, so a close the client
            // finished before its next request is released before that
            // request runs (a close is synchronous for the closer).
            epoll_event cev[256];
            int m = epoll_wait(clients_epfd_.get(), cev, 256, 0);
            for (int pass = 0; pass < 2; pass++) {
                for (int j = 0; j < m && running_ && !paused_; j++) {
                    bool hup = cev[j].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR);
                    if (hup != (pass == 0)) continue;
                    auto* c = static_cast<Conn*>(cev[j].data.ptr);
                    if (!c->dead) on_event(*c, cev[j].events);
                }
            }
            continue;
        }
        auto* c = static_cast<Conn*>(p);
        if (!c->dead) on_event(*c, events[i].events);
    }
    return n;
}

void Server::on_event(Conn& c, uint32_t events) {
    bool hangup = events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR);
    switch (c.kind) {
        // A listener paused earlier in this turn of the loop may still have
        // its event in the batch: its connections wait in the backlog.
        case Kind::ControlListener:
            if (!paused_) accept_control();
            break;
        case Kind::AdminListener:
            if (!admin_paused_) accept_admin();
            break;
        case Kind::Control:
        case Kind::Session:
            serve_client(c, hangup);
            break;
        case Kind::Admin:
            serve_admin(c);
            break;
        case Kind::Channel:
            poll_channel(c);
            break;
    }
}

void Server::poll_channel(Conn& c) {
    Message m;
    int r;
    while ((r = recv_message(c.fd.get(), 64 * 1024, kMaxFdsPerMessage, &m)) == 1) {
        c.on_message(c, m);
        if (c.dead) return;
    }
    // No memory or buffer for the message now: it stays queued, and the
    // loop comes back for it (level-triggered).
    if (r == -EAGAIN || transient(r)) return;
    auto cb = c.on_hangup;
    remove(c);
    if (cb) cb(c);
}

// Session sockets are recorded by inode; a client's end of a control or
// admin connection is recognised by its peer, our listening socket.
bool Server::is_own_object(int fd) const {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return false;
    if (own_inodes_.count(st.st_ino)) return true;
    sockaddr_storage peer{}, ours{};
    socklen_t plen = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) < 0 || peer.ss_family != AF_UNIX)
        return false;
    for (int l : {control_listener_, admin_listener_}) {
        socklen_t olen = sizeof ours;
        if (getsockname(l, reinterpret_cast<sockaddr*>(&ours), &olen) == 0 && olen == plen &&
            memcmp(&ours, &peer, plen) == 0)
            return true;
    }
    return false;
}

bool Server::peer_allowed(int fd, uid_t* uid, pid_t* pid, bool admin) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return false;
    *uid = cred.uid;
    *pid = cred.pid;
    if (cred.uid == 0 || cred.uid == access_.uid) return true;
    if (!access_.group) return false;
    (void)admin;
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

// accept4, but with a full fd table the pending connection would stay queued
// and the listener ready for ever (a busy loop, and a client that hangs): a
// spare fd is given up to accept it and answer EMFILE, then taken back.
UniqueFd Server::accept_or_refuse(int listener) {
    UniqueFd fd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (fd || (errno != EMFILE && errno != ENFILE)) return fd;
    spare_fd_.reset();
    UniqueFd refused(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (refused) {
        lu_wire_reply r{LU_WIRE_MAGIC, EMFILE, 0, 0};
        send_message(refused.get(), {reinterpret_cast<uint8_t*>(&r), sizeof r});
        spdlog::warn("out of fds: refused a connection with EMFILE");
    }
    refused.reset();
    spare_fd_.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
    return UniqueFd();
}

void Server::drop_pending(Conn& c) {
    if (c.pending_fd) held_fds_--;
    c.pending_fd.reset();
    c.pending.reset();
}

bool Server::fds_exhausted() const {
    // Each connection and session holds one fd, each preserved file one,
    // each reply kept for a client that does not read one.
    // The limit is read each time: an administrator may change it (prlimit).
    constexpr size_t kReserve = 64;  // listeners, epoll, timer, logs, handover work
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    return conns_.size() + engine_.preserved_files() + held_fds_ + kReserve >=
           static_cast<size_t>(rl.rlim_cur);
}

void Server::accept_control() {
    for (;;) {
        UniqueFd fd = accept_or_refuse(control_listener_);
        if (!fd) return;
        uid_t uid;
        pid_t pid;
        int err = 0;
        if (!peer_allowed(fd.get(), &uid, &pid, false)) err = EACCES;
        // Exclusive, as open("/dev/liveupdate"): but a holder that has
        // already closed its end is gone, whatever order epoll reported in.
        if (!err && control_conn_) {
            pollfd p{control_conn_->fd.get(), POLLRDHUP, 0};
            if (poll_now(&p, 1) == 1 && (p.revents & POLLHUP)) serve_client(*control_conn_, true);
            if (control_conn_) err = EBUSY;
        }
        if (!err && engine_.open_check()) err = -engine_.open_check();
        // Watched before the hello says yes: a client told it is in must be served.
        Conn* conn = nullptr;
        if (!err) {
            auto c = std::make_unique<Conn>();
            c->kind = Kind::Control;
            c->uid = uid;
            c->pid = pid;
            c->fd = std::move(fd);
            conn = c.get();
            conns_.emplace(conn->fd.get(), std::move(c));
            if (!watch(*conn, EPOLLIN | EPOLLRDHUP)) err = ENOMEM;
        }
        lu_wire_reply hello{LU_WIRE_MAGIC, err, 0, 0};
        send_message(conn ? conn->fd.get() : fd.get(), {reinterpret_cast<uint8_t*>(&hello), sizeof hello});
        if (conn && err) remove(*conn);
        if (err) {
            if (err == EACCES) spdlog::warn("control: refused uid {} pid {}", uid, pid);
            continue;
        }
        control_conn_ = conn;
    }
}

void Server::accept_admin() {
    for (;;) {
        UniqueFd fd = accept_or_refuse(admin_listener_);
        if (!fd) return;
        uid_t uid;
        pid_t pid;
        // Past the bound, a connection that has sent nothing for a while
        // makes room: idle clients must not lock everyone out of status
        // and reboot.
        size_t admins = 0;
        Conn* idlest = nullptr;
        for (auto& [_, c] : conns_) {
            if (c->kind != Kind::Admin) continue;
            admins++;
            if (!c->requested && (!idlest || c->since_ns < idlest->since_ns)) idlest = c.get();
        }
        if (admins >= kMaxAdminConns && idlest && monotonic_ns() - idlest->since_ns > kAdminIdleNs) {
            remove(*idlest);
            admins--;
        }
        if (!peer_allowed(fd.get(), &uid, &pid, true)) {
            lu_wire_reply r{LU_WIRE_MAGIC, EACCES, 0, 0};
            send_message(fd.get(), {reinterpret_cast<uint8_t*>(&r), sizeof r});
            continue;
        }
        if (admins >= kMaxAdminConns) {
            lu_wire_reply r{LU_WIRE_MAGIC, EBUSY, 0, 0};
            send_message(fd.get(), {reinterpret_cast<uint8_t*>(&r), sizeof r});
            continue;
        }
        auto c = std::make_unique<Conn>();
        c->kind = Kind::Admin;
        c->uid = uid;
        c->pid = pid;
        c->since_ns = monotonic_ns();
        c->serial = next_admin_serial_++;
        c->fd = std::move(fd);
        Conn& ref = *c;
        conns_.emplace(ref.fd.get(), std::move(c));
        if (!watch(ref, EPOLLIN | EPOLLRDHUP)) remove(ref);  // the client reads an end of file
    }
}

void Server::serve_admin(Conn& c) {
    Message m;
    int r = recv_message(c.fd.get(), LU_WIRE_MAX_ADMIN, 0, &m);
    if (r == -EAGAIN || transient(r)) return;  // still queued: come back
    if (r != 1 || m.truncated || !m.fds.empty()) {
        if (r == 1) admin_reply({c.fd.get(), c.serial}, R"({"ok":false,"errno":22,"error":"malformed request"})");
        else remove(c);
        return;
    }
    std::string req(m.bytes.begin(), m.bytes.end());
    c.requested = true;
    handle_admin_request(*this, {c.fd.get(), c.serial}, c.uid, req);
}

void Server::admin_reply(AdminRef to, const std::string& json) {
    auto it = conns_.find(to.fd);
    if (it == conns_.end() || it->second->kind != Kind::Admin || it->second->serial != to.serial)
        return;
    const int admin_fd = to.fd;
    UniqueFd mfd(memfd_create("liveupdate-admin-reply", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    int err = 0;
    if (!mfd) err = errno;
    for (size_t off = 0; !err && off < json.size();) {
        ssize_t n = write(mfd.get(), json.data() + off, json.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) err = errno;
        else off += static_cast<size_t>(n);
    }
    if (!err && fcntl(mfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        err = errno;
    // No memfd: an answer that fits goes inline, so the client still learns
    // the outcome (of a live update that just committed, say).
    bool inline_json = err && json.size() <= LU_WIRE_MAX_ADMIN;
    lu_wire_reply r{LU_WIRE_MAGIC, inline_json ? 0 : err,
                    inline_json ? static_cast<uint32_t>(json.size()) : 0u, err ? 0u : 1u};
    std::vector<uint8_t> msg(reinterpret_cast<uint8_t*>(&r), reinterpret_cast<uint8_t*>(&r + 1));
    if (inline_json) msg.insert(msg.end(), json.begin(), json.end());
    int fds[1] = {mfd.get()};
    send_message_retrying(admin_fd, msg, err ? std::span<const int>() : std::span<const int>(fds));
    remove(*it->second);
}

void Server::serve_client(Conn& c, bool hangup) {
    int fd = c.fd.get();
    if (c.pending && !hangup) {
        int fds[1] = {c.pending_fd.get()};
        int r = send_message(fd, *c.pending,
                             c.pending_fd ? std::span<const int>(fds) : std::span<const int>());
        if (r == -EAGAIN || r == -ENOBUFS) return;
        drop_pending(c);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.ptr = &c;
        epoll_ctl(clients_epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
    }
    drop_pending(c);  // a peer that hung up reads no more replies
    for (int i = 0; i < kMessagesPerWakeup || hangup; i++) {
        if (c.pending) return;  // the peer must read its last reply first
        Message m;
        int r = recv_message(fd, kMaxRequestBytes, kMaxRequestFds, &m);
        if (r == -EAGAIN) return;  // nothing to read; a peer that is gone reads as 0
        if (r == -ESHUTDOWN) {
            // shutdown() on the shared socket: no holder can send requests any
            // more, but the session lives until the last copy is closed. Only
            // the final hangup is of interest now (always reported by epoll).
            epoll_event ev{};
            ev.data.ptr = &c;
            epoll_ctl(clients_epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
            return;
        }
        // No memory or buffer to receive now: the request stays queued and
        // the loop comes back for it. Only an end of file, or a socket
        // that is broken, releases the session.
        if (transient(r)) return;
        if (r <= 0) {
            close_client(c);
            return;
        }
        dispatch(c, m);
        if (c.dead) return;
    }
}

// The last copy of a session fd is closed: release (spec §3.5). The control
// connection's close only ends exclusivity: sessions live on.
void Server::close_client(Conn& c) {
    if (c.kind == Kind::Session) {
        int err = engine_.release_session(c.session);
        if (err == -EBUSY)
            spdlog::warn("Unable to finish session [{}] on release", c.session->name());
    }
    remove(c);
}

void Server::send_reply(Conn& c, std::vector<uint8_t> bytes, int fd) {
    int fds[1] = {fd};
    int r = send_message(c.fd.get(), bytes, fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
    if (r == -EAGAIN || r == -ENOBUFS) {
        // The client is not reading its replies: hold this one and stop
        // reading its requests until its socket drains.
        c.pending = std::move(bytes);
        if (fd >= 0) c.pending_fd.reset(fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (fd >= 0 && !c.pending_fd) {
            // No fd to keep it with: never announce an fd we do not send.
            // The file stays retrieved; a retry gets it (spec §2.8).
            lu_wire_reply r{LU_WIRE_MAGIC, EMFILE, 0, 0};
            c.pending.emplace(reinterpret_cast<uint8_t*>(&r), reinterpret_cast<uint8_t*>(&r + 1));
        }
        if (c.pending_fd) held_fds_++;
        epoll_event ev{};
        ev.events = EPOLLOUT | EPOLLRDHUP;
        ev.data.ptr = &c;
        epoll_ctl(clients_epfd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    }
    // Other errors: the peer is gone; its hangup is handled as such.
}

// Sessions whose last fd was closed, wherever epoll put their hangup: release
// them now, before a request that conflicts with them is refused. Only
// sessions with nothing left to read, and never the one being served (its
// request is running).
bool Server::reap_hangups(const Conn& current) {
    std::vector<pollfd> pfds;
    for (auto& [fd, c] : conns_)
        if (c->kind == Kind::Session && c.get() != &current) pfds.push_back({fd, POLLIN | POLLRDHUP, 0});
    if (poll_now(pfds.data(), pfds.size()) <= 0) return false;
    bool any = false;
    for (auto& p : pfds) {
        if (!(p.revents & POLLHUP)) continue;
        char byte;
        if (recv(p.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) != 0) continue;  // requests pending
        auto it = conns_.find(p.fd);
        if (it == conns_.end()) continue;
        close_client(*it->second);
        any = true;
    }
    return any;
}

}  // namespace lu
