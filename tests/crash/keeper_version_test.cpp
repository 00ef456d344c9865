// SPDX-License-Identifier: Apache-2.0
// An instance as its keeper sees it, with the keeper played by hand: a
// recovering instance (liveupdated --recover) is handed a journal and its
// fds, then records its state back. The keeper outlives the binaries it
// serves, so an instance must speak each keeper's version: plain PUTs with
// every fd to a keeper from before versions (SYNCED id 0), PUT_KEYED with
// each file's identity to this one.
#include <spawn.h>
#include <sys/un.h>

#include <algorithm>
#include <filesystem>

#include "crash/crash_util.hpp"
#include "journal_format.hpp"
#include "keeper_protocol.hpp"
#include "socket_io.hpp"

namespace lu::crash_test {
namespace {

Fd listening(const std::string& path) {
    Fd s(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << strerror(errno);
    EXPECT_EQ(listen(s.get(), 16), 0);
    return s;
}

// One message from the instance: its header, payload and how many fds came.
struct Got {
    KeeperMsg head;
    std::vector<uint8_t> payload;
    size_t fds = 0;
};
bool receive(int link, Got* g) {
    std::vector<uint8_t> buf(kMaxKeeperMessage);
    char ctl[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    ssize_t n = recvmsg(link, &mh, MSG_CMSG_CLOEXEC);
    if (n < static_cast<ssize_t>(sizeof(KeeperMsg))) return false;
    memcpy(&g->head, buf.data(), sizeof g->head);
    g->payload.assign(buf.begin() + sizeof g->head, buf.begin() + n);
    g->fds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
            close(fd);
        }
        g->fds += k;
    }
    return true;
}

// What a recovering instance recorded with a keeper that says `version`.
struct Recorded {
    std::vector<KeeperOp> ops;      // every message, in order, up to its COMMIT
    size_t file_records = 0;        // in its PUTs after the version was known
    size_t fds = 0;                 // that came with them
    std::vector<KeeperFileRef> refs;  // PUT_KEYED's identities
};

Recorded recover_with_keeper_version(uint64_t version, const Fd& memfd) {
    Recorded r;
    char tmpl[] = "/tmp/liveupdate-keeperv-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    Fd control = listening(dir + "/control"), admin = listening(dir + "/admin");
    // The journal: epoch 3, one outgoing session with one file.
    std::vector<uint8_t> journal = journal_epoch_record(3, 0, 0);
    for (const auto& rec : {journal_session_record(1, false, "s"), journal_file_record(2, 1, 7)})
        journal.insert(journal.end(), rec.begin(), rec.end());
    Fd jfd(memfd_create("journal", MFD_CLOEXEC));
    EXPECT_EQ(write(jfd.get(), journal.data(), journal.size()), static_cast<ssize_t>(journal.size()));

    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    Fd link(sv[0]), theirs(sv[1]);
    timeval tv{10, 0};
    setsockopt(link.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, theirs.get(), kLinkFd);
    std::vector<std::string> args{LIVEUPDATED_PATH, "--runtime-dir", dir, "--recover"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    theirs.reset();

    KeeperMsg head;
    head.op = KeeperOp::Recover;
    head.id = 1;
    std::vector<uint8_t> bytes(sizeof head);
    memcpy(bytes.data(), &head, sizeof head);
    EXPECT_EQ(send_with_fds(link.get(), bytes, {jfd.get(), control.get(), admin.get()}), 0);
    EXPECT_EQ(send_with_fds(link.get(), keeper_msg(KeeperOp::Fds), {memfd.get()}), 0);

    bool version_told = false;
    for (Got g; receive(link.get(), &g);) {
        r.ops.push_back(g.head.op);
        if (g.head.op == KeeperOp::Commit) break;
        if (g.head.op == KeeperOp::Sync) {
            send_with_fds(link.get(), keeper_msg(KeeperOp::Synced, version), {});
            version_told = true;
            continue;
        }
        if (!version_told || (g.head.op != KeeperOp::Put && g.head.op != KeeperOp::PutKeyed)) continue;
        r.fds += g.fds;
        for (size_t at = 0; at + 8 <= g.payload.size();) {
            uint32_t len;
            memcpy(&len, g.payload.data() + at, sizeof len);
            uint64_t id;
            bool carries_fd = false;
            if (len < 8 || !journal_record_peek(std::span(g.payload).subspan(at, len), &id, &carries_fd)) {
                ADD_FAILURE() << "a record the keeper could not take";
                break;
            }
            at += len;
            if (!carries_fd) continue;
            r.file_records++;
            if (g.head.op == KeeperOp::PutKeyed) {
                KeeperFileRef ref;
                memcpy(&ref, g.payload.data() + at, sizeof ref);
                r.refs.push_back(ref);
                at += sizeof ref;
            }
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    unlink((dir + "/control").c_str());
    unlink((dir + "/admin").c_str());
    std::filesystem::remove_all(dir);
    return r;
}

TEST(KeeperVersion, AnOlderKeeperGetsPlainPutsWithEveryFd) {
    Fd memfd = make_memfd("kept", random_bytes(100, 1));
    Recorded r = recover_with_keeper_version(0, memfd);
    ASSERT_FALSE(r.ops.empty());
    EXPECT_EQ(r.ops.back(), KeeperOp::Commit);
    EXPECT_EQ(std::count(r.ops.begin(), r.ops.end(), KeeperOp::PutKeyed), 0);
    EXPECT_EQ(r.file_records, 1u);
    EXPECT_EQ(r.fds, 1u);
}

TEST(KeeperVersion, ThisKeeperGetsEachFilesIdentity) {
    Fd memfd = make_memfd("kept", random_bytes(100, 1));
    struct stat st;
    ASSERT_EQ(fstat(memfd.get(), &st), 0);
    Recorded r = recover_with_keeper_version(kKeeperVersion, memfd);
    ASSERT_FALSE(r.ops.empty());
    EXPECT_EQ(r.ops.back(), KeeperOp::Commit);
    EXPECT_EQ(r.file_records, 1u);
    // A recovery sends its files: the keeper keeps them under the names it
    // was told, and a later live update names them.
    EXPECT_EQ(r.fds, 1u);
    ASSERT_EQ(r.refs.size(), 1u);
    EXPECT_EQ(r.refs[0].dev, static_cast<uint64_t>(st.st_dev));
    EXPECT_EQ(r.refs[0].ino, static_cast<uint64_t>(st.st_ino));
    EXPECT_EQ(r.refs[0].accmode, static_cast<uint32_t>(O_RDWR));
    EXPECT_EQ(r.refs[0].held, 0u);
}

}  // namespace
}  // namespace lu::crash_test
