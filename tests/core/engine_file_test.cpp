// SPDX-License-Identifier: Apache-2.0
// Files: tokens, handler choice, the managed set, retrieve and finish
// (docs/kernel-semantics.md#files).
#include <sys/stat.h>

#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

TEST(EngineFile, DuplicateTokenIsEexist) {
    Instance a;
    Session* s = a.create("vm0");
    ASSERT_EQ(a.preserve(s, 7), 0);
    EXPECT_EQ(a.preserve(s, 7), -EEXIST);
    EXPECT_EQ(s->files().size(), 1u);
}

TEST(EngineFile, SameTokenInTwoSessionsIsFine) {
    Instance a;
    EXPECT_EQ(a.preserve(a.create("a"), 7), 0);
    EXPECT_EQ(a.preserve(a.create("b"), 7), 0);
}

TEST(EngineFile, CheckOrderIsTokenThenCapacityThenFd) {
    Limits l;
    l.files_per_session = 1;
    Instance a(l);
    Session* s = a.create("vm0");
    EXPECT_EQ(a.engine.preserve_fd(s, 1, UniqueFd()), -EBADF);
    ASSERT_EQ(a.preserve(s, 1), 0);
    EXPECT_EQ(a.engine.preserve_fd(s, 1, UniqueFd()), -EEXIST);  // before ENOSPC, EBADF
    EXPECT_EQ(a.engine.preserve_fd(s, 2, UniqueFd()), -ENOSPC);  // before EBADF
}

TEST(EngineFile, GlobalFileBudgetIsEnospc) {
    Limits l;
    l.files = 2;
    Instance a(l);
    ASSERT_EQ(a.preserve(a.create("a"), 1), 0);
    ASSERT_EQ(a.preserve(a.create("b"), 1), 0);
    EXPECT_EQ(a.preserve(a.create("c"), 1), -ENOSPC);
}

TEST(EngineFile, NoHandlerIsEnoent) {
    Instance a;
    Session* s = a.create("vm0");
    EXPECT_EQ(a.engine.preserve_fd(s, 1, UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC))),
              -ENOENT);
    EXPECT_EQ(a.flb.preserve_calls, 0);
}

TEST(EngineFile, HandlerChosenInRegistrationOrder) {
    // A second handler that also takes pipes is never asked.
    struct Greedy : TestHandler {
        std::string_view compatible() const override { return "greedy-v1"; }
    };
    Instance a;
    auto g = std::make_unique<Greedy>();
    Greedy* greedy = g.get();
    ASSERT_EQ(a.engine.register_file_handler(std::move(g)), 0);
    Session* s = a.create("vm0");
    ASSERT_EQ(a.preserve(s, 1), 0);
    EXPECT_EQ(a.engine.compatible_of(*s->files()[0]), "test-v1");
    EXPECT_TRUE(greedy->log.empty());
}

TEST(EngineFile, SameObjectTwiceIsEbusy) {
    // docs/kernel-semantics.md#bug-double-preservation: the same pipe, or a
    // dup of it, anywhere.
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    UniqueFd p = new_pipe();
    ASSERT_EQ(a.engine.preserve_fd(s1, 1, dup_fd(p.get())), 0);
    EXPECT_EQ(a.engine.preserve_fd(s1, 2, dup_fd(p.get())), -EBUSY);
    EXPECT_EQ(a.engine.preserve_fd(s2, 1, dup_fd(p.get())), -EBUSY);
    ASSERT_EQ(a.engine.release_session(s1), 0);
    EXPECT_EQ(a.engine.preserve_fd(s2, 1, dup_fd(p.get())), 0);
}

TEST(EngineFile, FailedPreserveUnwindsEverything) {
    Instance a;
    Session* s = a.create("vm0");
    UniqueFd p = new_pipe();
    a.th->fail_preserve = -ENOMEM;
    EXPECT_EQ(a.engine.preserve_fd(s, 1, dup_fd(p.get())), -ENOMEM);
    EXPECT_TRUE(s->files().empty());
    EXPECT_EQ(a.flb.live_objects, 0);  // FLB preserved then unpreserved
    EXPECT_EQ(a.flb.unpreserve_calls, 1);
    a.th->fail_preserve = 0;
    EXPECT_EQ(a.engine.preserve_fd(s, 1, dup_fd(p.get())), 0);  // not left managed
}

TEST(EngineFile, FlbFailureUnwinds) {
    Instance a;
    Session* s = a.create("vm0");
    a.flb.fail_preserve = -ENODEV;
    EXPECT_EQ(a.preserve(s, 1), -ENODEV);
    EXPECT_TRUE(s->files().empty());
    EXPECT_EQ(a.th->log, std::vector<std::string>{"get_id"});  // handler preserve never ran
}

TEST(EngineFile, WrongSessionTypeIsEinvalAndRunsNothing) {
    // docs/kernel-semantics.md#session-type at the engine level (the daemon
    // checks first, in the kernel's order; the engine refuses too).
    Instance a, b;
    Session* out = a.create("vm0");
    ASSERT_EQ(a.preserve(out, 1), 0);
    a.th->log.clear();
    int fd = -1;
    EXPECT_EQ(a.engine.retrieve_fd(out, 1, &fd), -EINVAL);
    EXPECT_EQ(a.engine.finish_session(out), -EINVAL);
    EXPECT_TRUE(a.th->log.empty());
    ASSERT_EQ(hand_over(a, b), 0);
    Session* in = b.retrieve("vm0");
    b.th->log.clear();
    EXPECT_EQ(b.preserve(in, 2), -EINVAL);
    EXPECT_TRUE(b.th->log.empty());
}

struct Incoming : ::testing::Test {
    Instance a, b;
    Session* in = nullptr;
    void SetUp() override {
        Session* s = a.create("vm0");
        for (uint64_t t = 10; t < 13; t++) ASSERT_EQ(a.preserve(s, t), 0);
        ASSERT_EQ(hand_over(a, b), 0);
        in = b.retrieve("vm0");
        b.th->log.clear();
    }
};

TEST_F(Incoming, RetrieveTwiceGivesTheSameFile) {
    int fd1 = -1, fd2 = -1;
    ASSERT_EQ(b.engine.retrieve_fd(in, 10, &fd1), 0);
    ASSERT_EQ(b.engine.retrieve_fd(in, 10, &fd2), 0);
    EXPECT_EQ(fd1, fd2);
    EXPECT_EQ(b.th->retrieve_calls, 1);
    EXPECT_TRUE(fcntl(fd1, F_GETFD) & FD_CLOEXEC);
}

TEST_F(Incoming, UnknownTokenIsEnoent) {
    int fd = -1;
    EXPECT_EQ(b.engine.retrieve_fd(in, 99, &fd), -ENOENT);
}

TEST_F(Incoming, FailedRetrieveIsPermanent) {
    // docs/kernel-semantics.md#retrieve-is-final: same errno, handler called
    // once, finish told the status.
    b.th->fail_retrieve = -EIO;
    int fd = -1;
    EXPECT_EQ(b.engine.retrieve_fd(in, 11, &fd), -EIO);
    b.th->fail_retrieve = 0;
    EXPECT_EQ(b.engine.retrieve_fd(in, 11, &fd), -EIO);
    EXPECT_EQ(b.th->retrieve_calls, 1);
    ASSERT_EQ(b.engine.retrieve_fd(in, 10, &fd), 0);
    ASSERT_EQ(b.engine.finish_session(in), 0);
    // Reverse order: 12 (never retrieved), 11 (failed), 10 (retrieved).
    EXPECT_EQ(b.th->finish_status, (std::vector<int>{0, -EIO, 1}));
}

TEST_F(Incoming, FinishRunsCanFinishForwardThenFinishReverse) {
    ASSERT_EQ(b.engine.finish_session(in), 0);
    std::vector<std::string> want{"can_finish:0", "can_finish:1", "can_finish:2",
                                  "finish:2",     "finish:1",     "finish:0"};
    EXPECT_EQ(b.th->log, want);
    EXPECT_TRUE(in->files().empty());
    EXPECT_EQ(b.engine.preserved_files(), 0u);
}

TEST_F(Incoming, FinishRefusedIsEbusyWithNoChange) {
    b.th->refuse_finish = true;
    EXPECT_EQ(b.engine.finish_session(in), -EBUSY);
    EXPECT_EQ(in->files().size(), 3u);
    int fd = -1;
    EXPECT_EQ(b.engine.retrieve_fd(in, 10, &fd), 0);  // still usable
    EXPECT_TRUE(b.th->finish_status.empty());
}

TEST_F(Incoming, FinishIsIdempotentAndThenTokensAreGone) {
    ASSERT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.engine.finish_session(in), 0);
    int fd = -1;
    EXPECT_EQ(b.engine.retrieve_fd(in, 10, &fd), -ENOENT);
    EXPECT_EQ(in->name(), "vm0");  // still listed, name still there
    EXPECT_EQ(b.engine.incoming().size(), 1u);
}

TEST_F(Incoming, ReleaseIsAnImplicitFinish) {
    ASSERT_EQ(b.engine.release_session(in), 0);
    EXPECT_EQ(b.th->finish_status.size(), 3u);
    EXPECT_TRUE(b.engine.incoming().empty());
}

TEST_F(Incoming, RefusedImplicitFinishOrphansTheSession) {
    // docs/kernel-semantics.md#session-release: stays listed, cannot be
    // retrieved again, keeps its files.
    b.th->refuse_finish = true;
    EXPECT_EQ(b.engine.release_session(in), -EBUSY);
    ASSERT_EQ(b.engine.incoming().size(), 1u);
    EXPECT_TRUE(b.engine.incoming().front().orphaned());
    Session* again = nullptr;
    EXPECT_EQ(b.engine.retrieve_session(name_of("vm0"), &again), -EINVAL);
    EXPECT_EQ(b.engine.preserved_files(), 3u);
}

TEST_F(Incoming, RetrievedFileCannotBeRepreservedUntilFinished) {
    // docs/kernel-semantics.md#file-represerve: retrieve, finish, then
    // preserve into a new session.
    int fd = -1;
    ASSERT_EQ(b.engine.retrieve_fd(in, 10, &fd), 0);
    Session* next = b.create("vm0-next");
    EXPECT_EQ(b.engine.preserve_fd(next, 1, dup_fd(fd)), -EBUSY);
    UniqueFd keep = dup_fd(fd);
    ASSERT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.engine.preserve_fd(next, 1, std::move(keep)), 0);
}

TEST_F(Incoming, UnretrievedIncomingObjectIsManagedToo) {
    // The previous instance's client may still hold the object: preserving
    // it again before the incoming file is finished is EBUSY.
    int fd = -1;
    ASSERT_EQ(b.engine.retrieve_fd(in, 10, &fd), 0);
    Session* next = b.create("other");
    // File 11 was never retrieved; its object is reachable through a's fds.
    const LuoFile& f11 = *a.engine.outgoing().front().files()[1];
    EXPECT_EQ(b.engine.preserve_fd(next, 1, dup_fd(f11.file.get())), -EBUSY);
}

// Descriptor numbers no process here can have open (RLIMIT_NOFILE is far
// below): they let the capacity test measure the engine's own structures
// beyond this machine's fd limit, which bounds the daemon, not the engine.
struct SyntheticHandler : FileHandler {
    static constexpr int kBase = 1 << 30;
    std::string_view compatible() const override { return "synthetic-v1"; }
    bool can_preserve(int fd) override { return fd >= kBase; }
    int preserve(FileOpArgs&) override { return 0; }
    void unpreserve(FileOpArgs&) override {}
    int retrieve(FileOpArgs&) override { return -EINVAL; }
    void finish(FileOpArgs&) override {}
    int get_id(int fd, const FdSlot&, FileId* id) override {
        *id = FileId{~0ull, static_cast<uint64_t>(fd)};
        return 0;
    }
};

TEST(EngineFile, HundredThousandFilesInOneSession) {
    Engine e;
    ASSERT_EQ(e.register_file_handler(std::make_unique<SyntheticHandler>()), 0);
    Session* s = nullptr;
    ASSERT_EQ(e.create_session(name_of("big"), &s), 0);
    for (int t = 0; t < 100000; t++)
        ASSERT_EQ(e.preserve_fd(s, t, UniqueFd(SyntheticHandler::kBase + t)), 0) << t;
    EXPECT_EQ(e.preserve_fd(s, 5, UniqueFd(SyntheticHandler::kBase - 1)), -EEXIST);
    EXPECT_EQ(e.preserve_fd(s, 100000, UniqueFd(SyntheticHandler::kBase + 7)), -EBUSY);
    EXPECT_EQ(e.preserved_files(), 100000u);
    ASSERT_EQ(e.release_session(s), 0);
    EXPECT_EQ(e.preserved_files(), 0u);
}

TEST(EngineFile, FilesPerSessionBoundIsEnospc) {
    Limits l;
    l.files_per_session = 5;
    Instance a(l);
    Session* s = a.create("vm0");
    for (uint64_t t = 0; t < 5; t++) ASSERT_EQ(a.preserve(s, t), 0);
    EXPECT_EQ(a.preserve(s, 5), -ENOSPC);
    EXPECT_EQ(a.preserve(a.create("other"), 5), 0);  // per session
}

}  // namespace
}  // namespace lu::testing
