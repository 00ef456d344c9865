// SPDX-License-Identifier: Apache-2.0
// The hand-off of a service's sessions inside one instance
// (engine_handoff.cpp, docs/handoff.md): freeze and its unwind, the view's
// incoming rules, the commit at FINISH, every rollback, the dry run.
#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

int begin(Instance& a, std::vector<Session*> ss, bool dry_run = false) {
    return a.engine.handoff_begin(ss, dry_run);
}

TEST(EngineHandoff, FreezesOnlyTheHandedOffSessionsAndMakesThemRetrievable) {
    Instance a;
    Session* s = a.create("svc");
    Session* other = a.create("other");
    ASSERT_EQ(a.preserve(s, 1), 0);      // id 0
    ASSERT_EQ(a.preserve(other, 1), 0);  // id 1
    ASSERT_EQ(a.preserve(s, 2), 0);      // id 2
    a.th->log.clear();
    ASSERT_EQ(begin(a, {s}), 0);
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"freeze:0", "freeze:2"}));
    EXPECT_EQ(s->handoff(), HandoffState::Offered);
    EXPECT_FALSE(a.engine.gate_closed());
    EXPECT_EQ(a.engine.handoffs_in_progress(), "svc");
    // The owner's session refuses mutations; the others work as before.
    EXPECT_EQ(a.preserve(s, 3), -EAGAIN);
    EXPECT_EQ(a.preserve(other, 2), 0);
    Session* x = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("svc"), &x), -EEXIST);
    EXPECT_EQ(a.engine.reboot_freeze(), -EBUSY);
    // The next owner: retrieve once, files by token, through the handler.
    Session* v = a.retrieve("svc");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->handoff_source(), s);
    EXPECT_EQ(s->handoff(), HandoffState::Taken);
    EXPECT_EQ(a.engine.retrieve_session(name_of("svc"), &x), -EINVAL);
    int fd = -1;
    EXPECT_EQ(a.engine.retrieve_fd(v, 9, &fd), -ENOENT);
    ASSERT_EQ(a.engine.retrieve_fd(v, 2, &fd), 0);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(a.engine.preserve_fd(v, 5, new_pipe()), -EINVAL);
}

TEST(EngineHandoff, FinishCommitsTheSourceIsGoneAndTheNameFree) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(a.preserve(s, 2), 0);
    size_t files = a.engine.preserved_files();
    ASSERT_EQ(begin(a, {s}), 0);
    Session* v = a.retrieve("svc");
    int fd = -1;
    ASSERT_EQ(a.engine.retrieve_fd(v, 1, &fd), 0);
    a.th->log.clear();
    ASSERT_EQ(a.engine.finish_session(v), 0);
    // Every file of the view finished (the retrieved and the other), the
    // source's left with them: no callback, the counts given back.
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"can_finish:0", "can_finish:1", "finish:1", "finish:0"}));
    EXPECT_EQ(a.engine.preserved_files(), files - 2);
    EXPECT_TRUE(s->gone());
    EXPECT_EQ(s->last_handoff(), HandoffOutcome::Committed);
    EXPECT_EQ(a.engine.handoffs_in_progress(), "");
    EXPECT_EQ(a.preserve(s, 3), -ESTALE);
    EXPECT_EQ(a.engine.finish_session(s), -ESTALE);
    // The next owner creates it again and preserves again.
    Session* again = a.create("svc");
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(a.preserve(again, 1), 0);
    EXPECT_EQ(a.engine.release_session(s), 0);  // the old owner's close
    EXPECT_EQ(a.engine.release_session(v), 0);  // the view, finished: nothing left
    EXPECT_EQ(a.engine.outgoing().size(), 1u);
    EXPECT_TRUE(a.engine.incoming().empty());
}

TEST(EngineHandoff, RollbackUnfreezesAndTheOwnerGoesOn) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);  // id 0
    ASSERT_EQ(a.preserve(s, 2), 0);  // id 1
    ASSERT_EQ(begin(a, {s}), 0);
    Session* v = a.retrieve("svc");
    int fd = -1;
    ASSERT_EQ(a.engine.retrieve_fd(v, 1, &fd), 0);
    a.th->log.clear();
    EXPECT_TRUE(a.engine.handoff_rollback(s, HandoffOutcome::RolledBack, ETIMEDOUT));
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"unfreeze:0", "unfreeze:1"}));
    EXPECT_EQ(s->handoff(), HandoffState::None);
    EXPECT_EQ(s->last_handoff(), HandoffOutcome::RolledBack);
    EXPECT_EQ(s->last_handoff_reason(), ETIMEDOUT);
    EXPECT_TRUE(v->gone());
    EXPECT_EQ(a.engine.retrieve_fd(v, 2, &fd), -ESTALE);
    EXPECT_EQ(a.engine.finish_session(v), -ESTALE);
    EXPECT_EQ(s->files().size(), 2u);
    EXPECT_EQ(a.preserve(s, 3), 0);
    EXPECT_EQ(a.engine.release_session(v), 0);
    // A later hand-off succeeds.
    ASSERT_EQ(begin(a, {s}), 0);
    Session* v2 = a.retrieve("svc");
    ASSERT_EQ(a.engine.finish_session(v2), 0);
    EXPECT_TRUE(s->gone());
}

TEST(EngineHandoff, ViewClosedUnfinishedRollsBack) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(begin(a, {s}), 0);
    Session* v = a.retrieve("svc");
    a.th->log.clear();
    EXPECT_EQ(a.engine.release_session(v), 0);
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"unfreeze:0"}));  // no finish
    EXPECT_EQ(s->last_handoff(), HandoffOutcome::RolledBack);
    EXPECT_EQ(s->last_handoff_reason(), ECONNRESET);
    EXPECT_TRUE(a.engine.incoming().empty());
    EXPECT_EQ(a.preserve(s, 2), 0);
}

TEST(EngineHandoff, UnretrievedViewGoesAtOnceOnRollback) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(begin(a, {s}), 0);
    EXPECT_EQ(a.engine.incoming().size(), 1u);
    EXPECT_TRUE(a.engine.handoff_rollback(s, HandoffOutcome::RolledBack, ESRCH));
    EXPECT_TRUE(a.engine.incoming().empty());
    Session* x = nullptr;
    EXPECT_EQ(a.engine.retrieve_session(name_of("svc"), &x), -ENOENT);
}

TEST(EngineHandoff, OwnerClosedDuringTheHandOff) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);  // id 0
    ASSERT_EQ(begin(a, {s}), 0);
    EXPECT_EQ(a.engine.release_session(s), 0);  // deferred: the next owner has it
    EXPECT_EQ(a.engine.outgoing().size(), 1u);
    a.th->log.clear();
    // Rolled back: the release that was deferred runs now.
    EXPECT_FALSE(a.engine.handoff_rollback(s, HandoffOutcome::RolledBack, ETIMEDOUT));
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"unfreeze:0", "unpreserve:0"}));
    EXPECT_TRUE(a.engine.outgoing().empty());
    EXPECT_EQ(a.engine.preserved_files(), 0u);

    // Committed: it simply goes.
    Session* t = a.create("svc");
    ASSERT_EQ(a.preserve(t, 1), 0);
    ASSERT_EQ(begin(a, {t}), 0);
    EXPECT_EQ(a.engine.release_session(t), 0);
    Session* v = a.retrieve("svc");
    ASSERT_EQ(a.engine.finish_session(v), 0);
    EXPECT_TRUE(a.engine.outgoing().empty());
    EXPECT_EQ(a.engine.preserved_files(), 0u);
    EXPECT_EQ(a.engine.release_session(v), 0);
}

TEST(EngineHandoff, DryRunFinishIsRefusedAndNothingMoves) {
    Instance a;
    Session* s = a.create("svc");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(begin(a, {s}, /*dry_run=*/true), 0);
    EXPECT_TRUE(s->handoff_dry_run());
    Session* v = a.retrieve("svc");
    int fd = -1;
    ASSERT_EQ(a.engine.retrieve_fd(v, 1, &fd), 0);  // validates
    a.th->log.clear();
    EXPECT_EQ(a.engine.finish_session(v), -ECANCELED);
    EXPECT_TRUE(a.th->log.empty());
    EXPECT_TRUE(a.engine.handoff_rollback(s, HandoffOutcome::Validated));
    EXPECT_EQ(s->last_handoff(), HandoffOutcome::Validated);
    EXPECT_EQ(s->files().size(), 1u);
    EXPECT_EQ(a.preserve(s, 2), 0);
    EXPECT_EQ(a.engine.release_session(v), 0);
}

TEST(EngineHandoff, FailingFreezeUnfreezesInReverseAndRefuses) {
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);  // id 0
    ASSERT_EQ(a.preserve(s2, 1), 0);  // id 1
    ASSERT_EQ(a.preserve(s2, 2), 0);  // id 2
    a.th->log.clear();
    a.th->fail_freeze_at = 2;  // the third freeze: b's second file
    EXPECT_EQ(begin(a, {s1, s2}), -EIO);
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"freeze:0", "freeze:1", "freeze-failed:2",
                                                   "unfreeze:1", "unfreeze:0"}));
    a.th->fail_freeze_at = -1;
    EXPECT_EQ(s1->handoff(), HandoffState::None);
    EXPECT_EQ(s2->handoff(), HandoffState::None);
    EXPECT_TRUE(a.engine.incoming().empty());
    EXPECT_EQ(a.preserve(s2, 3), 0);
    EXPECT_EQ(begin(a, {s1, s2}), 0);
    EXPECT_EQ(a.engine.handoffs_in_progress(), "a, b");
}

TEST(EngineHandoff, RefusesWhatCannotBeHandedOff) {
    Instance a, b;
    Session* s = a.create("svc");
    EXPECT_EQ(a.engine.handoff_begin({}, false), -EINVAL);
    EXPECT_EQ(begin(a, {s, s}), -EINVAL);
    ASSERT_EQ(begin(a, {s}), 0);
    EXPECT_EQ(begin(a, {s}), -EBUSY);
    // An incoming session of the same name (from a reboot) is in the way.
    Session* in = b.create("svc");
    ASSERT_EQ(b.preserve(in, 1), 0);
    Instance c;
    ASSERT_EQ(hand_over(b, c), 0);
    Session* mine = c.create("svc");
    EXPECT_EQ(begin(c, {mine}), -EEXIST);
    Session* old = c.retrieve("svc");
    EXPECT_EQ(begin(c, {old}), -EINVAL);  // incoming
    // A reboot's gate closed: no hand-off.
    Instance d;
    Session* t = d.create("t");
    ASSERT_EQ(d.engine.reboot_freeze(), 0);
    EXPECT_EQ(begin(d, {t}), -EBUSY);
}

}  // namespace
}  // namespace lu::testing
