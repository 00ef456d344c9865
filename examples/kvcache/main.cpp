// SPDX-License-Identifier: Apache-2.0
// kvcache: a memcached-compatible cache (text protocol) that survives live
// updates of itself and of liveupdated, keeping its items, its listening
// socket and its established client connections.
//
//   kvcache [--listen ADDR] [--port PORT] [--memory MiB] [--session NAME]
//           [--version-tag TAG] [--no-evict] [--takeover PID] [--fail-next]
//           [--events FILE]
//
// Items live in a memfd arena (store.hpp) preserved in the LUO session NAME
// with the listener from the start, so a live update of the daemon alone
// carries them at any time. To hand over to a new version, a hand-off
// (docs/handoff.md: only this service moves, nobody else notices):
//
//   kvcache ... --takeover <old pid> &
//                            # the new version loads, asks the old one
//                            # (SIGUSR2 carrying kHandoffAsk) and waits;
//                            # the old one finishes the requests in hand,
//                            # preserves the client connections and their
//                            # unserved bytes, hands its session to the new
//                            # pid and waits for the outcome: committed, it
//                            # exits; rolled back, it serves on, nothing lost
//
// Or with a reboot of the whole daemon (every other service's fds go stale):
//
//   kill -USR2 <old pid>     # the same preparation, then
//                            # "kvcache: ready for live update", waits
//   liveupdatectl reboot     # the old kvcache exits by itself once it is done
//   kvcache ...              # the new version: retrieves all, serves
//
// --fail-next: a next version that retrieves everything and then fails
// before FINISH, to show the rollback.
//
// --events FILE: appends "NAME EPOCH-SECONDS" lines for the steps of a
// hand-off (the asking side: asked, retrieved, adopted, finished, preserved,
// serving; the handing side: ask_received, conns_preserved, offered,
// committed), written once the step that matters is over (the file write is
// not timed), for bench/kvcache_compare.sh to split the time nobody serves.
//
// One thread, one epoll loop: every request runs to completion, so the
// arena is consistent between any two events, and a SIGUSR2 (a signalfd
// event) always finds every connection at a request boundary.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "handover.hpp"
#include "liveupdate/client.h"
#include "protocol.hpp"
#include "store.hpp"

namespace kvcache {
namespace {

constexpr uint64_t kListenerTag = 0, kSignalTag = 1, kSessionTag = 2, kFirstClientTag = 16;
constexpr char kVersion[] = "1.6.0-kvcache";
// The value a --takeover's SIGUSR2 carries (sigqueue): "hand off to me",
// rather than an operator's plain kill -USR2 before a reboot.
constexpr int kHandoffAsk = 0x6b76686f;  // "kvho"
// What the previous version sends back (SIGUSR2 again) once lu_handoff has
// offered the session, so that the next one waits on its signalfd for the
// exact moment rather than polling the daemon on a timer.
constexpr int kHandoffOffered = 0x6b76686e;  // "kvhn"
// The next version still looks for the session this often without it: a
// previous version that does not send kHandoffOffered, or a lost signal.
constexpr int kHandoffPollMs = 50;
constexpr uint32_t kHandoffTimeoutMs = 30000;
// After liveupdated died (EOWNERDEAD): each attempt to reach the instance
// the keeper starts is bounded by this (the loop does not serve meanwhile),
// and attempts back off from the first delay to the last.
constexpr unsigned kReattachBoundMs = 1000;
constexpr int kReattachFirstMs = 2, kReattachMaxMs = 1000;
// A hand-off cut by a daemon crash is offered again to the same waiting
// next version, at most this many times per ask.
constexpr int kHandoffRetries = 3;
// settle_finish(): the FINISH cut by a crash had been recorded.
constexpr int kCommitted = -2;

struct Options {
    std::string listen = "127.0.0.1";
    std::string port = "11211";
    uint64_t memory_mib = 64;
    std::string session = "kvcache";
    std::string tag;
    bool evict = true;
    pid_t takeover = 0;      // --takeover: the version serving now
    bool fail_next = false;  // --fail-next: fail before FINISH
    std::string events;      // --events: where the hand-off's steps go
    // Tests only: a next version that pauses once it is first offered the
    // session, once it has retrieved everything (before FINISH), or once it
    // has FINISHed it, for a test to kill liveupdated
    // at that moment (tests/kvcache/crash_test.cpp).
    int test_pause_offered_ms = 0, test_pause_adopted_ms = 0, test_pause_finished_ms = 0;
};

struct Client {
    int fd = -1;
    uint64_t tag = 0;
    Conn c;
    bool peer_closed = false;  // we read EOF: serve what is buffered, then close
    uint32_t events = 0;       // the epoll interest currently registered
};

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kvcache: %s\n", buf);
}

// Once everything is the next version's: what is left is tearing down, and
// unmapping an arena of gigabytes is tens of milliseconds of kernel time
// (a page table entry per 4 KiB), spent right when the next version starts
// serving and its clients' backlog arrives. It may wait: at nice 19 it gets
// the CPU after them, yet still a share (SCHED_IDLE could starve it for
// seconds on a busy machine, and whoever waits for its exit with it).
void yield_cpu_for_exit() { setpriority(PRIO_PROCESS, 0, 19); }

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

class Server {
  public:
    explicit Server(Options o) : opt_(std::move(o)) {}
    ~Server();
    int run();

  private:
    bool setup();
    void adopt(int incoming);
    bool make_arena();
    bool make_listener();
    bool open_session(int ctl);
    int take_over(int* ctl);
    int settle_finish(int* ctl);
    void discard_adopted();
    int connect_daemon();
    int reclaim(int ctl);
    int reclaim_blocking(int* ctl);
    bool session_alive();
    void try_reattach();
    void on_session_event();
    int prepare_live_update();
    int await_handoff(int* ctl);
    bool wait_offered(int timeout_ms);
    bool preserve_connections(std::vector<HandedConn>* handed, std::vector<uint64_t>* tags);
    int hand_off(pid_t next);
    int hand_off_once(pid_t next, bool* retry);
    void resume(std::vector<HandedConn>& handed, const std::vector<uint64_t>& tags);
    void accept_clients();
    Client* add_client(int fd, Conn c, bool peer_closed);
    void on_client(Client* cl, uint32_t events);
    void pump(Client* cl);
    void close_client(Client* cl);
    void update_interest(Client* cl);
    int64_t now() const { return static_cast<int64_t>(time(nullptr)); }

    Options opt_;
    ProcessInfo info_;
    int epfd_ = -1, sigfd_ = -1, listen_fd_ = -1, arena_fd_ = -1, session_fd_ = -1;
    void* arena_ = MAP_FAILED;
    uint64_t arena_size_ = 0;
    std::optional<Store> store_;
    std::optional<Protocol> proto_;
    std::unordered_map<uint64_t, std::unique_ptr<Client>> clients_;
    std::vector<std::pair<int, HandedConn>> restored_;  // warm start: fd and state
    uint64_t next_tag_ = kFirstClientTag;
    bool warm_ = false, reattach_ = false, reattach_warned_ = false;
    bool adopt_not_handed_ = false;  // adopt(): the arena was not handed over
    std::chrono::steady_clock::time_point last_reattach_;
    int reattach_delay_ms_ = kReattachFirstMs;
    // What the session holds: (token, our fd). The files are ours; after a
    // daemon crash they are retrieved back under these tokens and preserved
    // again. state_fd_: the connection-state memfd while it is preserved.
    std::vector<std::pair<uint64_t, int>> preserved_;
    int state_fd_ = -1;
    pid_t pending_handoff_ = 0;  // a hand-off cut by a daemon crash, to offer again
    int handoff_attempts_ = 0;
    std::string start_note_;
    std::vector<int> deferred_signals_;  // read while waiting for the offer: raised again after
    std::vector<std::pair<const char*, timespec>> stamps_;  // --events, not yet written
    void stamp(const char* name) {
        if (opt_.events.empty()) return;
        timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        stamps_.emplace_back(name, t);
    }
    void write_stamps() {
        if (opt_.events.empty() || stamps_.empty()) return;
        if (FILE* f = fopen(opt_.events.c_str(), "a")) {
            for (auto& [name, t] : stamps_)
                fprintf(f, "%s %lld.%06ld\n", name, static_cast<long long>(t.tv_sec),
                        t.tv_nsec / 1000);
            fclose(f);
        }
        stamps_.clear();
    }
};

Server::~Server() {
    for (auto& [tag, cl] : clients_) close(cl->fd);
    if (arena_ != MAP_FAILED) munmap(arena_, arena_size_);
    for (int fd : {epfd_, sigfd_, listen_fd_, arena_fd_, session_fd_, state_fd_})
        if (fd >= 0) close(fd);
}

// lu_open, waiting a little while another agent holds the (exclusive)
// control connection.
int open_control() {
    return lu_open_wait(5000);
}

// The daemon instance that served this connection is gone (SIGKILL, OOM,
// a bug): the library says EOWNERDEAD (a reset or EOF mapped to it); a call
// cut by its bound answers ETIMEDOUT and the fd ENOTCONN after. Not ESTALE:
// that is a completed live update or hand-off, the session moved on.
bool daemon_gone(int err) {
    err = err < 0 ? -err : err;
    return err == EOWNERDEAD || err == ENOTCONN || err == ETIMEDOUT || err == ECONNRESET ||
           err == EPIPE || err == ECONNREFUSED;
}

// Running: not gone, not a zombie (a parent that has not reaped it yet).
bool process_running(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    FILE* f = fopen(path, "re");
    if (!f) return false;
    char buf[512];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char* p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] && p[2] != 'Z' && p[2] != 'X';
}

bool same_file(int a, int b) {
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

bool Server::setup() {
    const auto t0 = std::chrono::steady_clock::now();
    int ctl = -ENOENT;
    int incoming = -ENOENT;
    if (opt_.takeover) {
        if (take_over(&ctl) < 0) return false;  // adopted and finished there, or a cold start
    } else if ((ctl = open_control()) >= 0) {
        incoming = lu_retrieve_session(ctl, opt_.session.c_str());
    }
    if (ctl == -ENOENT)
        say("warning: no liveupdated: serving WITHOUT persistence (a restart loses the cache)");
    else if (ctl < 0)
        say("warning: cannot open liveupdated (%s): serving WITHOUT persistence", strerror(-ctl));

    if (ctl >= 0) {
        if (incoming >= 0) {
            adopt(incoming);
            stamp("adopted");
            if (opt_.fail_next) {
                // Closed unfinished (exiting does the same): the hand-off
                // rolls back and the previous version serves on.
                say("--fail-next: failing before FINISH: the previous version serves on");
                close(incoming);
                close(ctl);
                return false;
            }
            // Finished before anything is preserved again (EBUSY otherwise).
            if (int r = lu_finish(incoming); r < 0) say("warning: finish: %s", strerror(-r));
            stamp("finished");
            close(incoming);
        } else if (incoming != -ENOENT) {
            say("warning: retrieving session \"%s\": %s", opt_.session.c_str(), strerror(-incoming));
        }
    }
    if (!store_ && !make_arena()) return false;
    if (listen_fd_ < 0 && !make_listener()) return false;
    store_->mark_active();
    // Handed connections are served first: their clients wait since the
    // previous version stopped, and nothing can be handed on before the
    // run loop anyway, so the session's re-creation (round trips to the
    // daemon) comes after.
    const bool serve_first = !restored_.empty();
    if (ctl >= 0 && !serve_first) {
        const bool ok = open_session(ctl);
        close(ctl);  // exclusive: let other agents use the daemon
        if (!ok) return false;
        stamp("preserved");
    }

    proto_.emplace(&*store_, &info_);
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    ev.data.u64 = kSignalTag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, sigfd_, &ev);
    if (session_fd_ >= 0) {
        ev.data.u64 = kSessionTag;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
    }
    size_t conns = restored_.size();
    for (auto& [fd, h] : restored_) {
        Client* cl = add_client(fd, std::move(h.conn), h.peer_closed);
        pump(cl);  // carried replies go out, carried requests are served
    }
    restored_.clear();
    stamp("serving");
    if (ctl >= 0 && serve_first) {
        const bool ok = open_session(ctl);
        close(ctl);
        if (!ok) return false;
        stamp("preserved");
        if (session_fd_ >= 0) {
            ev.events = EPOLLIN;
            ev.data.u64 = kSessionTag;
            epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
        }
    }
    write_stamps();
    for (int sig : deferred_signals_) kill(getpid(), sig);  // blocked: the run loop reads them
    deferred_signals_.clear();

    sockaddr_storage a{};
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
    getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
    say("serving on %s port %s, version %s, %s: %llu items, %zu connections, %.1f ms to start%s",
        host, serv, info_.version.c_str(), warm_ ? "warm start" : "cold start",
        static_cast<unsigned long long>(store_->counters().curr_items), conns, ms_since(t0),
        start_note_.c_str());
    return true;
}

// --takeover: everything is loaded; ask the version serving now to hand its
// session to us, then wait until it is offered, so that nobody serves only
// for the hand-off itself. The control connection is opened before the ask,
// so that the retrieve right after the offer is a single round trip; it is
// exclusive, so it is not held across a second wait. The incoming session,
// or -errno (then a cold start); *ctl the control connection, or -errno.
int Server::await_handoff(int* ctl) {
    sigval v{};
    v.sival_int = kHandoffAsk;
    static bool asked = false;  // once: a hand-off cut by a daemon crash is offered again unasked
    const auto t0 = std::chrono::steady_clock::now();
    if (*ctl < 0) *ctl = open_control();
    if (*ctl < 0) return *ctl;
    if (!asked) {
        stamp("asked");
        if (sigqueue(opt_.takeover, SIGUSR2, v) < 0) {
            say("warning: --takeover %d: %s: a cold start", static_cast<int>(opt_.takeover), strerror(errno));
            return -ESRCH;
        }
        asked = true;
    }
    for (;;) {
        if (wait_offered(kHandoffPollMs) && opt_.test_pause_offered_ms > 0) {
            say("offered: pausing %d ms (--test-pause-offered)", opt_.test_pause_offered_ms);
            std::this_thread::sleep_for(std::chrono::milliseconds(opt_.test_pause_offered_ms));
            opt_.test_pause_offered_ms = 0;
        }
        if (*ctl < 0) *ctl = open_control();
        if (*ctl < 0 && daemon_gone(*ctl) && ms_since(t0) < kHandoffTimeoutMs) continue;
        if (*ctl < 0) return *ctl;
        const int s = lu_retrieve_session(*ctl, opt_.session.c_str());
        if (s < 0 && daemon_gone(s) && ms_since(t0) < kHandoffTimeoutMs) {
            // liveupdated died while we waited: the instance the keeper
            // starts has the session (incoming, or offered again by the
            // previous version): wait on with a new control connection.
            say("liveupdated went away while waiting for the hand-off (%s): waiting on", strerror(-s));
            close(*ctl);
            *ctl = -1;
            continue;
        }
        if (s >= 0) {
            stamp("retrieved");
            start_note_ += " (taken over from pid " + std::to_string(opt_.takeover) + " in " +
                           std::to_string(static_cast<int>(ms_since(t0))) + " ms)";
            return s;
        }
        if (s != -ENOENT || ms_since(t0) > kHandoffTimeoutMs) {
            say("warning: --takeover: the session was not offered (%s): a cold start",
                s == -ENOENT ? "timed out" : strerror(-s));
            return s;
        }
        close(*ctl);
        *ctl = -1;
    }
}

// --takeover: waits for the session, adopts it and FINISHes it (the commit).
// A daemon crash before the commit means the session is not ours: what was
// adopted is dropped (not written, not served) and we wait again, for the
// previous version to offer it again, or for the session as the keeper's
// next instance brought it back. A crash during the FINISH leaves open
// whether it committed: settle_finish() finds out. 1: adopted and
// finished; 0: none, a cold start; -1: --fail-next.
int Server::take_over(int* ctl) {
    int in = -1;
    for (;;) {
        if (in < 0) in = await_handoff(ctl);
        if (in < 0) return 0;
        adopt(in);
        stamp("adopted");
        if (adopt_not_handed_) {
            // Not a hand-off: the serving version's own session, incoming
            // after a daemon crash, retrieved before that version took it
            // back. Closing it finishes it: its files are that version's,
            // which holds them and creates its session again (ENOENT). We
            // have neither served nor written: wait on.
            say("the session retrieved was not handed over (liveupdated restarted while pid %d "
                "serves): left to it, waiting on",
                static_cast<int>(opt_.takeover));
            discard_adopted();
            close(in);
            close(*ctl);
            *ctl = -1;
            std::this_thread::sleep_for(std::chrono::milliseconds(kHandoffPollMs));
            continue;
        }
        if (opt_.fail_next) {
            // Closed unfinished (exiting does the same): the hand-off
            // rolls back and the previous version serves on.
            say("--fail-next: failing before FINISH: the previous version serves on");
            close(in);
            close(*ctl);
            return -1;
        }
        if (opt_.test_pause_adopted_ms > 0) {
            say("adopted: pausing %d ms before FINISH (--test-pause-adopted)", opt_.test_pause_adopted_ms);
            std::this_thread::sleep_for(std::chrono::milliseconds(opt_.test_pause_adopted_ms));
            opt_.test_pause_adopted_ms = 0;
        }
        // Finished before anything is preserved again (EBUSY otherwise).
        const int r = lu_finish(in);
        close(in);
        in = -1;
        if (r < 0 && daemon_gone(r)) {
            say("liveupdated went away at our FINISH (%s): did it commit?", strerror(-r));
            const int settled = settle_finish(ctl);
            if (settled == kCommitted) {
                say("it did (the session is gone, pid %d exited, the arena as it handed it over): "
                    "the session is ours",
                    static_cast<int>(opt_.takeover));
            } else {
                discard_adopted();
                if (settled >= 0) {
                    say("it did not: the session is back as it was, adopting it again");
                    in = settled;
                } else {
                    say("it did not: the session is not ours, waiting for it again");
                }
                continue;
            }
        }
        if (r < 0) say("warning: finish: %s", strerror(-r));
        stamp("finished");
        if (opt_.test_pause_finished_ms > 0) {
            say("finished: pausing %d ms (--test-pause-finished)", opt_.test_pause_finished_ms);
            std::this_thread::sleep_for(std::chrono::milliseconds(opt_.test_pause_finished_ms));
        }
        return 1;
    }
}

// Our FINISH got no answer: the daemon died, before or after it recorded
// the commit. Asks the instance the keeper started, and holds what was
// adopted meanwhile (not served, not written):
// - the session is there (RETRIEVE_SESSION gives it): no commit; it is
//   returned, to adopt again (the previous version may have served from it
//   in between, and offered it again);
// - ENOENT, the previous version exited, and the arena is still as it
//   handed it over: the commit was recorded (kCommitted), it is ours;
// - ENOENT while the previous version runs: it took the session back (or
//   is about to exit): wait, it offers the session again; past
//   kHandoffTimeoutMs with the arena back in use, -1 (not ours: wait again).
// *ctl: open on return unless -1.
int Server::settle_finish(int* ctl) {
    if (*ctl >= 0) close(*ctl);
    *ctl = -1;
    // Without an arena adopted the FINISH was never sent to a live daemon.
    if (!store_ || arena_ == MAP_FAILED) return -1;
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        *ctl = open_control();
        if (*ctl >= 0) {
            const int s = lu_retrieve_session(*ctl, opt_.session.c_str());
            if (s >= 0) return s;
            const bool as_handed = Store::handed_over(arena_, arena_size_);
            if (s == -ENOENT && as_handed && !process_running(opt_.takeover)) return kCommitted;
            if (s == -ENOENT && !as_handed && ms_since(t0) > kHandoffTimeoutMs) {
                close(*ctl);
                *ctl = -1;
                return -1;
            }
            close(*ctl);
            *ctl = -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// Drops what adopt() took, touching nothing shared: the previous version
// still serves with these files (no shutdown of its sockets, no write).
void Server::discard_adopted() {
    for (auto& [fd, h] : restored_) close(fd);
    restored_.clear();
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    store_.reset();
    if (arena_ != MAP_FAILED) munmap(arena_, arena_size_);
    arena_ = MAP_FAILED;
    arena_size_ = 0;
    if (arena_fd_ >= 0) close(arena_fd_);
    arena_fd_ = -1;
    warm_ = false;
    start_note_.clear();
}

// Waits on the signalfd (SIGUSR2 is blocked from the start) for the previous
// version's kHandoffOffered, at most timeout_ms. Any other signal is kept
// for the run loop (deferred_signals_), as it would have found it pending.
bool Server::wait_offered(int timeout_ms) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        const int left = timeout_ms - static_cast<int>(ms_since(t0));
        if (left <= 0) return false;
        pollfd p{sigfd_, POLLIN, 0};
        if (poll(&p, 1, left) <= 0) continue;  // timed out (left <= 0 next) or EINTR
        signalfd_siginfo si;
        while (read(sigfd_, &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGUSR2 && si.ssi_code == SI_QUEUE && si.ssi_int == kHandoffOffered &&
                static_cast<pid_t>(si.ssi_pid) == opt_.takeover)
                return true;
            deferred_signals_.push_back(static_cast<int>(si.ssi_signo));
        }
    }
}

// Takes what the previous version handed over: the arena, the listener, the
// connections and their state. Anything invalid is dropped, with a reason.
void Server::adopt(int incoming) {
    adopt_not_handed_ = false;
    const int afd = lu_retrieve_fd(incoming, kArenaToken);
    struct stat st;
    if (afd >= 0 && fstat(afd, &st) == 0 && st.st_size > 0) {
        const auto size = static_cast<uint64_t>(st.st_size);
        void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
        if (p != MAP_FAILED && opt_.takeover && !Store::handed_over(p, size)) {
            // Another version's live arena: not ours to check (it changes
            // under us) nor to take (take_over() leaves it to its owner).
            adopt_not_handed_ = true;
            munmap(p, size);
            close(afd);
            return;
        }
        const std::string why = p == MAP_FAILED ? strerror(errno) : Store::validate(p, size);
        if (why.empty()) {
            arena_fd_ = afd;
            arena_ = p;
            arena_size_ = size;
            store_.emplace(arena_, arena_size_, opt_.evict);
            warm_ = true;
            if (size != opt_.memory_mib << 20)
                start_note_ += " (--memory ignored: the arena handed over is " +
                               std::to_string(size >> 20) + " MiB)";
        } else {
            // Not ours to repair, nor to write: a new arena instead.
            say("warning: discarding the arena handed over: %s", why.c_str());
            if (p != MAP_FAILED) munmap(p, size);
        }
    } else if (afd != -ENOENT) {
        say("warning: no usable arena handed over (%s)", afd < 0 ? strerror(-afd) : "empty");
    }
    if (afd >= 0 && arena_fd_ != afd) close(afd);

    const int lfd = lu_retrieve_fd(incoming, kListenerToken);
    int listening = 0;
    socklen_t len = sizeof listening;
    if (lfd >= 0 && getsockopt(lfd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening) {
        listen_fd_ = lfd;
        fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
    } else if (lfd >= 0) {
        say("warning: the listener handed over is not listening");
        close(lfd);
    }

    const int sfd = lu_retrieve_fd(incoming, kStateToken);
    if (sfd < 0) return;  // a live update of the daemon alone: no connections
    std::string bytes;
    if (fstat(sfd, &st) == 0 && st.st_size > 0 && st.st_size < (1ll << 34)) {
        bytes.resize(static_cast<size_t>(st.st_size));
        size_t got = 0;
        while (got < bytes.size()) {
            const ssize_t n = pread(sfd, bytes.data() + got, bytes.size() - got, static_cast<off_t>(got));
            if (n <= 0) break;
            got += static_cast<size_t>(n);
        }
        bytes.resize(got);
    }
    close(sfd);
    std::vector<HandedConn> conns;
    if (const std::string why = decode_state(bytes, &conns); !why.empty()) {
        say("warning: dropping the connections handed over: state %s", why.c_str());
        return;
    }
    for (HandedConn& h : conns) {
        const int fd = lu_retrieve_fd(incoming, h.token);
        int type = 0;
        len = sizeof type;
        if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
            say("warning: connection %llu not retrieved (%s)", static_cast<unsigned long long>(h.token),
                fd < 0 ? strerror(-fd) : "not a stream socket");
            if (fd >= 0) close(fd);
            continue;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        restored_.emplace_back(fd, std::move(h));
    }
}

bool Server::make_arena() {
    arena_size_ = opt_.memory_mib << 20;
    arena_fd_ = memfd_create("kvcache-arena", MFD_CLOEXEC);
    if (arena_fd_ < 0 || ftruncate(arena_fd_, static_cast<off_t>(arena_size_)) < 0) {
        say("error: arena memfd: %s", strerror(errno));
        return false;
    }
    arena_ = mmap(nullptr, arena_size_, PROT_READ | PROT_WRITE, MAP_SHARED, arena_fd_, 0);
    if (arena_ == MAP_FAILED) {
        say("error: mmap arena: %s", strerror(errno));
        return false;
    }
    Store::format(arena_, arena_size_, now());
    store_.emplace(arena_, arena_size_, opt_.evict);
    return true;
}

bool Server::make_listener() {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (int r = getaddrinfo(opt_.listen.c_str(), opt_.port.c_str(), &hints, &res); r != 0) {
        say("error: --listen %s --port %s: %s", opt_.listen.c_str(), opt_.port.c_str(), gai_strerror(r));
        return false;
    }
    listen_fd_ = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const bool ok = listen_fd_ >= 0 && bind(listen_fd_, res->ai_addr, res->ai_addrlen) == 0 &&
                    listen(listen_fd_, 1024) == 0;
    const int err = errno;
    freeaddrinfo(res);
    if (!ok) say("error: listen on %s port %s: %s", opt_.listen.c_str(), opt_.port.c_str(), strerror(err));
    return ok;
}

// A new outgoing session holding what preserved_ lists (the arena and the
// listener while serving): a live update of the daemon at any time carries
// them. liveupdated gone meanwhile: re-attach later (try_reattach).
bool Server::open_session(int ctl) {
    if (preserved_.empty()) preserved_ = {{kArenaToken, arena_fd_}, {kListenerToken, listen_fd_}};
    const int s = lu_create_session(ctl, opt_.session.c_str());
    if (s == -EEXIST) {
        say("error: session \"%s\" is held by another process (another kvcache?)", opt_.session.c_str());
        return false;
    }
    int r = s;
    for (size_t i = 0; r >= 0 && i < preserved_.size(); i++)
        r = lu_preserve_fd(s, preserved_[i].second, preserved_[i].first);
    if (r < 0 && daemon_gone(r)) {
        say("liveupdated went away while creating session \"%s\" (%s): will re-attach",
            opt_.session.c_str(), strerror(-r));
        if (s >= 0) close(s);
        reattach_ = true;
        return true;
    }
    if (r < 0) {
        say("warning: cannot preserve into session \"%s\" (%s): serving WITHOUT persistence",
            opt_.session.c_str(), strerror(-r));
        if (s >= 0) close(s);
        return true;
    }
    session_fd_ = s;
    reattach_delay_ms_ = kReattachFirstMs;
    return true;
}

// A control connection to liveupdated, each step bounded by
// kReattachBoundMs: after a crash the keeper's next instance answers within
// milliseconds, and until then the caller serves (or backs off) rather than
// wait. The bound is the process's (lu_set_timeout_ms), restored by the
// caller through reattach_bound below.
int Server::connect_daemon() { return lu_open_wait(kReattachBoundMs); }

struct ReattachBound {
    int prev;
    ReattachBound() : prev(lu_set_timeout_ms(kReattachBoundMs)) {}
    ~ReattachBound() { lu_set_timeout_ms(static_cast<unsigned>(prev)); }
};

// Takes our session back from the instance that serves now (after a crash
// it is incoming under its name, as after a reboot): RETRIEVE_SESSION, each
// file we preserved by its token (the same files we hold: checked, then the
// copies closed), FINISH. 1: it was there and is finished; 0: ENOENT, it is
// not there (a next owner has it, or nobody: see the callers); <0: the
// daemon could not be reached or died again (try again).
int Server::reclaim(int ctl) {
    const int in = lu_retrieve_session(ctl, opt_.session.c_str());
    if (in == -ENOENT) return 0;
    if (in < 0) return in;
    for (const auto& [token, fd] : preserved_) {
        const int got = lu_retrieve_fd(in, token);
        if (got >= 0) {
            if (!same_file(got, fd))
                say("warning: file %llu of the session taken back is not ours: ignored",
                    static_cast<unsigned long long>(token));
            close(got);
        } else if (daemon_gone(got)) {
            close(in);
            return got;
        }  // ENOENT: not preserved when the daemon died (it died in between)
    }
    const int r = lu_finish(in);
    close(in);
    if (r < 0 && daemon_gone(r)) return r;
    if (r < 0) say("warning: finishing the session taken back: %s", strerror(-r));
    return 1;
}

// reclaim(), retried with backoff until the daemon answers: for a version
// that must not serve before it knows who has the session (its arena is
// marked handed over: a next version may take it). *ctl: the control
// connection, left open for the session to be created again.
int Server::reclaim_blocking(int* ctl) {
    ReattachBound bound;
    const auto t0 = std::chrono::steady_clock::now();
    int delay = kReattachFirstMs, warned_s = 0;
    for (;;) {
        *ctl = connect_daemon();
        int r = *ctl;
        if (*ctl >= 0 && (r = reclaim(*ctl)) >= 0) return r;
        if (*ctl >= 0) close(*ctl);
        *ctl = -1;
        if (static_cast<int>(ms_since(t0) / 10000) > warned_s) {
            warned_s = static_cast<int>(ms_since(t0) / 10000);
            say("warning: liveupdated still unreachable after %d s (%s): waiting for it", warned_s * 10,
                strerror(-r));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        delay = std::min(delay * 2, kReattachMaxMs);
    }
}

// False if the session fd no longer answers (its daemon instance is gone),
// and the re-attach is then done, blocking: a preparation starts only from a
// live session.
bool Server::session_alive() {
    if (session_fd_ < 0) return false;
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    if (lu_get_name(session_fd_, name) == 0) return true;
    on_session_event();
    return session_fd_ >= 0;
}

// The daemon went through a live update without us (ESTALE), or died and
// came back (EOWNERDEAD): our session is the new instance's incoming
// session. Take it back, finish it, and preserve again into a new one. The
// loop serves between attempts: this version's arena is its own.
void Server::try_reattach() {
    ReattachBound bound;
    last_reattach_ = std::chrono::steady_clock::now();
    const int ctl = connect_daemon();
    int r = ctl;
    if (ctl >= 0 && (r = reclaim(ctl)) >= 0) {
        // 0 (ENOENT): nobody has it (or a next version took our live session
        // after a crash and closed it, leaving it to us): a new one anyway.
        reattach_ = false;
        if (open_session(ctl) && session_fd_ >= 0) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = kSessionTag;
            epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
            say("re-attached to liveupdated (session %s)", r ? "taken back" : "created again");
            reattach_warned_ = false;
        }
        close(ctl);
        return;
    }
    if (ctl >= 0) close(ctl);
    if (!reattach_warned_) say("warning: re-attaching to liveupdated: %s (will retry, serving meanwhile)", strerror(-r));
    reattach_warned_ = true;
    reattach_delay_ms_ = std::min(reattach_delay_ms_ * 2, kReattachMaxMs);
}

// The session fd is readable only when the daemon instance that served it is
// gone: a live update of the daemon committed (ESTALE), or it died
// (EOWNERDEAD). Either way we keep serving and re-attach.
void Server::on_session_event() {
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    const int e = lu_get_name(session_fd_, name);
    if (e == 0) return;
    if (e == -ESTALE)
        say("liveupdated went through a live update: re-attaching");
    else
        say("liveupdated died (%s): serving on, re-attaching", strerror(-e));
    epoll_ctl(epfd_, EPOLL_CTL_DEL, session_fd_, nullptr);
    close(session_fd_);
    session_fd_ = -1;
    reattach_ = true;
    reattach_warned_ = false;
    reattach_delay_ms_ = kReattachFirstMs;
    try_reattach();
}

// SIGUSR2: stop at a request boundary on every connection, hand the
// connections and their state to the session, then never touch anything
// again: wait for the live update to take it all, and exit. If liveupdated
// dies meanwhile (not a live update: EOWNERDEAD, not ESTALE), the session
// is taken back, preserved again as it was, and the wait goes on: the
// operator's reboot still finds everything prepared.
int Server::prepare_live_update() {
    if (reattach_) try_reattach();
    if (!session_alive()) {
        say("warning: SIGUSR2 but no liveupdated session: cannot hand over; still serving");
        return -1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<HandedConn> handed;
    std::vector<uint64_t> tags;
    if (!preserve_connections(&handed, &tags)) {
        say("liveupdated went away while preparing: serving on; send SIGUSR2 again");
        resume(handed, tags);
        return -1;
    }
    size_t in_bytes = 0, out_bytes = 0;
    for (const HandedConn& h : handed) {
        in_bytes += h.conn.in_avail();
        out_bytes += h.conn.out_avail();
    }
    say("ready for live update (%zu connections handed over, carrying %zu request bytes and %zu reply "
        "bytes, %.1f ms)",
        handed.size(), in_bytes, out_bytes, ms_since(t0));

    // Hold the session (closing it would unpreserve everything) until the
    // daemon instance that has it is gone: then the next version has it.
    for (;;) {
        pollfd p[2] = {{session_fd_, POLLIN, 0}, {sigfd_, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) return 1;
        if (p[1].revents & POLLIN) {
            signalfd_siginfo si;
            if (read(sigfd_, &si, sizeof si) == sizeof si && si.ssi_signo != SIGUSR2) {
                say("signal %u while waiting for the live update: exiting, the hand-over is undone",
                    si.ssi_signo);
                return 0;
            }
        }
        if (p[0].revents) {
            char name[LIVEUPDATE_SESSION_NAME_LENGTH];
            const int e = lu_get_name(session_fd_, name);
            if (e == -ESTALE) {
                say("handed over to the next version: exiting");
                yield_cpu_for_exit();
                return 0;
            }
            if (e < 0) {
                say("liveupdated died while waiting for the live update (%s): taking the session back",
                    strerror(-e));
                int ctl = -1;
                if (reclaim_blocking(&ctl) == 0) {
                    // Marked handed over, and gone: a next version took it
                    // from the instance the keeper started.
                    close(ctl);
                    say("the next version has the session: exiting");
                    yield_cpu_for_exit();
                    return 0;
                }
                close(session_fd_);
                session_fd_ = -1;
                {
                    ReattachBound bound;
                    open_session(ctl);  // everything again, under the same tokens
                }
                close(ctl);
                if (session_fd_ < 0) {
                    say("warning: cannot preserve the prepared session again: serving on; send SIGUSR2 "
                        "again");
                    resume(handed, tags);
                    return -1;
                }
                say("ready for live update again (session taken back after liveupdated restarted)");
                continue;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
}

// Stops at a request boundary on every connection and preserves each, with
// its unserved bytes, into the session; the arena is marked handed over
// (its last write). *tags: each handed connection's client, in order. False
// if liveupdated went away meanwhile: nothing is marked, and resume() gives
// back what was moved.
bool Server::preserve_connections(std::vector<HandedConn>* handed_out, std::vector<uint64_t>* tags_out) {
    std::vector<HandedConn>& handed = *handed_out;
    epoll_ctl(epfd_, EPOLL_CTL_DEL, listen_fd_, nullptr);  // new connections wait in the backlog
    uint64_t token = kFirstConnToken;
    std::vector<uint64_t> tags;
    for (auto& [tag, cl] : clients_) tags.push_back(tag);
    for (uint64_t tag : tags) {
        pump(clients_.at(tag).get());  // last chance to send what is pending; may close it
        auto it = clients_.find(tag);
        if (it == clients_.end()) continue;
        Client* cl = it->second.get();
        if (int r = lu_preserve_fd(session_fd_, cl->fd, token); r < 0) {
            if (daemon_gone(r)) return false;  // the client stays ours, as it is
            say("warning: cannot preserve a connection (%s): closing it", strerror(-r));
            close_client(cl);
            continue;
        }
        preserved_.emplace_back(token, cl->fd);
        HandedConn& h = handed.emplace_back();
        h.token = token++;
        h.conn = std::move(cl->c);
        h.peer_closed = cl->peer_closed;
        tags_out->push_back(tag);
    }
    const std::string state = encode_state(handed);
    const int sfd = memfd_create("kvcache-conns", MFD_CLOEXEC);
    size_t put = 0;
    while (sfd >= 0 && put < state.size()) {
        const ssize_t n = write(sfd, state.data() + put, state.size() - put);
        if (n <= 0) break;
        put += static_cast<size_t>(n);
    }
    int r = sfd < 0 ? -errno : put < state.size() ? -EIO : lu_preserve_fd(session_fd_, sfd, kStateToken);
    if (r < 0 && daemon_gone(r)) {
        if (sfd >= 0) close(sfd);
        return false;
    }
    if (r == 0) {
        // Kept while preserved: preserved again if the daemon dies.
        if (state_fd_ >= 0) close(state_fd_);
        state_fd_ = sfd;
        preserved_.emplace_back(kStateToken, state_fd_);
    } else if (sfd >= 0) {
        close(sfd);
    }
    if (r < 0) say("warning: cannot preserve the connection state (%s): they will be dropped", strerror(-r));
    store_->mark_handed_over();  // the last write to the arena
    return true;
}

// A --takeover asked: hand everything to `next` (docs/handoff.md) and wait
// for the outcome. Committed: exit (0). Rolled back: serve on (-1), every
// connection with its bytes, the requests that came meanwhile in their
// sockets; the next version wrote nothing (kvcache writes the arena only
// after FINISH, the commit). liveupdated died meanwhile: see hand_off_once.
int Server::hand_off(pid_t next) {
    if (pending_handoff_ != next) handoff_attempts_ = 0;
    pending_handoff_ = 0;
    bool retry = false;
    const int r = hand_off_once(next, &retry);
    if (r < 0 && retry && ++handoff_attempts_ <= kHandoffRetries && kill(next, 0) == 0)
        pending_handoff_ = next;  // the run loop offers it again once re-attached
    return r;
}

// One attempt. If liveupdated dies during it (EOWNERDEAD from the offer or
// the wait), whether the next version committed first is unknown: we do
// not serve until the session answers it. Taken back (RETRIEVE_SESSION
// gives it): it did not reach the next version; serve on, and *retry (the
// next version, still waiting, gets it offered again). ENOENT: the next
// version has it (its FINISH came first, or it retrieved it from the
// instance the keeper started): exit as after a commit.
int Server::hand_off_once(pid_t next, bool* retry) {
    if (reattach_) try_reattach();
    if (!session_alive()) {
        say("warning: asked to hand off but no liveupdated session: still serving");
        *retry = reattach_;
        return -1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    stamp("ask_received");
    std::vector<HandedConn> handed;
    std::vector<uint64_t> tags;
    if (!preserve_connections(&handed, &tags)) {
        say("liveupdated went away while preparing the hand-off: serving on");
        resume(handed, tags);
        *retry = true;
        return -1;
    }
    stamp("conns_preserved");
    int reason = 0;
    int r = lu_handoff(session_fd_, next, kHandoffTimeoutMs, 0);
    if (r == 0) {
        stamp("offered");
        // The next version waits for this (an older one polls: harmless).
        sigval v{};
        v.sival_int = kHandoffOffered;
        sigqueue(next, SIGUSR2, v);
    }
    if (r == 0) r = lu_handoff_wait(session_fd_, &reason);
    stamp("committed");
    write_stamps();
    if (r == LU_HANDOFF_COMMITTED) {
        say("handed off to pid %d (%zu connections, %.1f ms): exiting", static_cast<int>(next),
            handed.size(), ms_since(t0));
        yield_cpu_for_exit();
        return 0;
    }
    if (r < 0 && daemon_gone(r)) {
        say("liveupdated died during the hand-off to pid %d (%s): asking it who has the session",
            static_cast<int>(next), strerror(-r));
        int ctl = -1;
        if (reclaim_blocking(&ctl) == 0) {
            close(ctl);
            say("handed off to pid %d (the session is gone: the next version has it, liveupdated "
                "restarted): exiting",
                static_cast<int>(next));
            yield_cpu_for_exit();
            return 0;
        }
        close(ctl);
        say("hand-off to pid %d cut by liveupdated's restart: the session is ours again, serving on",
            static_cast<int>(next));
        resume(handed, tags);
        *retry = true;
        return -1;
    }
    say("hand-off to pid %d rolled back (%s): serving on", static_cast<int>(next),
        strerror(r < 0 ? -r : reason));
    resume(handed, tags);
    return -1;
}

// After a rollback: the connections are ours again, as they were. The
// session still holds them and the state: a new one, with the arena and the
// listener only, takes its place.
void Server::resume(std::vector<HandedConn>& handed, const std::vector<uint64_t>& tags) {
    if (Store::handed_over(arena_, arena_size_)) store_->undo_handed_over();
    for (size_t i = 0; i < handed.size(); i++) {
        Client* cl = clients_.at(tags[i]).get();
        cl->c = std::move(handed[i].conn);
    }
    preserved_.clear();
    if (state_fd_ >= 0) close(state_fd_);
    state_fd_ = -1;
    if (session_fd_ >= 0) {
        epoll_ctl(epfd_, EPOLL_CTL_DEL, session_fd_, nullptr);
        close(session_fd_);  // unpreserves all: our fds stay ours
    }
    session_fd_ = -1;
    {
        ReattachBound bound;
        if (const int ctl = connect_daemon(); ctl >= 0) {
            if (open_session(ctl) && session_fd_ >= 0) {
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = kSessionTag;
                epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
            }
            close(ctl);
        } else {
            reattach_ = true;  // the loop serves and re-attaches
        }
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    std::vector<Client*> all;
    for (auto& [tag, cl] : clients_) all.push_back(cl.get());
    for (Client* cl : all) pump(cl);  // what came meanwhile is served now
}

Client* Server::add_client(int fd, Conn c, bool peer_closed) {
    auto cl = std::make_unique<Client>();
    cl->fd = fd;
    cl->tag = next_tag_++;
    cl->c = std::move(c);
    cl->peer_closed = peer_closed;
    epoll_event ev{};
    ev.data.u64 = cl->tag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    info_.curr_connections++;
    Client* raw = cl.get();
    clients_.emplace(raw->tag, std::move(cl));
    return raw;
}

void Server::accept_clients() {
    for (int i = 0; i < 256; i++) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) say("warning: accept: %s", strerror(errno));
            return;
        }
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        store_->counters().total_connections++;
        update_interest(add_client(fd, Conn{}, false));
    }
}

void Server::close_client(Client* cl) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, cl->fd, nullptr);
    // A handed-over socket may still have other holders (the previous
    // version until it exits): shut it down so that the client sees the end.
    shutdown(cl->fd, SHUT_RDWR);
    close(cl->fd);
    info_.curr_connections--;
    clients_.erase(cl->tag);
}

void Server::on_client(Client* cl, uint32_t events) {
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !cl->peer_closed) {
        char buf[65536];
        while (cl->c.in_avail() < kInCap) {
            const ssize_t n = recv(cl->fd, buf, sizeof buf, 0);
            if (n > 0) {
                cl->c.in.append(buf, static_cast<size_t>(n));
                info_.bytes_read += static_cast<uint64_t>(n);
            } else if (n == 0) {
                cl->peer_closed = true;
                break;
            } else if (errno == EAGAIN || errno == EINTR) {
                break;
            } else {
                close_client(cl);
                return;
            }
        }
    }
    pump(cl);
}

// Serve what is buffered, send what is ready, repeat while sending frees
// room for more replies; then close or wait for the socket.
void Server::pump(Client* cl) {
    Conn& c = cl->c;
    for (int round = 0; round < 64; round++) {
        proto_->serve(c, now());
        const bool was_full = c.out_avail() > kOutHigh;
        while (c.out_avail()) {
            const ssize_t n = send(cl->fd, c.out.data() + c.out_pos, c.out_avail(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                c.out_pos += static_cast<size_t>(n);
                info_.bytes_written += static_cast<uint64_t>(n);
            } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                break;
            } else {
                close_client(cl);
                return;
            }
        }
        if (c.out_pos == c.out.size()) {
            c.out.clear();
            c.out_pos = 0;
            if (c.out.capacity() > (256u << 10)) c.out.shrink_to_fit();  // idle connections stay small
        } else if (c.out_pos > (1u << 20)) {
            c.out.erase(0, c.out_pos);
            c.out_pos = 0;
        }
        if (!was_full || c.out_avail() > kOutHigh) break;
    }
    if (c.close_now || ((c.close_after_write || cl->peer_closed) && c.out_avail() == 0)) {
        close_client(cl);
        return;
    }
    update_interest(cl);
}

void Server::update_interest(Client* cl) {
    const Conn& c = cl->c;
    uint32_t want = 0;
    if (!cl->peer_closed && !c.close_after_write && c.in_avail() < kInCap && c.out_avail() <= kOutHigh)
        want |= EPOLLIN;
    if (c.out_avail()) want |= EPOLLOUT;
    if (want == cl->events) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = cl->tag;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, cl->fd, &ev);
    cl->events = want;
}

int Server::run() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGUSR2, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);
    sigfd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    // A kvcache may hold many connections, each an fd here and, while handed
    // over, in liveupdated.
    rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    info_.version = kVersion + (opt_.tag.empty() ? "" : "+" + opt_.tag);
    info_.pid = getpid();
    info_.started = now();
    info_.evictions = opt_.evict;
    if (!setup()) return 1;
    info_.limit_maxbytes = arena_size_;

    epoll_event events[256];
    for (;;) {
        const int n = epoll_wait(epfd_, events, 256, reattach_ || pending_handoff_ ? reattach_delay_ms_ : -1);
        if (n < 0 && errno != EINTR) {
            say("error: epoll_wait: %s", strerror(errno));
            return 1;
        }
        if (reattach_ && ms_since(last_reattach_) >= reattach_delay_ms_) try_reattach();
        // A hand-off cut by a daemon crash: offered again once re-attached,
        // if the next version still waits (it waits for the offer).
        if (pending_handoff_ && !reattach_ && session_fd_ >= 0) {
            const pid_t next = pending_handoff_;
            say("offering the session to pid %d again", static_cast<int>(next));
            if (int r = hand_off(next); r >= 0) return r;
        }
        for (int i = 0; i < n; i++) {
            const uint64_t tag = events[i].data.u64;
            if (tag == kListenerTag) {
                accept_clients();
            } else if (tag == kSignalTag) {
                signalfd_siginfo si;
                while (read(sigfd_, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo != SIGUSR2) {
                        say("signal %u: exiting", si.ssi_signo);
                        return 0;
                    }
                    // A late kHandoffOffered (taken over on a timed look
                    // before it came) is no request of the operator's.
                    if (si.ssi_code == SI_QUEUE && si.ssi_int == kHandoffOffered) continue;
                    const bool ask = si.ssi_code == SI_QUEUE && si.ssi_int == kHandoffAsk;
                    if (int r = ask ? hand_off(static_cast<pid_t>(si.ssi_pid)) : prepare_live_update(); r >= 0)
                        return r;
                }
            } else if (tag == kSessionTag) {
                if (session_fd_ >= 0) on_session_event();
            } else if (auto it = clients_.find(tag); it != clients_.end()) {
                on_client(it->second.get(), events[i].events);
            }
        }
    }
}

int usage(const char* why) {
    if (why) fprintf(stderr, "kvcache: %s\n", why);
    fprintf(stderr,
            "usage: kvcache [--listen ADDR] [--port PORT] [--memory MiB] [--session NAME]\n"
            "               [--version-tag TAG] [--no-evict] [--takeover PID] [--fail-next]\n"
            "               [--events FILE]\n");
    return 2;
}

}  // namespace
}  // namespace kvcache

int main(int argc, char** argv) {
    using namespace kvcache;
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--no-evict") {
            o.evict = false;
        } else if (a == "--fail-next") {
            o.fail_next = true;
        } else if (a == "--help" || a == "-h") {
            usage(nullptr);
            return 0;
        } else if (!has_value) {
            return usage(("missing value or unknown option: " + a).c_str());
        } else if (a == "--listen") {
            o.listen = argv[++i];
        } else if (a == "--port") {
            o.port = argv[++i];
        } else if (a == "--memory") {
            char* end;
            o.memory_mib = strtoull(argv[++i], &end, 10);
            if (*end || o.memory_mib < 2 || o.memory_mib > (1u << 20))
                return usage("--memory: MiB, from 2 to 1048576");
        } else if (a == "--session") {
            o.session = argv[++i];
            if (o.session.empty() || o.session.size() >= LIVEUPDATE_SESSION_NAME_LENGTH)
                return usage("--session: 1 to 63 bytes");
        } else if (a == "--takeover") {
            char* end;
            const long pid = strtol(argv[++i], &end, 10);
            if (*end || pid <= 1 || pid > INT32_MAX) return usage("--takeover: the pid of the version serving now");
            o.takeover = static_cast<pid_t>(pid);
        } else if (a == "--events") {
            o.events = argv[++i];
        } else if (a == "--test-pause-offered" || a == "--test-pause-adopted" || a == "--test-pause-finished") {
            const int ms = atoi(argv[++i]);
            if (ms <= 0) return usage("--test-pause-*: milliseconds");
            (a == "--test-pause-offered"   ? o.test_pause_offered_ms
             : a == "--test-pause-adopted" ? o.test_pause_adopted_ms
                                           : o.test_pause_finished_ms) = ms;
        } else if (a == "--version-tag") {
            o.tag = argv[++i];
            if (o.tag.find_first_of(" \r\n") != std::string::npos) return usage("--version-tag: no spaces");
        } else {
            return usage(("unknown option: " + a).c_str());
        }
    }
    Server server(std::move(o));
    return server.run();
}
