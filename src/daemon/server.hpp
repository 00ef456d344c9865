// liveupdated's event loop: one thread, one epoll set, so every request is
// serialized by construction and the reboot gate is a state of the loop.
//
// Client connections (the control connection and every session socket) live
// in their own epoll set, nested in the main one. Pausing them for a live
// update is one epoll_ctl: their requests and hangups wait in the sockets,
// in order, and run after a rollback, or end with the instance after a
// commit (the kernel blocks them on luo_session_serialize_rwsem).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "admin.hpp"
#include "engine.hpp"
#include "socket_io.hpp"
#include "unique_fd.hpp"

namespace lu {

class RebootSender;

// SIGTERM and SIGINT: main blocks them, the loop reads them (a signalfd) and
// stops cleanly.
sigset_t stop_signals();

struct Access {
    uid_t uid = 0;                // the daemon's user
    std::optional<gid_t> group;   // --group: members may use the control socket
};

class Server {
public:
    enum class Kind { ControlListener, AdminListener, Control, Session, Admin, Channel };

    struct Conn {
        Kind kind;
        UniqueFd fd;
        lu::Session* session = nullptr;  // Kind::Session
        uid_t uid = 0;                  // peer credentials at accept
        pid_t pid = 0;
        // A reply the peer's socket could not take yet: requests from this
        // connection wait until it is sent (backpressure, never a drop).
        std::optional<std::vector<uint8_t>> pending;
        UniqueFd pending_fd;
        std::function<void(Conn&, Message&)> on_message;  // Kind::Channel
        std::function<void(Conn&)> on_hangup;             // Kind::Channel
        uint64_t peer_ino = 0;  // Kind::Session: the client end's inode
        bool dead = false;      // removed: its fd is closed, the object lives until the loop turns
        uint64_t since_ns = 0;  // Kind::Admin: accepted at (CLOCK_MONOTONIC)
        bool requested = false; // Kind::Admin: its request arrived
        uint64_t serial = 0;    // Kind::Admin: unique for this instance's lifetime
    };

    // Null, with *why, if the event loop cannot be set up.
    static std::unique_ptr<Server> create(Engine& engine, Access access, UniqueFd control_listener,
                                          UniqueFd admin_listener, std::string* why);
    Server(Engine& engine, Access access, UniqueFd control_listener, UniqueFd admin_listener);
    ~Server();

    int run();  // until stop()
    // One turn of the loop: events ready within timeout_ms (-1: wait). Returns
    // the number of events handled, -1 on a fatal error. (run() and the fuzzer.)
    int run_once(int timeout_ms);
    void stop(int exit_code) {
        running_ = false;
        exit_code_ = exit_code;
    }
    // From a commit: admin connections wait in the shared backlog for the
    // instance that serves next (this one again, after a rollback), so no
    // client sees the old epoch after the new one.
    void pause_admin();
    void resume_admin();
    // Once the next instance serves: answer the admin connections already
    // accepted, then stop; at most timeout_ms.
    void drain_admin_and_stop(int exit_code, uint64_t timeout_ms);
    // Releases every session whose last fd is closed, running what it sent
    // before closing: so a close that happened before the gate is released
    // before the gate, wherever epoll put its hangup.
    void release_closed_sessions();

    Engine& engine() { return engine_; }
    int control_listener() const { return control_listener_; }
    int admin_listener() const { return admin_listener_; }
    const Access& access() const { return access_; }

    // The gate, as the loop sees it: while paused, client connections and
    // the control listener are not served (their work waits in the kernel).
    void pause_clients();
    void resume_clients();
    bool clients_paused() const { return paused_; }

    // Extra fds the loop serves (the live update's channel to the next
    // instance) and a timer.
    Conn* add_channel(UniqueFd fd, std::function<void(Conn&, Message&)> on_message,
                      std::function<void(Conn&)> on_hangup);
    void remove(Conn& c);
    // Reads what a channel has pending: messages, then its hangup.
    void poll_channel(Conn& c);
    Conn* find(int fd) {
        auto it = conns_.find(fd);
        return it == conns_.end() ? nullptr : it->second.get();
    }
    void set_timer(uint64_t timeout_ms, std::function<void()> on_expiry);
    void cancel_timer();

    // Sends the JSON answer of an admin request (as a memfd) and closes the
    // connection. The connection may have been closed meanwhile: then the
    // answer goes nowhere.
    void admin_reply(AdminRef to, const std::string& json);

    void set_reboot(RebootSender* r) { reboot_ = r; }
    RebootSender* reboot() { return reboot_; }
    // The daemon's own sockets (session ends, both sides): never preservable.
    bool is_own_object(int fd) const;
    size_t connections() const { return conns_.size(); }
    bool control_connected() const { return control_conn_ != nullptr; }

private:
    bool watch(Conn& c, uint32_t events);
    void set_listening(void* tag, int fd, bool on);
    void on_event(Conn& c, uint32_t events);
    void on_stop_signal();
    void accept_control();
    void accept_admin();
    void serve_client(Conn& c, bool hangup);
    void serve_admin(Conn& c);
    bool peer_allowed(int fd, uid_t* uid, pid_t* pid, bool admin);
    void close_client(Conn& c);
    bool reap_hangups(const Conn& current);
    UniqueFd accept_or_refuse(int listener);
    bool fds_exhausted() const;
    void send_reply(Conn& c, std::vector<uint8_t> bytes, int fd);
    void drop_pending(Conn& c);

    // uapi_dispatch.cpp: the kernel's checks in the kernel's order.
    void dispatch(Conn& c, Message& m);
    void dispatch_control(Conn& c, uint32_t cmd, uint32_t flags, std::vector<uint8_t>& arg,
                          std::vector<uint8_t>* reply, int* err, UniqueFd* out_fd);
    void dispatch_session(Conn& c, uint32_t cmd, uint32_t flags, std::vector<uint8_t>& arg,
                          std::vector<UniqueFd>& fds, std::vector<uint8_t>* reply, int* err,
                          int* out_fd);
    // The session's connection is made (and watched) before the engine is
    // asked, as the kernel reserves the fd first; it gets its session after.
    int new_session_socket(Conn** conn, UniqueFd* client_end);
    void add_session_conn(Conn& c, int client_end, lu::Session* s);

    Engine& engine_;
    Access access_;
    int control_listener_ = -1, admin_listener_ = -1;
    UniqueFd epfd_, clients_epfd_, timerfd_;
    // SIGTERM and SIGINT (blocked by main): stop cleanly, as systemd asks,
    // so the process exits through every destructor (and LeakSanitizer).
    UniqueFd signalfd_;
    UniqueFd spare_fd_;  // given up to refuse a connection when fds run out
    std::unordered_map<int, std::unique_ptr<Conn>> conns_;  // by fd
    // Removed connections, freed when the loop turns: callers up the stack
    // may still hold a reference (and check `dead`).
    std::vector<std::unique_ptr<Conn>> graveyard_;
    Conn* control_conn_ = nullptr;
    std::unordered_map<uint64_t, int> own_inodes_;  // session socket inodes -> conn fd
    std::function<void()> on_timer_;
    RebootSender* reboot_ = nullptr;
    bool paused_ = false;
    size_t held_fds_ = 0;
    uint64_t next_admin_serial_ = 1;  // the fds of kept replies (Conn::pending_fd)
    bool admin_paused_ = false;
    bool draining_ = false;
    bool running_ = true;
    bool ok_ = false;
    int exit_code_ = 0;
};

}  // namespace lu
