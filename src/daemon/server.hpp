// SPDX-License-Identifier: Apache-2.0
// The daemon's serving side: the event loop (event_loop.hpp) and the
// connection table (connection_table.hpp) put to work. Accepts the control
// and admin connections, reads client requests in order and hands them to
// the uAPI dispatch (uapi_dispatch.cpp), keeps replies a client does not
// read yet, and answers admin requests (admin.cpp). The error convention of
// src/daemon is stated at the top of event_loop.hpp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin.hpp"
#include "connection_table.hpp"
#include "engine.hpp"
#include "event_loop.hpp"
#include "socket_io.hpp"
#include "uapi_dispatch.hpp"
#include "unique_fd.hpp"

namespace lu {

class RebootSender;
class Handoffs;
class KeeperLink;

class Server : private EventLoop::Handler {
public:
    // Null, with *why, if the event loop cannot be set up.
    static std::unique_ptr<Server> create(Engine& engine, Access access, UniqueFd control_listener,
                                          UniqueFd admin_listener, std::string* why);
    ~Server() override;

    int run();  // until stopped; the exit code
    // One turn of the loop: events ready within timeout_ms (-1: wait). Returns
    // the number of events handled, -1 on a fatal error. (run() and the fuzzer.)
    int run_once(int timeout_ms);
    // Once the next instance serves: answer the admin connections already
    // accepted, then stop; at most timeout_ms.
    void drain_admin_and_stop(int exit_code, uint64_t timeout_ms);
    // Releases every session whose last fd is closed, running what it sent
    // before closing: so a close that happened before the gate is released
    // before the gate, wherever epoll put its hangup.
    void release_closed_sessions();
    // The same for sessions with nothing left to read, but `current` (whose
    // request is running): a close is synchronous for the closer, so a
    // request that conflicts with a closed session must not be refused.
    // True if any was released.
    bool reap_hangups(const Conn& current);

    EventLoop& loop() { return *loop_; }
    Engine& engine() { return engine_; }
    const Access& access() const { return access_; }
    int control_listener() const { return control_listener_; }
    int admin_listener() const { return admin_listener_; }

    // The live update's channel to the next instance: its messages, then its
    // hangup, go to the callbacks.
    Conn* add_channel(UniqueFd fd, std::function<void(Conn&, Message&)> on_message,
                      std::function<void(Conn&)> on_hangup);
    // Reads what a channel has pending: messages, then its hangup.
    void poll_channel(Conn& c);
    Conn* find(int fd) { return conns_->find(fd); }
    void remove(Conn& c) { conns_->remove(c); }

    // Sends the JSON answer of an admin request (as a memfd) and closes the
    // connection. The connection may have been closed meanwhile: then the
    // answer goes nowhere.
    void admin_reply(AdminRef to, const std::string& json);

    // A timer or a pidfd: on_ready runs when it is readable (until removed).
    Conn* add_watch(UniqueFd fd, std::function<void(Conn&)> on_ready);
    // The reply to a request answered later (a hand-off's wait), if its
    // session connection is still the one with that serial.
    void send_deferred(int fd, uint64_t serial, std::vector<uint8_t> bytes);
    Handoffs& handoffs() { return *handoffs_; }

    void set_reboot(RebootSender* r) { reboot_ = r; }
    // The keeper (keeper_link.hpp), null without one: for status.
    void set_keeper(const KeeperLink* k) { keeper_ = k; }
    const KeeperLink* keeper() const { return keeper_; }
    RebootSender* reboot() { return reboot_; }
    bool is_own_object(int fd) const { return conns_->is_own_object(fd); }
    ConnectionTable& conns() { return *conns_; }
    size_t connections() const { return conns_->size(); }
    bool control_connected() const { return conns_->control() != nullptr; }

private:
    Server(Engine& engine, Access access);
    void on_event(void* tag, uint32_t events) override;
    void on_stop_signal(int signo) override;
    void accept_control();
    int admit_control();
    void accept_admin();
    void serve_admin(Conn& c);
    void serve_client(Conn& c, bool hangup);
    bool flush_pending(Conn& c);
    void send_reply(Conn& c, std::vector<uint8_t> bytes, int fd);
    void close_client(Conn& c);

    // uapi_dispatch.cpp: the kernel's checks in the kernel's order.
    void dispatch(Conn& c, Message& m);
    // REQUIRES: c is the control connection, or a session connection with its session.
    UapiReply uapi_ioctl(Conn& c, uint32_t cmd, uint32_t flags, const std::vector<uint8_t>& arg,
                         std::vector<UniqueFd>& fds);

    // Set at creation, for the server's lifetime.
    Engine& engine_;
    const Access access_;
    std::unique_ptr<EventLoop> loop_;
    std::unique_ptr<ConnectionTable> conns_;  // watches through loop_: declared after it
    int control_listener_ = -1, admin_listener_ = -1;  // owned by conns_
    RebootSender* reboot_ = nullptr;  // set by the Daemon
    const KeeperLink* keeper_ = nullptr;  // set by the Daemon
    std::unique_ptr<Handoffs> handoffs_;  // handoff.hpp: uses conns_, declared after it

    // Changed as the server runs.
    uint64_t next_admin_serial_ = 1;
    bool draining_ = false;  // a live update committed: answer the admin connections, then stop
    int exit_code_ = 0;
};

}  // namespace lu
