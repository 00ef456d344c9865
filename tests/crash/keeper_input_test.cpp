// SPDX-License-Identifier: Apache-2.0
// The keeper (liveupdated --keeper) as a process, fed by hand over its link
// on fd 3: it takes only well-formed messages, answers SYNC once everything
// before it is taken, drops a next instance's link that sends what it cannot
// keep, and ends itself rather than keep a serving instance's state it could
// not take. Never a crash on bad input.
#include <spawn.h>

#include <functional>

#include "crash/crash_util.hpp"
#include "journal_format.hpp"
#include "keeper_protocol.hpp"

namespace lu::crash_test {
namespace {

void append(std::vector<uint8_t>* out, const KeeperFileRef& ref) {
    const auto* p = reinterpret_cast<const uint8_t*>(&ref);
    out->insert(out->end(), p, p + sizeof ref);
}

// The identity a daemon would send for `fd`.
KeeperFileRef ref_of(int fd, bool held) {
    struct stat st;
    EXPECT_EQ(fstat(fd, &st), 0);
    KeeperFileRef ref;
    ref.dev = st.st_dev;
    ref.ino = st.st_ino;
    ref.accmode = static_cast<uint32_t>(fcntl(fd, F_GETFL) & O_ACCMODE);
    ref.held = held;
    return ref;
}

class KeeperProcess {
public:
    KeeperProcess() {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        link_.reset(sv[0]);
        Fd theirs(sv[1]);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 3);
        char* argv[] = {const_cast<char*>(LIVEUPDATED_PATH), const_cast<char*>("--keeper"), nullptr};
        EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        timeval tv{10, 0};
        setsockopt(link_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~KeeperProcess() {
        if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    int link() const { return link_.get(); }
    void close_link() { link_.reset(); }

    int send(KeeperOp op, uint64_t id = 0, std::span<const uint8_t> payload = {},
             std::vector<int> fds = {}) {
        std::vector<uint8_t> bytes = keeper_msg(op, id, payload);
        return send_raw(bytes, fds);
    }
    int send_raw(std::span<const uint8_t> bytes, std::vector<int> fds = {}) {
        return send_with_fds(link_.get(), bytes, fds);
    }
    // The op of the keeper's next message, or -1 (none within 10 s, or its end).
    int answer(KeeperMsg* got = nullptr) {
        KeeperMsg m;
        ssize_t n = recv(link_.get(), &m, sizeof m, 0);
        if (got) *got = m;
        return n == sizeof m && m.magic == KeeperMsg{}.magic ? static_cast<int>(m.op) : -1;
    }
    // LINK's answer: the keeper's end of a new link, as the fd that came with it.
    Fd linked() {
        KeeperMsg m;
        char ctl[CMSG_SPACE(sizeof(int))];
        iovec iov{&m, sizeof m};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl;
        mh.msg_controllen = sizeof ctl;
        if (recvmsg(link_.get(), &mh, MSG_CMSG_CLOEXEC) != sizeof m || m.op != KeeperOp::Link) return Fd();
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        if (!c || c->cmsg_type != SCM_RIGHTS) return Fd();
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return Fd(fd);
    }
    // Another instance's link to the same keeper (as a live update's next
    // instance has): sends and answers go there from now on.
    void use_link(Fd link) {
        link_ = std::move(link);
        timeval tv{10, 0};
        setsockopt(link_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    pid_t pid() const { return pid_; }
    // Its exit status, waiting at most wait_ms; -1 if it still runs.
    int exit_status(int wait_ms = 10000) {
        for (int i = 0; i < wait_ms / 10; i++) {
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return -1;
    }

    // A whole generation up to (not including) its COMMIT: listeners, how
    // to restart (a binary that exits at once), the epoch, one session with
    // one memfd. `ref`: as a PUT_KEYED, the file named by it (and sent only
    // if it is not `held`); else a PUT with the memfd.
    void send_generation(const std::string& dir, Fd* memfd, const KeeperFileRef* ref = nullptr) {
        ASSERT_EQ(send(KeeperOp::Begin), 0);
        Fd a(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)), b(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        ASSERT_EQ(send(KeeperOp::Listeners, 0,
                       std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(dir.data()), dir.size()),
                       {a.get(), b.get()}),
                  0);
        const char argv[] = "/bin/false";
        ASSERT_EQ(send(KeeperOp::Restart, 0,
                       std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(argv), sizeof argv)),
                  0);
        ASSERT_EQ(send(KeeperOp::Put, 0, journal_epoch_record(3, 0, 0)), 0);
        if (!memfd->ok()) *memfd = make_memfd("kept", random_bytes(100, 1));
        std::vector<uint8_t> recs = journal_session_record(1, false, "s");
        std::vector<uint8_t> file = journal_file_record(2, 1, 7);
        recs.insert(recs.end(), file.begin(), file.end());
        if (!ref) {
            ASSERT_EQ(send(KeeperOp::Put, 0, recs, {memfd->get()}), 0);
            return;
        }
        append(&recs, *ref);
        std::vector<int> fds;
        if (!ref->held) fds.push_back(memfd->get());
        ASSERT_EQ(send(KeeperOp::PutKeyed, 0, recs, fds), 0);
    }

private:
    Fd link_;
    pid_t pid_ = -1;
};

// SYNCED carries the keeper's version: an instance sends a PUT_KEYED only
// to a keeper that takes it (an older keeper answers 0).
TEST(KeeperInput, SyncedSaysTheVersion) {
    KeeperProcess k;
    ASSERT_EQ(k.send(KeeperOp::Begin), 0);
    ASSERT_EQ(k.send(KeeperOp::Sync), 0);
    KeeperMsg m;
    ASSERT_EQ(k.answer(&m), static_cast<int>(KeeperOp::Synced));
    EXPECT_EQ(m.id, kKeeperVersion);
}

// A live update's next instance names the files the kept generation holds
// instead of sending them again; a name the keeper cannot resolve (another
// file, another access mode) loses that link only: the serving instance's
// generation stays, and the keeper with it.
TEST(KeeperInput, ANextInstanceNamesTheKeptFilesAndOnlyThose) {
    KeeperProcess k;
    Fd memfd = make_memfd("kept", random_bytes(100, 1));
    const KeeperFileRef sent = ref_of(memfd.get(), false);
    k.send_generation("/", &memfd, &sent);
    ASSERT_EQ(k.send(KeeperOp::Sync), 0);
    ASSERT_EQ(k.answer(), static_cast<int>(KeeperOp::Synced));
    ASSERT_EQ(k.send(KeeperOp::Commit, static_cast<uint64_t>(getpid())), 0);

    Fd other = make_memfd("other", random_bytes(10, 4));
    KeeperFileRef wrong_file = ref_of(other.get(), true);
    KeeperFileRef wrong_mode = ref_of(memfd.get(), true);
    wrong_mode.accmode = O_RDONLY;
    KeeperFileRef bad_mode = ref_of(memfd.get(), true);
    bad_mode.accmode = 7;
    const KeeperFileRef right = ref_of(memfd.get(), true);
    struct Case {
        const char* what;
        const KeeperFileRef* ref;
        bool taken;
    };
    const Fd serving(fcntl(k.link(), F_DUPFD_CLOEXEC, 0));
    for (const Case& c : {Case{"another file", &wrong_file, false}, Case{"another access mode", &wrong_mode, false},
                          Case{"an access mode out of range", &bad_mode, false}, Case{"the kept file", &right, true}}) {
        k.use_link(Fd(fcntl(serving.get(), F_DUPFD_CLOEXEC, 0)));
        ASSERT_EQ(k.send(KeeperOp::Link), 0);
        Fd next = k.linked();
        ASSERT_TRUE(next.ok()) << c.what;
        k.use_link(std::move(next));
        Fd same(fcntl(memfd.get(), F_DUPFD_CLOEXEC, 0));
        k.send_generation("/", &same, c.ref);
        // A link the keeper dropped may be gone before the SYNC is sent.
        const int sent = k.send(KeeperOp::Sync);
        if (c.taken) {
            EXPECT_EQ(sent, 0) << c.what;
        }
        EXPECT_EQ(k.answer(), c.taken ? static_cast<int>(KeeperOp::Synced) : -1) << c.what;
        // The keeper, and the generation it keeps, are still there.
        EXPECT_EQ(k.exit_status(50), -1) << c.what;
    }
    k.use_link(Fd(fcntl(serving.get(), F_DUPFD_CLOEXEC, 0)));
    ASSERT_EQ(k.send(KeeperOp::Stop), 0);
    EXPECT_EQ(k.exit_status(), 0);
}

TEST(KeeperInput, SyncIsAnsweredOnceAGenerationIsTaken) {
    KeeperProcess k;
    Fd memfd;
    k.send_generation("/", &memfd);
    ASSERT_EQ(k.send(KeeperOp::Sync), 0);
    EXPECT_EQ(k.answer(), static_cast<int>(KeeperOp::Synced));
    // A stop from the instance that committed ends it cleanly.
    ASSERT_EQ(k.send(KeeperOp::Commit, static_cast<uint64_t>(getpid())), 0);
    ASSERT_EQ(k.send(KeeperOp::Stop), 0);
    EXPECT_EQ(k.exit_status(), 0);
}

// Before its commit a link is a next instance's: what the keeper cannot
// take drops that link (its instance then sees no SYNCED and fails its
// update); with nothing kept and nothing linked, the keeper exits.
TEST(KeeperInput, ANextInstanceThatSendsGarbageLosesItsLink) {
    struct Case {
        const char* what;
        std::function<void(KeeperProcess&)> send;
    };
    const std::vector<Case> cases = {
        {"a bad magic", [](KeeperProcess& k) { k.send_raw(std::vector<uint8_t>(24, 0x5a)); }},
        {"a short header", [](KeeperProcess& k) { k.send_raw(std::vector<uint8_t>(7, 0)); }},
        {"an unknown op", [](KeeperProcess& k) { k.send(static_cast<KeeperOp>(99)); }},
        {"a PUT before BEGIN", [](KeeperProcess& k) { k.send(KeeperOp::Put, 0, journal_epoch_record(1, 0, 0)); }},
        {"a torn record",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             std::vector<uint8_t> r = journal_session_record(1, false, "s");
             r.resize(r.size() - 8);
             k.send(KeeperOp::Put, 0, r);
         }},
        {"a record whose crc is wrong",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             std::vector<uint8_t> r = journal_session_record(1, false, "s");
             r.back() ^= 1;
             k.send(KeeperOp::Put, 0, r);
         }},
        {"a file record without its fd",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             k.send(KeeperOp::Put, 0, journal_file_record(2, 1, 7));
         }},
        {"an fd no record carries",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             Fd m = make_memfd("x", random_bytes(10, 2));
             k.send(KeeperOp::Put, 0, journal_session_record(1, false, "s"), {m.get()});
         }},
        {"a DROP whose ids are cut",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             k.send(KeeperOp::Drop, 0, std::vector<uint8_t>(12, 1));
         }},
        {"a RESTART not NUL-terminated",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             const char argv[] = {'/', 'x'};
             k.send(KeeperOp::Restart, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(argv), 2));
         }},
        {"LISTENERS with one fd",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             Fd a(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
             const char dir[] = "/";
             k.send(KeeperOp::Listeners, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(dir), 1), {a.get()});
         }},
        {"a COMMIT of an incomplete generation",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             k.send(KeeperOp::Commit, 1);
         }},
        {"a held file with no generation kept",
         [](KeeperProcess& k) {
             Fd m = make_memfd("x", random_bytes(10, 2));
             KeeperFileRef ref = ref_of(m.get(), true);
             k.send_generation("/", &m, &ref);
         }},
        {"a PUT_KEYED file record without its identity",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             Fd m = make_memfd("x", random_bytes(10, 2));
             k.send(KeeperOp::PutKeyed, 0, journal_file_record(2, 1, 7), {m.get()});
         }},
        {"a BEGIN twice",
         [](KeeperProcess& k) {
             k.send(KeeperOp::Begin);
             k.send(KeeperOp::Begin);
         }},
    };
    for (const Case& c : cases) {
        KeeperProcess k;
        c.send(k);
        // Its link ends: a SYNC gets no answer, and it exits (nothing kept).
        k.send(KeeperOp::Sync);
        EXPECT_EQ(k.answer(), -1) << c.what;
        EXPECT_EQ(k.exit_status(), 0) << c.what;
    }
}

// The serving instance's link is never dropped while its state is kept
// (the instance would start another keeper, and we would take it for
// crashed): the keeper ends itself instead, with an error.
TEST(KeeperInput, GarbageFromTheServingInstanceEndsTheKeeper) {
    KeeperProcess k;
    Fd memfd;
    k.send_generation("/", &memfd);
    ASSERT_EQ(k.send(KeeperOp::Commit, static_cast<uint64_t>(getpid())), 0);
    ASSERT_EQ(k.send_raw(std::vector<uint8_t>(24, 0x5a)), 0);
    EXPECT_EQ(k.exit_status(), 1);
}

// A link that ends while its instance still runs is not a crash: nothing
// is recovered until that process exits (here: the test itself, which
// does not, so the keeper keeps waiting).
TEST(KeeperInput, ALinkThatEndsWhileItsInstanceLivesIsNotACrash) {
    char tmpl[] = "/tmp/liveupdate-keeper-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    {
        KeeperProcess k;
        Fd memfd;
        k.send_generation(dir, &memfd);
        ASSERT_EQ(k.send(KeeperOp::Commit, static_cast<uint64_t>(getpid())), 0);
        k.close_link();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        // Still there, and it started nothing (its restart would be
        // /bin/false: a recovery attempt would show as a child).
        EXPECT_EQ(k.exit_status(300), -1);
        if (auto kids = children_of(k.pid())) {
            EXPECT_TRUE(kids->empty()) << list(*kids);
        }
    }
    rmdir(dir.c_str());
}

}  // namespace
}  // namespace lu::crash_test
