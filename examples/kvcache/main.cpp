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
    void try_reattach();
    void on_session_event();
    int prepare_live_update();
    int await_handoff(int* ctl);
    bool wait_offered(int timeout_ms);
    void preserve_connections(std::vector<HandedConn>* handed, std::vector<uint64_t>* tags);
    int hand_off(pid_t next);
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
    std::chrono::steady_clock::time_point last_reattach_;
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
    for (int fd : {epfd_, sigfd_, listen_fd_, arena_fd_, session_fd_})
        if (fd >= 0) close(fd);
}

// lu_open, waiting a little while another agent holds the (exclusive)
// control connection.
int open_control() {
    return lu_open_wait(5000);
}

bool Server::setup() {
    const auto t0 = std::chrono::steady_clock::now();
    int ctl = -ENOENT;
    const int incoming = opt_.takeover ? await_handoff(&ctl)
                         : (ctl = open_control()) >= 0 ? lu_retrieve_session(ctl, opt_.session.c_str())
                                                       : ctl;
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
    const auto t0 = std::chrono::steady_clock::now();
    *ctl = open_control();
    if (*ctl < 0) return *ctl;
    stamp("asked");
    if (sigqueue(opt_.takeover, SIGUSR2, v) < 0) {
        say("warning: --takeover %d: %s: a cold start", static_cast<int>(opt_.takeover), strerror(errno));
        return -ESRCH;
    }
    for (;;) {
        wait_offered(kHandoffPollMs);
        if (*ctl < 0) *ctl = open_control();
        if (*ctl < 0) return *ctl;
        const int s = lu_retrieve_session(*ctl, opt_.session.c_str());
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
    const int afd = lu_retrieve_fd(incoming, kArenaToken);
    struct stat st;
    if (afd >= 0 && fstat(afd, &st) == 0 && st.st_size > 0) {
        const auto size = static_cast<uint64_t>(st.st_size);
        void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
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

// A new outgoing session holding the arena and the listener from now on: a
// live update of the daemon at any time carries them.
bool Server::open_session(int ctl) {
    const int s = lu_create_session(ctl, opt_.session.c_str());
    if (s == -EEXIST) {
        say("error: session \"%s\" is held by another process (another kvcache?)", opt_.session.c_str());
        return false;
    }
    int r = s;
    if (s >= 0 && (r = lu_preserve_fd(s, arena_fd_, kArenaToken)) == 0)
        r = lu_preserve_fd(s, listen_fd_, kListenerToken);
    if (r < 0) {
        say("warning: cannot preserve into session \"%s\" (%s): serving WITHOUT persistence",
            opt_.session.c_str(), strerror(-r));
        if (s >= 0) close(s);
        return true;
    }
    session_fd_ = s;
    return true;
}

// The daemon went through a live update without us: our session is now its
// incoming session. Finish it and preserve again into a new one.
void Server::try_reattach() {
    last_reattach_ = std::chrono::steady_clock::now();
    const int ctl = lu_open();
    if (ctl < 0) {
        if (!reattach_warned_) say("warning: re-attaching to liveupdated: %s (will retry)", strerror(-ctl));
        reattach_warned_ = true;
        return;
    }
    const int incoming = lu_retrieve_session(ctl, opt_.session.c_str());
    if (incoming >= 0) {
        lu_finish(incoming);  // its files are ours already: we hold the originals
        close(incoming);
    }
    reattach_ = false;
    if (open_session(ctl) && session_fd_ >= 0) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kSessionTag;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
        say("re-attached to liveupdated after its live update");
    }
    close(ctl);
}

// The session fd is readable only when the daemon instance that served it is
// gone (a live update of the daemon committed).
void Server::on_session_event() {
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    if (lu_get_name(session_fd_, name) == 0) return;
    epoll_ctl(epfd_, EPOLL_CTL_DEL, session_fd_, nullptr);
    close(session_fd_);
    session_fd_ = -1;
    reattach_ = true;
    reattach_warned_ = false;
    try_reattach();
}

// SIGUSR2: stop at a request boundary on every connection, hand the
// connections and their state to the session, then never touch anything
// again: wait for the live update to take it all, and exit.
int Server::prepare_live_update() {
    if (reattach_) try_reattach();
    if (session_fd_ < 0) {
        say("warning: SIGUSR2 but no liveupdated session: cannot hand over; still serving");
        return -1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<HandedConn> handed;
    std::vector<uint64_t> tags;
    preserve_connections(&handed, &tags);
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
            if (lu_get_name(session_fd_, name) < 0) {
                say("handed over to the next version: exiting");
                yield_cpu_for_exit();
                return 0;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
}

// Stops at a request boundary on every connection and preserves each, with
// its unserved bytes, into the session; the arena is marked handed over
// (its last write). *tags: each handed connection's client, in order.
void Server::preserve_connections(std::vector<HandedConn>* handed_out, std::vector<uint64_t>* tags_out) {
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
            say("warning: cannot preserve a connection (%s): closing it", strerror(-r));
            close_client(cl);
            continue;
        }
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
    if (sfd >= 0) close(sfd);  // preserved: the daemon has its own
    if (r < 0) say("warning: cannot preserve the connection state (%s): they will be dropped", strerror(-r));
    store_->mark_handed_over();  // the last write to the arena
}

// A --takeover asked: hand everything to `next` (docs/handoff.md) and wait
// for the outcome. Committed: exit (0). Rolled back: serve on (-1), every
// connection with its bytes, the requests that came meanwhile in their
// sockets; the next version wrote nothing (kvcache writes the arena only
// after FINISH, the commit).
int Server::hand_off(pid_t next) {
    if (reattach_) try_reattach();
    if (session_fd_ < 0) {
        say("warning: asked to hand off but no liveupdated session: still serving");
        return -1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    stamp("ask_received");
    std::vector<HandedConn> handed;
    std::vector<uint64_t> tags;
    preserve_connections(&handed, &tags);
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
    say("hand-off to pid %d rolled back (%s): serving on", static_cast<int>(next),
        strerror(r < 0 ? -r : reason));
    resume(handed, tags);
    return -1;
}

// After a rollback: the connections are ours again, as they were. The
// session still holds them and the state: a new one, with the arena and the
// listener only, takes its place.
void Server::resume(std::vector<HandedConn>& handed, const std::vector<uint64_t>& tags) {
    store_->undo_handed_over();
    for (size_t i = 0; i < handed.size(); i++) {
        Client* cl = clients_.at(tags[i]).get();
        cl->c = std::move(handed[i].conn);
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, session_fd_, nullptr);
    close(session_fd_);  // unpreserves all: our fds stay ours
    session_fd_ = -1;
    if (const int ctl = open_control(); ctl >= 0) {
        if (open_session(ctl) && session_fd_ >= 0) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = kSessionTag;
            epoll_ctl(epfd_, EPOLL_CTL_ADD, session_fd_, &ev);
        }
        close(ctl);
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
        const int n = epoll_wait(epfd_, events, 256, reattach_ ? 200 : -1);
        if (n < 0 && errno != EINTR) {
            say("error: epoll_wait: %s", strerror(errno));
            return 1;
        }
        if (reattach_ && ms_since(last_reattach_) >= 200) try_reattach();
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
