// SPDX-License-Identifier: Apache-2.0
#include "server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "handoff.hpp"
#include "handover_channel.hpp"
#include "reboot_sender.hpp"
#include "trace.hpp"
#include "wire_reply.hpp"

namespace lu {

namespace {

// Bounds on what one peer can make the loop do.
constexpr size_t kMaxAdminConns = 16;
constexpr uint64_t kAdminIdleNs = 2'000'000'000;  // an admin client that sent nothing for 2 s
constexpr int kMessagesPerWakeup = 16;  // fairness between flooding and quiet clients
constexpr size_t kMaxRequestBytes = sizeof(lu_wire_request) + LU_WIRE_MAX_ARG;
constexpr size_t kMaxRequestFds = kMaxFdsPerMessage;  // receive all, to close all

}  // namespace

Server::Server(Engine& engine, Access access) : engine_(engine), access_(access) {}

Server::~Server() = default;

std::unique_ptr<Server> Server::create(Engine& engine, Access access, UniqueFd control_listener,
                                       UniqueFd admin_listener, std::string* why) {
    std::unique_ptr<Server> s(new Server(engine, access));
    s->loop_ = EventLoop::create(*s, why);
    if (!s->loop_) return nullptr;
    s->conns_ = std::make_unique<ConnectionTable>(*s->loop_, engine, access);
    s->handoffs_ = std::make_unique<Handoffs>(*s);
    s->control_listener_ = control_listener.get();
    s->admin_listener_ = admin_listener.get();
    Conn* control = s->conns_->add_listener(Conn::Kind::ControlListener, std::move(control_listener));
    Conn* admin = s->conns_->add_listener(Conn::Kind::AdminListener, std::move(admin_listener));
    if (s->loop_->watch_control_listener(control->fd.get(), control) == 0 &&
        s->loop_->watch_admin_listener(admin->fd.get(), admin) == 0)
        return s;
    *why = std::string("cannot set up the event loop: ") + strerror(errno);
    return nullptr;
}

int Server::run() {
    while (loop_->running()) {
        if (run_once(-1) < 0) return 1;
        if (draining_ && conns_->count(Conn::Kind::Admin) == 0) loop_->stop();
    }
    return exit_code_;
}

int Server::run_once(int timeout_ms) {
    conns_->free_removed();
    return loop_->run_once(timeout_ms);
}

void Server::drain_admin_and_stop(int exit_code, uint64_t timeout_ms) {
    exit_code_ = exit_code;
    draining_ = true;
    loop_->pause_admin();
    loop_->set_timer(timeout_ms, [this] { loop_->stop(); });
}

// A stop drops every session, as a cold reboot does: that is what the
// administrator asked for. A live update still before its commit is rolled
// back first, so the next instance does not serve a state nobody hands it.
void Server::on_stop_signal(int signo) {
    spdlog::info("signal {}: stopping, dropping {} sessions and {} preserved files", signo,
                 engine_.outgoing().size(), engine_.preserved_files());
    if (reboot_) reboot_->cancel("the daemon is stopping (signal)");
    exit_code_ = 0;
    loop_->stop();
}

void Server::on_event(void* tag, uint32_t events) {
    Conn& c = *static_cast<Conn*>(tag);
    if (c.dead) return;
    bool hangup = events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR);
    switch (c.kind) {
        // A listener paused earlier in this turn of the loop may still have
        // its event in the batch: its connections wait in the backlog.
        case Conn::Kind::ControlListener:
            if (!loop_->clients_paused()) accept_control();
            break;
        case Conn::Kind::AdminListener:
            if (!loop_->admin_paused()) accept_admin();
            break;
        case Conn::Kind::Control:
        case Conn::Kind::Session:
        case Conn::Kind::Stale:
            serve_client(c, hangup);
            break;
        case Conn::Kind::Admin:
            serve_admin(c);
            break;
        case Conn::Kind::Channel:
            poll_channel(c);
            break;
        case Conn::Kind::Watch:
            c.on_ready(c);
            break;
    }
}

// ---- the live update's channel ----

Conn* Server::add_channel(UniqueFd fd, std::function<void(Conn&, Message&)> on_message,
                          std::function<void(Conn&)> on_hangup) {
    Conn* c = conns_->add(Conn::Kind::Channel, fd, EPOLLIN | EPOLLRDHUP);
    if (!c) return nullptr;
    c->on_message = std::move(on_message);
    c->on_hangup = std::move(on_hangup);
    return c;
}

Conn* Server::add_watch(UniqueFd fd, std::function<void(Conn&)> on_ready) {
    Conn* c = conns_->add(Conn::Kind::Watch, fd, EPOLLIN);
    if (c) c->on_ready = std::move(on_ready);
    return c;
}

void Server::send_deferred(int fd, uint64_t serial, std::vector<uint8_t> bytes) {
    Conn* c = conns_->find(fd);
    if (!c || c->kind != Conn::Kind::Session || c->serial != serial) return;
    send_reply(*c, std::move(bytes), -1);
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
    conns_->remove(c);
    if (cb) cb(c);
}

// ---- the control connection ----

void Server::accept_control() {
    for (;;) {
        UniqueFd fd = conns_->accept_or_refuse(control_listener_);
        if (!fd) return;
        uid_t uid = 0;
        pid_t pid = 0;
        int err = conns_->peer_allowed(fd.get(), &uid, &pid) ? admit_control() : EACCES;
        if (err) {
            trace_open(pid, err);  // trace.hpp
            send_errno_reply(fd.get(), err);
            if (err == EACCES) spdlog::warn("control: refused uid {} pid {}", uid, pid);
            continue;
        }
        // Watched before the hello says yes: a client told it is in must be served.
        Conn* conn = conns_->add(Conn::Kind::Control, fd, EPOLLIN | EPOLLRDHUP);
        if (!conn) {
            trace_open(pid, ENOMEM);
            send_errno_reply(fd.get(), ENOMEM);
            continue;
        }
        trace_open(pid, 0);
        enable_sender_pid(conn->fd.get());  // the trace names each request's sender
        conn->uid = uid;
        conn->pid = pid;
        send_errno_reply(conn->fd.get(), 0);
        conns_->set_control(conn);
    }
}

// Exclusive, as open("/dev/liveupdate"): but a holder that has already
// closed its end is gone, whatever order epoll reported in. 0 or an errno.
int Server::admit_control() {
    if (Conn* holder = conns_->control()) {
        pollfd p{holder->fd.get(), POLLRDHUP, 0};
        if (poll_now(&p, 1) == 1 && (p.revents & POLLHUP)) serve_client(*holder, true);
        if (conns_->control()) return EBUSY;
    }
    return -engine_.open_check();
}

// ---- admin connections ----

void Server::accept_admin() {
    for (;;) {
        UniqueFd fd = conns_->accept_or_refuse(admin_listener_);
        if (!fd) return;
        // Past the bound, a connection that has sent nothing for a while
        // makes room: idle clients must not lock everyone out of status
        // and reboot.
        size_t admins = conns_->count(Conn::Kind::Admin);
        Conn* idlest = conns_->idlest_admin();
        if (admins >= kMaxAdminConns && idlest && monotonic_ns() - idlest->since_ns > kAdminIdleNs) {
            conns_->remove(*idlest);
            admins--;
        }
        uid_t uid;
        pid_t pid;
        int err = !conns_->peer_allowed(fd.get(), &uid, &pid) ? EACCES
                  : admins >= kMaxAdminConns                  ? EBUSY
                                                              : 0;
        if (err) {
            send_errno_reply(fd.get(), err);
            continue;
        }
        Conn* c = conns_->add(Conn::Kind::Admin, fd, EPOLLIN | EPOLLRDHUP);
        if (!c) continue;  // fd closes: the client reads an end of file
        c->uid = uid;
        c->pid = pid;
        c->since_ns = monotonic_ns();
        c->serial = next_admin_serial_++;
    }
}

void Server::serve_admin(Conn& c) {
    Message m;
    int r = recv_message(c.fd.get(), LU_WIRE_MAX_ADMIN, 0, &m);
    if (r == -EAGAIN || transient(r)) return;  // still queued: come back
    if (r != 1 || m.truncated || !m.fds.empty()) {
        if (r == 1) admin_reply({c.fd.get(), c.serial}, R"({"ok":false,"errno":22,"error":"malformed request"})");
        else conns_->remove(c);
        return;
    }
    std::string req(m.bytes.begin(), m.bytes.end());
    c.requested = true;
    handle_admin_request(*this, {c.fd.get(), c.serial}, c.uid, req);
}

void Server::admin_reply(AdminRef to, const std::string& json) {
    Conn* c = conns_->find(to.fd);
    if (!c || c->kind != Conn::Kind::Admin || c->serial != to.serial) return;
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
    std::vector<uint8_t> msg = inline_json ? wire_reply(0, std::vector<uint8_t>(json.begin(), json.end()))
                                           : wire_reply(err, {}, true);
    int fds[1] = {mfd.get()};
    send_message_retrying(to.fd, msg, err ? std::span<const int>() : std::span<const int>(fds));
    conns_->remove(*c);
}

// ---- client connections: requests in order, replies held under backpressure ----

void Server::serve_client(Conn& c, bool hangup) {
    if (c.pending && !hangup && !flush_pending(c)) return;
    conns_->drop_pending(c);  // a peer that hung up reads no more replies
    for (int i = 0; i < kMessagesPerWakeup || hangup; i++) {
        if (c.pending) return;  // the peer must read its last reply first
        Message m;
        int r = recv_message(c.fd.get(), kMaxRequestBytes, kMaxRequestFds, &m);
        if (r == -EAGAIN) return;  // nothing to read; a peer that is gone reads as 0
        if (r == -ESHUTDOWN) {
            // shutdown() on the shared socket: no holder can send requests any
            // more, but the session lives until the last copy is closed. Only
            // the final hangup is of interest now (always reported by epoll).
            loop_->rearm(EventLoop::Set::Clients, c.fd.get(), &c, 0);
            return;
        }
        // No memory or buffer to receive now: the request stays queued and
        // the loop comes back for it. Only an end of file, or a socket
        // that is broken, releases the session.
        if (transient(r)) return;
        if (r <= 0) return close_client(c);
        dispatch(c, m);
        if (reboot_) reboot_->note_request_served();
        if (c.dead) return;
    }
}

// The reply held for a client that did not read: sent now, or still held
// (false: come back when the socket drains).
bool Server::flush_pending(Conn& c) {
    int fds[1] = {c.pending_fd.get()};
    int r = send_message(c.fd.get(), *c.pending,
                         c.pending_fd ? std::span<const int>(fds) : std::span<const int>());
    if (r == -EAGAIN || r == -ENOBUFS) return false;
    conns_->drop_pending(c);
    loop_->rearm(EventLoop::Set::Clients, c.fd.get(), &c, EPOLLIN | EPOLLRDHUP);
    return true;
}

void Server::send_reply(Conn& c, std::vector<uint8_t> bytes, int fd) {
    int fds[1] = {fd};
    int r = send_message(c.fd.get(), bytes, fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
    if (r == -EAGAIN || r == -ENOBUFS) {
        // The client is not reading its replies: hold this one and stop
        // reading its requests until its socket drains.
        conns_->keep_pending(c, std::move(bytes), fd);
        loop_->rearm(EventLoop::Set::Clients, c.fd.get(), &c, EPOLLOUT | EPOLLRDHUP);
    }
    // Other errors: the peer is gone; its hangup is handled as such.
}

// The last copy of a session fd is closed: release, as the kernel's
// luo_session_release. The control connection's close only ends
// exclusivity: sessions live on.
void Server::close_client(Conn& c) {
    // A hand-off's view closed unfinished: the hand-off rolls back, and its
    // owner is told (handoff.hpp); the release below removes what is left.
    if (c.kind == Conn::Kind::Session && c.session->handoff_source())
        handoffs_->end(c.session->handoff_source(), HandoffOutcome::RolledBack, ECONNRESET);
    if (c.kind == Conn::Kind::Session) {
        int err = engine_.release_session(c.session);
        if (err == -EBUSY)
            spdlog::warn("Unable to finish session [{}] on release", c.session->name());
    }
    conns_->remove(c);
}

void Server::release_closed_sessions() {
    for (Conn* c : conns_->closed_sessions(nullptr, false))
        if (!c->dead) serve_client(*c, true);
}

// Sessions whose last fd was closed, wherever epoll put their hangup: release
// them now, before a request that conflicts with them is refused. Only
// sessions with nothing left to read, and never the one being served (its
// request is running).
bool Server::reap_hangups(const Conn& current) {
    bool any = false;
    for (Conn* c : conns_->closed_sessions(&current, true)) {
        if (c->dead) continue;
        close_client(*c);
        any = true;
    }
    return any;
}

}  // namespace lu
