// SPDX-License-Identifier: Apache-2.0
// Error paths on demand (src/core/engine_faults.cpp): each runs the kernel's
// own error path, exactly as a failing handler's would.
#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

TEST(EngineFaults, FreezeFailsAtFileKAndUnwindsAsTheKernel) {
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);  // id 0
    ASSERT_EQ(a.preserve(s1, 2), 0);  // id 1
    ASSERT_EQ(a.preserve(s2, 1), 0);  // id 2
    ASSERT_EQ(a.preserve(s2, 2), 0);  // id 3
    a.th->log.clear();
    a.engine.fail_freeze_at(3, ENOMEM);
    EXPECT_EQ(a.engine.reboot_freeze(), -ENOMEM);
    // File 3's freeze never ran; luo_session_serialize's unwind did.
    std::vector<std::string> want{"freeze:0", "freeze:1", "freeze:2", "unfreeze:2", "unfreeze:0",
                                  "unfreeze:1"};
    EXPECT_EQ(a.th->log, want);
    EXPECT_FALSE(a.engine.gate_closed());
    EXPECT_EQ(a.preserve(s2, 3), 0);
    // Armed for one reboot.
    EXPECT_EQ(a.engine.reboot_freeze(), 0);
}

TEST(EngineFaults, FreezeFaultPastTheLastFileIsDisarmedAnyway) {
    Instance a;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    a.engine.fail_freeze_at(5, EIO);
    EXPECT_EQ(a.engine.reboot_freeze(), 0);
    a.engine.reboot_unfreeze();
    ASSERT_EQ(a.preserve(s, 2), 0);
    ASSERT_EQ(a.preserve(s, 3), 0);
    ASSERT_EQ(a.preserve(s, 4), 0);
    ASSERT_EQ(a.preserve(s, 5), 0);
    ASSERT_EQ(a.preserve(s, 6), 0);
    EXPECT_EQ(a.engine.reboot_freeze(), 0);
}

TEST(EngineFaults, RetrieveFailsForGoodAndFinishReleasesIt) {
    Instance a, b;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(a.preserve(s, 2), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    EXPECT_EQ(b.engine.fail_retrieve("nope", 1, EIO), -ENOENT);
    EXPECT_EQ(b.engine.fail_retrieve("a", 3, EIO), -ENOENT);
    ASSERT_EQ(b.engine.fail_retrieve("a", 1, EIO), 0);
    Session* in = b.retrieve("a");
    int fd = -1;
    b.th->log.clear();
    EXPECT_EQ(b.engine.retrieve_fd(in, 1, &fd), -EIO);
    EXPECT_EQ(b.engine.retrieve_fd(in, 1, &fd), -EIO);
    EXPECT_TRUE(b.th->log.empty());  // no handler retrieve: it "failed" already
    EXPECT_EQ(b.engine.retrieve_fd(in, 2, &fd), 0);
    EXPECT_EQ(b.engine.fail_retrieve("a", 2, EIO), -EALREADY);
    EXPECT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.engine.retrieve_fd(in, 1, &fd), -ENOENT);
}

TEST(EngineFaults, FinishRefusedOnceThenSucceeds) {
    Instance a, b;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    EXPECT_EQ(b.engine.refuse_finish_once("nope"), -ENOENT);
    ASSERT_EQ(b.engine.refuse_finish_once("a"), 0);
    Session* in = b.retrieve("a");
    int fd = -1;
    ASSERT_EQ(b.engine.retrieve_fd(in, 1, &fd), 0);
    EXPECT_EQ(b.engine.finish_session(in), -EBUSY);
    EXPECT_EQ(b.engine.retrieve_fd(in, 1, &fd), 0);  // nothing changed
    EXPECT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.engine.retrieve_fd(in, 1, &fd), -ENOENT);
}

TEST(EngineFaults, FinishRefusalOnLastCloseOrphansTheSession) {
    Instance a, b;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    ASSERT_EQ(b.engine.refuse_finish_once("a"), 0);
    Session* in = b.retrieve("a");
    EXPECT_EQ(b.engine.release_session(in), -EBUSY);
    EXPECT_TRUE(in->orphaned());
}

// ---- kernel releases (src/core/kernel_profile.hpp) ----

const KernelProfile& v71() { return *find_kernel_profile("7.1"); }

TEST(KernelProfile, ReleasesAndDefault) {
    ASSERT_NE(find_kernel_profile("7.1"), nullptr);
    ASSERT_NE(find_kernel_profile("7.2"), nullptr);
    EXPECT_EQ(find_kernel_profile("7.3"), nullptr);
    EXPECT_EQ(newest_kernel_profile().release, "7.2");
    EXPECT_EQ(&Engine().profile(), &newest_kernel_profile());
}

TEST(KernelProfile, V71NamesAreTruncatedNotRefused) {
    Engine e({}, v71());
    Session* s = nullptr;
    EXPECT_EQ(e.create_session(name_of(""), &s), 0);
    EXPECT_EQ(s->name(), "");
    Name full;
    full.fill('z');
    EXPECT_EQ(e.create_session(full, &s), 0);
    EXPECT_EQ(s->name(), std::string(63, 'z'));
    EXPECT_EQ(e.create_session(name_of(std::string(63, 'z').c_str()), &s), -EEXIST);
    Engine v72;
    EXPECT_EQ(v72.create_session(name_of(""), &s), -EINVAL);
    EXPECT_EQ(v72.create_session(full, &s), -EINVAL);
}

TEST(KernelProfile, V71Limits) {
    Engine e({}, v71());
    EXPECT_EQ(e.limits().sessions, 819u);
    EXPECT_EQ(e.limits().files_per_session, 128u);
    Session* s = nullptr;
    for (int i = 0; i < 819; i++)
        ASSERT_EQ(e.create_session(name_of(("s" + std::to_string(i)).c_str()), &s), 0);
    EXPECT_EQ(e.create_session(name_of("one more"), &s), -ENOMEM);
    EXPECT_EQ(e.create_session(name_of("s0"), &s), -ENOMEM);  // before EEXIST
    // Tighter limits given by the daemon still hold.
    Limits l;
    l.sessions = 2;
    EXPECT_EQ(Engine(l, v71()).limits().sessions, 2u);
}

TEST(KernelProfile, V71NoTypeCheckOperationsOnOutgoing) {
    Engine e({}, v71());
    Session* s = nullptr;
    ASSERT_EQ(e.create_session(name_of("out"), &s), 0);
    int fd = -1;
    EXPECT_EQ(e.retrieve_fd(s, 1, &fd), -ENOENT);
    EXPECT_EQ(e.finish_session(s), 0);
    Engine v72;
    ASSERT_EQ(v72.create_session(name_of("out"), &s), 0);
    EXPECT_EQ(v72.retrieve_fd(s, 1, &fd), -EINVAL);
    EXPECT_EQ(v72.finish_session(s), -EINVAL);
}

}  // namespace
}  // namespace lu::testing
