// SPDX-License-Identifier: Apache-2.0
// liveupdated's event loop: one thread, one epoll set, so every request is
// serialized by construction and the reboot gate is a state of the loop.
//
// Client connections (the control connection and every session socket) live
// in their own epoll set, nested in the main one. Closing the gate for a
// live update is one epoll_ctl: their requests and hangups wait in the
// sockets, in order, and run after a rollback, or end with the instance
// after a commit (the kernel blocks them on luo_session_serialize_rwsem).
//
// Note on error handling, for all of src/daemon (as luo_session.c states
// its own): functions return 0 or -errno (or a null pointer with a `why`
// string for an operator); the errno a client sees is the kernel's for the
// same case. Nothing in the daemon throws, and no client request may end
// it: exceptions are caught only at the JSON edge (admin.cpp, where
// nlohmann::json may throw on a client's request) and where the handover
// encoder can throw (reboot_sender.cpp, write_handover), and become errnos
// there. A failure after the point where the kernel can no longer fail (a
// committed live update, a deserialized handover) is logged and kept,
// never unwound. Preconditions are `REQUIRES:` comments backed by assert().
#pragma once

#include <signal.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "unique_fd.hpp"

namespace lu {

// SIGTERM and SIGINT: main blocks them, the loop reads them (a signalfd) and
// stops cleanly, so the process exits through every destructor.
sigset_t stop_signals();

class EventLoop {
public:
    // Where an fd is watched: the main set, or the clients' set behind the gate.
    enum class Set { Main, Clients };

    // Who is told. `tag` is what the fd was watched with.
    struct Handler {
        virtual ~Handler() = default;
        virtual void on_event(void* tag, uint32_t events) = 0;
        virtual void on_stop_signal(int signo) = 0;
    };

    // Null, with *why, if an epoll set, the timer or the signalfd cannot be made.
    static std::unique_ptr<EventLoop> create(Handler& handler, std::string* why);

    // 0 or -errno. REQUIRES: tag is not null.
    int watch(Set set, int fd, void* tag, uint32_t events);
    // Changes what a watched fd waits for: allocates nothing, cannot fail.
    void rearm(Set set, int fd, void* tag, uint32_t events);
    void unwatch(Set set, int fd);

    // The gate. The control listener waits with the clients; the admin
    // listener is paused apart (from a commit on).
    int watch_control_listener(int fd, void* tag);
    int watch_admin_listener(int fd, void* tag);
    void pause_clients();
    void resume_clients();
    bool clients_paused() const { return clients_paused_; }
    void pause_admin();
    void resume_admin();
    bool admin_paused() const { return admin_paused_; }

    // One timer: set_timer replaces it.
    void set_timer(uint64_t timeout_ms, std::function<void()> on_expiry);
    void cancel_timer();

    // One turn: the events ready within timeout_ms (-1: wait). The number of
    // events handled, or -1 on a fatal error.
    int run_once(int timeout_ms);
    void stop() { running_ = false; }
    bool running() const { return running_; }

private:
    explicit EventLoop(Handler& handler) : handler_(handler) {}
    void serve_clients();
    void listen(int fd, void* tag, bool on);

    // Set at creation, for the loop's lifetime.
    Handler& handler_;
    UniqueFd epfd_, clients_epfd_, timerfd_, signalfd_;

    // The gate: which listeners it holds, and whether it is closed.
    int control_listener_ = -1, admin_listener_ = -1;
    void *control_tag_ = nullptr, *admin_tag_ = nullptr;
    bool clients_paused_ = false;
    bool admin_paused_ = false;

    // Changed as the loop runs.
    std::function<void()> on_timer_;
    bool running_ = true;
};

}  // namespace lu
