// SPDX-License-Identifier: Apache-2.0
// The reboot gate, freeze and its unwind, the handover and deserialization
// (docs/kernel-semantics.md#reboot and #next-instance).
#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

TEST(EngineReboot, FreezesEverySessionFilesInOrder) {
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);  // id 0
    ASSERT_EQ(a.preserve(s2, 1), 0);  // id 1
    ASSERT_EQ(a.preserve(s1, 2), 0);  // id 2
    a.th->log.clear();
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    EXPECT_EQ(a.th->log, (std::vector<std::string>{"freeze:0", "freeze:2", "freeze:1"}));
    EXPECT_TRUE(a.engine.gate_closed());
}

TEST(EngineReboot, FrozenEngineRefusesEveryMutation) {
    // docs/kernel-semantics.md#bug-mutation-during-reboot: after a successful
    // freeze nothing may succeed.
    Instance a, b;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    a.create("b");
    ASSERT_EQ(hand_over(a, b), 0);  // `a` is now frozen
    Session* x = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("new"), &x), -EAGAIN);
    EXPECT_EQ(a.preserve(s, 2), -EAGAIN);
    EXPECT_EQ(a.engine.release_session(s), -EAGAIN);  // a close waits
    EXPECT_EQ(a.engine.outgoing().size(), 2u);
    EXPECT_EQ(s->files().size(), 1u);
    EXPECT_EQ(a.engine.reboot_freeze(), -EBUSY);
}

TEST(EngineReboot, FailedFreezeUnwindsAndLeavesEverythingUsable) {
    // docs/kernel-semantics.md#reboot-freeze: a freeze failing at file k
    // unfreezes what was frozen, reopens the gate, and a second reboot
    // succeeds.
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);  // id 0
    ASSERT_EQ(a.preserve(s1, 2), 0);  // id 1
    ASSERT_EQ(a.preserve(s2, 1), 0);  // id 2
    ASSERT_EQ(a.preserve(s2, 2), 0);  // id 3
    a.th->log.clear();
    a.th->fail_freeze_at = 3;  // the 4th freeze: file id 3, second of session b
    EXPECT_EQ(a.engine.reboot_freeze(), -EIO);
    std::vector<std::string> want{"freeze:0",   "freeze:1",   "freeze:2", "freeze-failed:3",
                                  "unfreeze:2", "unfreeze:0", "unfreeze:1"};
    EXPECT_EQ(a.th->log, want);
    EXPECT_FALSE(a.engine.gate_closed());
    EXPECT_EQ(a.preserve(s2, 3), 0);
    EXPECT_NE(a.create("c"), nullptr);
    ASSERT_EQ(a.engine.release_session(s1), 0);
    a.th->fail_freeze_at = -1;
    EXPECT_EQ(a.engine.reboot_freeze(), 0);
}

TEST(EngineReboot, UnfreezeAfterALaterFailureRestoresService) {
    // docs/kernel-semantics.md#reboot-unwind: the live update failed after the
    // freeze (exec, validation...).
    Instance a;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    a.th->log.clear();
    a.engine.reboot_unfreeze();
    EXPECT_EQ(a.th->log, std::vector<std::string>{"unfreeze:0"});
    EXPECT_EQ(a.preserve(s, 2), 0);
    EXPECT_EQ(a.engine.release_session(s), 0);
}

TEST(EngineReboot, HandoverIsExactlyTheStateAtTheGate) {
    // docs/kernel-semantics.md#reboot-serialize
    Instance a;
    Session* s1 = a.create("a");
    a.create("empty");
    ASSERT_EQ(a.preserve(s1, 5), 0);
    ASSERT_EQ(a.preserve(s1, 6), 0);
    Session* gone = a.create("gone");
    ASSERT_EQ(a.preserve(gone, 1), 0);
    ASSERT_EQ(a.engine.release_session(gone), 0);
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    Handover h = a.engine.handover();
    ASSERT_EQ(h.image.sessions.size(), 2u);
    EXPECT_EQ(h.image.sessions[0].name, "a");
    EXPECT_EQ(h.image.sessions[1].name, "empty");
    ASSERT_EQ(h.image.sessions[0].files.size(), 2u);
    EXPECT_EQ(h.image.sessions[0].files[0].token, 5u);
    EXPECT_EQ(h.image.sessions[0].files[1].token, 6u);
    EXPECT_EQ(h.image.sessions[0].files[1].fd_slot, 1u);
    EXPECT_EQ(h.fds.size(), 2u);
    EXPECT_EQ(h.image.fd_slots.size(), 2u);
    ASSERT_EQ(h.image.flbs.size(), 1u);
    EXPECT_EQ(h.image.flbs[0].count, 2u);
    EXPECT_EQ(h.image.liveupdate_num, 1u);
}

TEST(EngineReboot, FdSlotsReadAtPreserveKeyBothInstances) {
    // The slot read at preserve is what the handover records, and what keys
    // the incoming file in the managed set: no second read of either fd.
    Instance a, b;
    Session* s = a.create("vm0");
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    UniqueFd w(fds[1]);
    UniqueFd keep = dup_fd(fds[0]);
    ASSERT_EQ(a.engine.preserve_fd(s, 1, UniqueFd(fds[0])), 0);
    struct stat st;
    ASSERT_EQ(fstat(keep.get(), &st), 0);
    EXPECT_EQ(a.engine.outgoing().front().files()[0]->slot, fd_slot_of(st));
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    EXPECT_EQ(a.engine.handover().image.fd_slots, std::vector<FdSlot>{fd_slot_of(st)});
    a.engine.reboot_unfreeze();
    ASSERT_EQ(hand_over(a, b), 0);
    // The object is managed in b from deserialize on: not preservable again.
    EXPECT_EQ(b.engine.preserve_fd(b.create("other"), 1, dup_fd(keep.get())), -EBUSY);
}

TEST(EngineReboot, EpochIncrementsAcrossInstances) {
    Instance a, b, c;
    ASSERT_EQ(hand_over(a, b), 0);
    EXPECT_EQ(b.engine.liveupdate_num(), 1u);
    ASSERT_EQ(hand_over(b, c), 0);
    EXPECT_EQ(c.engine.liveupdate_num(), 2u);
}

TEST(EngineReboot, UnretrievedIncomingSessionsAreDropped) {
    Instance a, b, c;
    ASSERT_EQ(a.preserve(a.create("kept"), 1), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    ASSERT_EQ(hand_over(b, c), 0);  // nobody retrieved "kept" in b
    Session* s = nullptr;
    EXPECT_EQ(c.engine.retrieve_session(name_of("kept"), &s), -ENOENT);
}

TEST(EngineReboot, UnknownHandlerMakesDeserializeStickyEio) {
    // docs/kernel-semantics.md#deserialize-failure: propagate, then EIO on
    // every open, nothing reachable.
    Instance a;
    ASSERT_EQ(a.preserve(a.create("vm0"), 1), 0);
    Engine bare;  // no handler registered
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    Handover h = a.engine.handover();
    std::vector<UniqueFd> fds;
    for (int fd : h.fds) fds.push_back(dup_fd(fd));
    EXPECT_EQ(bare.deserialize(h.image, std::move(fds)), -ENOENT);
    EXPECT_EQ(bare.open_check(), -EIO);
    EXPECT_EQ(bare.open_check(), -EIO);
    Session* s = nullptr;
    EXPECT_EQ(bare.retrieve_session(name_of("vm0"), &s), -EIO);
    EXPECT_EQ(bare.create_session(name_of("new"), &s), -EIO);
    EXPECT_EQ(bare.leaked_fds(), 1u);  // kept, not destroyed
}

TEST(EngineReboot, DuplicateIncomingNameIsStickyError) {
    // docs/kernel-semantics.md#bug-deserialize-error-path (the format
    // validator refuses this too; the engine does not rely on it).
    Instance a, b;
    a.create("x");
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    Handover h = a.engine.handover();
    h.image.sessions.push_back(h.image.sessions[0]);
    EXPECT_EQ(b.engine.deserialize(h.image, {}), -EEXIST);
    EXPECT_EQ(b.engine.open_check(), -EIO);
}

TEST(EngineReboot, RoundTripKeepsTokensOrderAndObjects) {
    Instance a, b;
    Session* s = a.create("vm0");
    UniqueFd p[3];
    for (int i = 0; i < 3; i++) {
        int fds[2];
        ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        p[i].reset(fds[1]);  // keep the write end to prove identity
        ASSERT_EQ(a.engine.preserve_fd(s, 100 + i, UniqueFd(fds[0])), 0);
    }
    ASSERT_EQ(hand_over(a, b), 0);
    Session* in = b.retrieve("vm0");
    ASSERT_EQ(in->files().size(), 3u);
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(in->files()[i]->token, 100u + i);
        int fd = -1;
        ASSERT_EQ(b.engine.retrieve_fd(in, 100 + i, &fd), 0);
        char c = 'a' + i, got = 0;
        ASSERT_EQ(write(p[i].get(), &c, 1), 1);
        ASSERT_EQ(read(fd, &got, 1), 1);
        EXPECT_EQ(got, c);
    }
}

}  // namespace
}  // namespace lu::testing

namespace lu::testing {
namespace {

TEST(EngineReboot, SessionClosedDuringTheWalkIsReleasedOnlyAfterIt) {
    // docs/kernel-semantics.md#bug-session-freed-under-walk: a close that
    // arrives while the reboot holds the state must neither free what the walk
    // uses nor be lost: it waits, then runs.
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);
    ASSERT_EQ(a.preserve(s2, 1), 0);
    ASSERT_EQ(a.engine.reboot_freeze(), 0);
    EXPECT_EQ(a.engine.release_session(s2), -EAGAIN);  // waits
    Handover h = a.engine.handover();
    EXPECT_EQ(h.image.sessions.size(), 2u);  // the walk saw it whole
    a.engine.reboot_unfreeze();              // the update failed later
    EXPECT_EQ(a.engine.release_session(s2), 0);  // the waiting close now runs
    EXPECT_EQ(a.engine.outgoing().size(), 1u);
}

}  // namespace
}  // namespace lu::testing
