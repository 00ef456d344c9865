// SPDX-License-Identifier: Apache-2.0
#include "keeper.hpp"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "journal_format.hpp"
#include "keeper_protocol.hpp"
#include "socket_io.hpp"
#include "unique_fd.hpp"


namespace lu {

namespace {

constexpr useconds_t kReadEveryUs = 1000;

// A file's identity for the keeper (KeeperFileRef): a live update's next
// instance has the same files, and each is kept once (the fd table holds
// every preserved file once, not twice, while a generation is pending).
// An access mode of -1: unknown, never shared.
using FdKey = std::tuple<uint64_t, uint64_t, int>;
constexpr FdKey kUnknownKey{0, 0, -1};

// A PUT's fd, from a sender that names no identity: read here.
FdKey key_of(int fd) {
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) < 0 || fl < 0) return kUnknownKey;
    return {st.st_dev, st.st_ino, fl & O_ACCMODE};
}

// A PUT_KEYED's identity. False if malformed.
bool key_from(const KeeperFileRef& ref, FdKey* key) {
    if (ref.held > 1 || ref.accmode > O_RDWR) return false;
    *key = ref.dev || ref.ino ? FdKey{ref.dev, ref.ino, static_cast<int>(ref.accmode)} : kUnknownKey;
    return true;
}

// What the serving instance would need after its crash: one generation.
struct Generation {
    struct Object {
        std::vector<uint8_t> record;
        std::shared_ptr<UniqueFd> fd;  // shared with the next generation's same file
        FdKey key = kUnknownKey;       // as its sender named it, or read when it came
    };
    std::map<uint64_t, Object> objects;  // by id: the journal's order
    UniqueFd control, admin;
    std::string runtime_dir;
    std::vector<std::string> restart;  // argv
};

struct Link {
    Link(UniqueFd f, bool r = false) : fd(std::move(f)), recovering(r) {}
    UniqueFd fd;
    bool recovering = false;  // started by recover(): its commit is awaited
    // Made for a live update's next instance (LINK), which has not begun its
    // generation yet: if the old instance dies now, the next one may still
    // have had its COMMIT and serve, so no crash is decided until this link
    // begins (then its commit decides) or ends (then the old one's state is
    // recovered). Deciding earlier would start a second serving instance.
    bool awaiting = false;
    // A next instance's link: the serving link that asked for it (LINK),
    // until that one ends. Its COMMIT counts only once its maker says the
    // live update committed (PROMOTE, when it reads SERVING) or is gone:
    // before that the old instance may still roll back and kill it, and
    // its generation must never become the one a crash recovers.
    Link* made_by = nullptr;
    bool promoted = false;        // PROMOTE came before the COMMIT
    bool commit_waits = false;    // COMMIT came before the PROMOTE
    pid_t commit_pid = 0;
    bool has_pending = false;
    Generation pending;  // from BEGIN to COMMIT
    std::map<FdKey, std::shared_ptr<UniqueFd>> kept_fds;  // the kept generation's, from BEGIN
};

uint64_t monotonic_now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Admin requests queued for the instance that died are not replayed to the
// one that recovers: an update asked of the dead one would find every
// session turned incoming and unretrieved by the crash, and drop them all.
// Their clients see the connection end unanswered, as any request the crash
// cut. (Control connections stay queued: a client's open is not undone by
// a crash.)
void drop_queued(int listener) {
    for (;;) {
        pollfd p{listener, POLLIN, 0};
        if (poll(&p, 1, 0) != 1) return;
        int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        close(c);
    }
}

class Keeper {
public:
    explicit Keeper(UniqueFd first) { links_.emplace_back(std::move(first)); }
    int run();

private:
    void serve(std::list<Link>::iterator l);
    // False: a message we cannot take (malformed, or our fd table full).
    bool handle(Link& l, const KeeperMsg& m, Message& msg);
    bool put(Link& l, Generation& g, std::span<const uint8_t> records, std::vector<UniqueFd>& fds,
             bool keyed);
    bool owner_gone();
    void end_of(std::list<Link>::iterator l);
    void commit(Link& l, pid_t owner);
    void recover();
    int send_state(int link);
    Generation* target(Link& l) {
        if (l.has_pending) return &l.pending;
        return &l == current_ ? &kept_ : nullptr;
    }
    bool anyone_pending() const {
        return std::any_of(links_.begin(), links_.end(),
                           [](const Link& l) { return l.has_pending || l.recovering || l.awaiting; });
    }

    std::list<Link> links_;
    Generation kept_;
    bool have_kept_ = false;
    Link* current_ = nullptr;  // the link that committed last; null once it ended
    // The instance that sent that COMMIT, until it has exited: a crash is
    // its link's end *and* its exit, never a link that ends alone.
    pid_t owner_pid_ = 0;
    UniqueFd owner_pidfd_;
    bool stopped_ = false;
    bool failed_ = false;  // the serving instance sent what we cannot keep: we end
    unsigned failed_recoveries_ = 0;  // in a row: each waits longer
    uint64_t crash_ns_ = 0;
    uint64_t last_wake_ns_ = 0;  // CLOCK_MONOTONIC: when poll last woke us
};

volatile sig_atomic_t g_stop_signal = 0;

int Keeper::run() {
    bool stop_forwarded = false;
    while (!stopped_) {
        // Under a service manager the keeper is the main process, so a stop
        // reaches it first: it is passed to the serving instance, which
        // stops and then tells us (STOP). Nothing serving: nothing to keep.
        if (g_stop_signal && !stop_forwarded) {
            if (!current_ || owner_pid_ <= 0) return 0;
            spdlog::info("keeper: signal {}: stopping the daemon (pid {})", int(g_stop_signal), owner_pid_);
            kill(owner_pid_, SIGTERM);
            stop_forwarded = true;
        }
        if (failed_) return 1;
        // Everything the instances sent is read before a crash is decided:
        // a live update's next instance may have begun its generation.
        if (!current_ && have_kept_ && !anyone_pending()) {
            for (auto it = links_.begin(); it != links_.end();) {
                auto next = std::next(it);
                serve(it);
                it = next;
            }
        }
        if (!current_ && have_kept_ && !anyone_pending() && owner_gone()) recover();
        if (links_.empty()) {
            if (have_kept_) continue;  // the recovery could not start: again, later
            spdlog::info("keeper: nothing linked and nothing kept, exiting");
            return 0;
        }
        // The instances we started for a recovery are our children.
        while (waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        std::vector<pollfd> p;
        for (Link& l : links_) p.push_back({l.fd.get(), POLLIN, 0});
        if (owner_pidfd_) p.push_back({owner_pidfd_.get(), POLLIN, 0});  // its exit wakes us
        if (poll(p.data(), p.size(), -1) < 0) {
            if (errno == EINTR) continue;
            spdlog::critical("keeper: poll: {}", strerror(errno));
            return 1;
        }
        // Nothing is lost by reading late: a record in our socket is ours
        // even if its sender dies. Woken again within a millisecond (a
        // stream of requests), we nap first and read a millisecond of them
        // at once: that spares the daemon a wake-up of the keeper on every
        // request, which on a shared CPU costs it more than the send
        // itself. A lone message (a live update's LINK, in its blackout) is
        // read at once, and so is everything while a generation comes in
        // (its instance waits for SYNCED).
        const uint64_t woken = monotonic_now_ns();
        if (!anyone_pending() && woken - last_wake_ns_ < kReadEveryUs * 1000ull) usleep(kReadEveryUs);
        last_wake_ns_ = woken;
        size_t i = 0;
        for (auto it = links_.begin(); it != links_.end() && !stopped_ && !failed_; i++) {
            auto next = std::next(it);
            if (p[i].revents) serve(it);
            it = next;
        }
    }
    return 0;
}

// Everything pending on the link, then its end.
void Keeper::serve(std::list<Link>::iterator l) {
    for (;;) {
        Message msg;
        int r = recv_message(l->fd.get(), kMaxKeeperMessage, kMaxFdsPerMessage, &msg);
        if (r == -EAGAIN || r == -EINTR || transient(r)) return;  // the next turn reads it
        if (r < 0) spdlog::error("keeper: reading an instance's link failed: {}", strerror(-r));
        KeeperMsg m;
        if (r == 1 && !msg.truncated && parse_keeper_msg(msg.bytes, &m) && handle(*l, m, msg)) {
            if (stopped_) return;
            continue;
        }
        if (r == 1 && &*l == current_) {
            // Never a link dropped while we keep its state: the instance
            // would take us for dead and start another keeper, and we would
            // take it for crashed. We end instead; it replaces us.
            spdlog::critical("keeper: the serving instance sent what we cannot keep{}: exiting",
                             msg.truncated ? " (our fd table is full?)" : "");
            failed_ = true;
            return;
        }
        if (r == 1) spdlog::error("keeper: a message we cannot keep from a next instance: link dropped");
        // A COMMIT that waits for its maker's word: that word (PROMOTE) may
        // be in the maker's link already, unread because this turn's poll
        // saw nothing there yet. Read it first: ending the link before
        // would drop a generation whose instance served (and then crashed).
        if (r == 0 && l->commit_waits && l->made_by) {
            auto maker = std::find_if(links_.begin(), links_.end(), [&](const Link& k) { return &k == l->made_by; });
            if (maker != links_.end()) serve(maker);
        }
        return end_of(l);
    }
}

bool Keeper::handle(Link& l, const KeeperMsg& m, Message& msg) {
    spdlog::debug("keeper: link {} op {} current {} pending {}", l.fd.get(), int(m.op), &l == current_,
                  l.has_pending);
    std::span<const uint8_t> payload(msg.bytes.data() + sizeof m, msg.bytes.size() - sizeof m);
    if (m.op == KeeperOp::Begin) {
        // The current link too: an old instance that rolls back a live
        // update makes its state the kept one again (the next instance may
        // have committed before the old one failed).
        if (l.has_pending) return false;
        l.has_pending = true;
        l.awaiting = false;
        l.pending = Generation{};
        l.kept_fds.clear();
        for (auto& [id, o] : kept_.objects)
            if (o.fd && o.key != kUnknownKey) l.kept_fds.emplace(o.key, o.fd);
        return msg.fds.empty();
    }
    if (m.op == KeeperOp::Sync) {
        // Everything before it on this link is taken: say so. An answer
        // that cannot be sent is no refusal: its sender is gone, and its
        // link's end says so next.
        if (!msg.fds.empty()) return false;
        send_message(l.fd.get(), keeper_msg(KeeperOp::Synced, kKeeperVersion));
        return true;
    }
    if (m.op == KeeperOp::Link) {
        // The next instance's link: ours to keep, its end back to the sender.
        if (&l != current_ || !msg.fds.empty()) return false;
        int sv[2];
        // No link made or sent: not the sender's fault, and no reason to
        // drop its state. It hears no answer and replaces us (its next
        // instance then starts a keeper of its own).
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return true;
        UniqueFd ours(sv[0]), theirs(sv[1]);
        int fd = theirs.get();
        if (send_message(l.fd.get(), keeper_msg(KeeperOp::Link), std::span<const int>(&fd, 1)) < 0)
            return true;
        links_.emplace_back(std::move(ours));
        links_.back().awaiting = true;
        links_.back().made_by = &l;
        return true;
    }
    if (m.op == KeeperOp::Promote) {
        if (&l != current_ || !msg.fds.empty()) return false;
        for (Link& next : links_) {
            if (next.made_by != &l) continue;
            next.made_by = nullptr;
            if (next.commit_waits) commit(next, next.commit_pid);
            else next.promoted = true;
        }
        return true;
    }
    if (m.op == KeeperOp::Stop) {
        if (&l != current_) return true;  // an instance that handed over already: not the state's owner
        spdlog::info("keeper: the daemon stopped on purpose; dropping what it held");
        stopped_ = true;
        return true;
    }
    Generation* g = target(l);
    if (!g) return false;
    switch (m.op) {
    case KeeperOp::Listeners:
        if (msg.fds.size() != 2 || payload.empty() || payload.size() > 4096) return false;
        g->control = std::move(msg.fds[0]);
        g->admin = std::move(msg.fds[1]);
        g->runtime_dir.assign(payload.begin(), payload.end());
        return true;
    case KeeperOp::Restart: {
        if (!msg.fds.empty() || payload.empty() || payload.back() != 0) return false;
        g->restart.clear();
        for (size_t at = 0; at < payload.size();) {
            const char* s = reinterpret_cast<const char*>(payload.data() + at);
            g->restart.emplace_back(s);
            at += g->restart.back().size() + 1;
        }
        return true;
    }
    case KeeperOp::Put:
    case KeeperOp::PutKeyed:
        return put(l, *g, payload, msg.fds, m.op == KeeperOp::PutKeyed);
    case KeeperOp::Drop:
        if (payload.size() % 8 || !msg.fds.empty()) return false;
        for (size_t at = 0; at < payload.size(); at += 8) {
            uint64_t id;
            memcpy(&id, payload.data() + at, 8);
            g->objects.erase(id);
        }
        return true;
    case KeeperOp::Commit:
        if (!l.has_pending || g->restart.empty() || !g->control || !msg.fds.empty()) return false;
        if (l.made_by && !l.promoted) {
            l.commit_waits = true;  // until the old instance's PROMOTE, or its end
            l.commit_pid = static_cast<pid_t>(m.id);
            return true;
        }
        commit(l, static_cast<pid_t>(m.id));
        return true;
    default:
        return false;
    }
}

// Records back to back, each with its fd if it is a file's; `keyed`: each
// file record followed by its KeeperFileRef, which may name a file of the
// kept generation instead (only in a pending one: BEGIN listed them).
bool Keeper::put(Link& l, Generation& g, std::span<const uint8_t> records, std::vector<UniqueFd>& fds,
                 bool keyed) {
    size_t next_fd = 0;
    for (size_t at = 0; at < records.size();) {
        uint32_t len = 0;
        if (records.size() - at < sizeof len) return false;
        memcpy(&len, records.data() + at, sizeof len);
        if (len > records.size() - at) return false;
        uint64_t id = 0;
        bool carries_fd = false;
        if (!journal_record_peek(records.subspan(at, len), &id, &carries_fd)) return false;
        std::span<const uint8_t> record = records.subspan(at, len);
        at += len;
        KeeperFileRef ref;
        if (carries_fd && keyed) {
            if (records.size() - at < sizeof ref) return false;
            memcpy(&ref, records.data() + at, sizeof ref);
            at += sizeof ref;
        }
        if (carries_fd && !ref.held && next_fd >= fds.size()) return false;
        Generation::Object& o = g.objects[id];
        o.record.assign(record.begin(), record.end());
        o.fd.reset();
        if (!carries_fd) continue;
        UniqueFd fd = ref.held ? UniqueFd() : std::move(fds[next_fd++]);
        if (!keyed) o.key = key_of(fd.get());
        else if (!key_from(ref, &o.key)) return false;
        auto same = o.key != kUnknownKey ? l.kept_fds.find(o.key) : l.kept_fds.end();
        if (ref.held && same == l.kept_fds.end()) {
            spdlog::error("keeper: an instance named a file the kept generation does not hold");
            return false;
        }
        o.fd = same != l.kept_fds.end() ? same->second : std::make_shared<UniqueFd>(std::move(fd));
    }
    return next_fd == fds.size();
}

void Keeper::commit(Link& l, pid_t owner) {
    kept_ = std::move(l.pending);
    l.has_pending = false;
    l.recovering = false;
    l.awaiting = false;
    l.commit_waits = false;
    l.kept_fds.clear();
    have_kept_ = true;
    if (current_ && current_ != &l) spdlog::info("keeper: a live update committed");
    current_ = &l;
    owner_pid_ = owner;
    owner_pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, owner_pid_, 0)));
    failed_recoveries_ = 0;
}

// The instance whose link ended has exited (or there is none to wait for).
bool Keeper::owner_gone() {
    if (!owner_pidfd_) return true;
    pollfd p{owner_pidfd_.get(), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return false;
    owner_pidfd_.reset();
    return true;
}

void Keeper::end_of(std::list<Link>::iterator l) {
    spdlog::debug("keeper: link {} ended current {} pending {}", l->fd.get(), &*l == current_,
                  l->has_pending);
    const bool crashed = &*l == current_;
    if (crashed) current_ = nullptr;
    // Its next instance, if it asked for one, no longer waits for its word:
    // a next instance that committed was told to serve (it serves on the old
    // one's death only then), so its generation is the one to keep.
    Link* gone = &*l;
    for (Link& next : links_) {
        if (next.made_by != gone) continue;
        next.made_by = nullptr;
        if (next.commit_waits) commit(next, next.commit_pid);
    }
    links_.erase(l);  // a pending generation goes with its link
    if (!crashed) return;
    crash_ns_ = realtime_ns();
    // A live update's next instance that recorded its state commits it
    // now, or ends and the state kept so far is recovered.
    if (!anyone_pending())
        spdlog::error("keeper: the serving instance ended without a stop: it crashed");
}

// The serving instance is gone, and nobody is about to commit: start one
// from what is kept. Each recovery that dies before its commit makes the
// next one wait longer (up to 10 s): a binary that cannot start must not
// spin. If the runtime directory is gone nobody could reach an instance.
void Keeper::recover() {
    struct stat st;
    if (stat(kept_.runtime_dir.c_str(), &st) < 0) {
        spdlog::warn("keeper: the runtime directory {} is gone; dropping the state", kept_.runtime_dir);
        have_kept_ = false;
        return;
    }
    if (failed_recoveries_) {
        unsigned ms = std::min(10'000u, 100u << std::min(failed_recoveries_ - 1, 7u));
        spdlog::warn("keeper: recovery attempt {} in {} ms", failed_recoveries_ + 1, ms);
        usleep(ms * 1000);
    }
    if (!failed_recoveries_) drop_queued(kept_.admin.get());
    failed_recoveries_++;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return;
    UniqueFd ours(sv[0]), theirs(sv[1]);
    pid_t pid = 0;
    int err = spawn_linked(kept_.restart, theirs.get(), &pid);
    theirs.reset();
    if (err) {
        spdlog::error("keeper: cannot start {}: {}", kept_.restart[0], strerror(err));
        return;
    }
    spdlog::info("keeper: recovering with pid {}", pid);
    if (int e = send_state(ours.get())) {
        spdlog::error("keeper: handing the state to pid {} failed: {}", pid, strerror(-e));
        return;  // its end of file follows; we try again
    }
    links_.emplace_back(std::move(ours), true);
}

// RECOVER, then the file fds in batches, all from what is kept (the
// generation stays ours until the new instance commits its own).
int Keeper::send_state(int link) {
    std::vector<uint8_t> journal;
    std::vector<int> fds;
    for (auto& [id, o] : kept_.objects) {
        journal.insert(journal.end(), o.record.begin(), o.record.end());
        if (o.fd) fds.push_back(o.fd->get());
    }
    UniqueFd memfd(memfd_create("liveupdate-journal", MFD_CLOEXEC));
    if (!memfd) return -errno;
    for (size_t off = 0; off < journal.size();) {
        ssize_t n = write(memfd.get(), journal.data() + off, journal.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -errno;
        off += static_cast<size_t>(n);
    }
    timeval tv{10, 0};  // a new instance that reads nothing must not hang us
    setsockopt(link, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::vector<uint8_t> head = keeper_msg(KeeperOp::Recover, fds.size());
    KeeperMsg m;
    parse_keeper_msg(head, &m);
    m.when = crash_ns_;
    memcpy(head.data(), &m, sizeof m);
    int first[3] = {memfd.get(), kept_.control.get(), kept_.admin.get()};
    if (int e = send_message(link, head, first)) return e;
    for (size_t at = 0; at < fds.size(); at += kMaxFdsPerMessage) {
        size_t n = std::min(kMaxFdsPerMessage, fds.size() - at);
        if (int e = send_message(link, keeper_msg(KeeperOp::Fds), std::span<const int>(fds.data() + at, n)))
            return e;
    }
    return 0;
}

}  // namespace

int run_keeper() {
    // Not a process group's member that a signal for the daemon's reaches,
    // and no terminal's: only a signal meant for the keeper ends it.
    setpgid(0, 0);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    // A child's exit interrupts poll(): the loop reaps it. A stop signal
    // too: the loop passes it on.
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigaction(SIGCHLD, &sa, nullptr);
    sa.sa_handler = [](int signo) { g_stop_signal = signo; };
    sigaction(SIGTERM, &sa, nullptr);
    // A copy of every preserved fd: all the fds the kernel allows us.
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    struct stat st;
    if (fstat(kLinkFd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        spdlog::critical("keeper: no link on fd {}", kLinkFd);
        return 2;
    }
    fcntl(kLinkFd, F_SETFD, FD_CLOEXEC);
    Keeper k{UniqueFd(kLinkFd)};
    return k.run();
}

}  // namespace lu
