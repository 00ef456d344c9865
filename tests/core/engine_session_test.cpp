// SPDX-License-Identifier: Apache-2.0
// Sessions: names, lists, retrieve-once, release
// (docs/kernel-semantics.md#sessions).
#include <sys/resource.h>

#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

TEST(EngineSession, EmptyNameIsEinval) {
    Instance a;
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(Name{}, &s), -EINVAL);
    EXPECT_TRUE(a.engine.outgoing().empty());
}

TEST(EngineSession, UnterminatedNameIsEinval) {
    Instance a;
    Name n;
    n.fill('x');
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(n, &s), -EINVAL);
}

TEST(EngineSession, SixtyThreeByteNameIsAccepted) {
    Instance a;
    Name n{};
    memset(n.data(), 'y', 63);
    Session* s = nullptr;
    ASSERT_EQ(a.engine.create_session(n, &s), 0);
    EXPECT_EQ(s->name(), std::string(63, 'y'));
}

TEST(EngineSession, DuplicateOutgoingNameIsEexist) {
    Instance a;
    a.create("vm0");
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("vm0"), &s), -EEXIST);
    // Bytes after the NUL do not count (strncmp over 64 bytes).
    Name n = name_of("vm0");
    n[10] = 'z';
    EXPECT_EQ(a.engine.create_session(n, &s), -EEXIST);
    EXPECT_EQ(a.engine.outgoing().size(), 1u);
}

TEST(EngineSession, NameIsReusableOnceReleased) {
    Instance a;
    Session* s = a.create("vm0");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(a.engine.release_session(s), 0);
    EXPECT_NE(a.create("vm0"), nullptr);
}

TEST(EngineSession, IncomingAndOutgoingNamesAreSeparate) {
    Instance a, b;
    a.create("vm0");
    ASSERT_EQ(hand_over(a, b), 0);
    EXPECT_NE(b.create("vm0"), nullptr);  // outgoing "vm0" beside incoming "vm0"
    EXPECT_NE(b.retrieve("vm0"), nullptr);
}

TEST(EngineSession, RetrieveUnknownIsEnoent) {
    Instance a;
    Session* s = nullptr;
    EXPECT_EQ(a.engine.retrieve_session(name_of("nope"), &s), -ENOENT);
    // An outgoing session is not retrievable: the lists never mix.
    a.create("out");
    EXPECT_EQ(a.engine.retrieve_session(name_of("out"), &s), -ENOENT);
}

TEST(EngineSession, RetrieveOnceThenEinvalThenEnoentAfterClose) {
    // docs/kernel-semantics.md#bug-retrieve-toctou: retrieve, retrieve again,
    // close, retrieve again.
    Instance a, b;
    a.create("vm0");
    ASSERT_EQ(hand_over(a, b), 0);
    Session* s = b.retrieve("vm0");
    Session* again = nullptr;
    EXPECT_EQ(b.engine.retrieve_session(name_of("vm0"), &again), -EINVAL);
    ASSERT_EQ(b.engine.release_session(s), 0);
    EXPECT_EQ(b.engine.retrieve_session(name_of("vm0"), &again), -ENOENT);
}

TEST(EngineSession, ReleaseUnpreservesInReverseOrder) {
    Instance a;
    Session* s = a.create("vm0");
    for (uint64_t t = 0; t < 3; t++) ASSERT_EQ(a.preserve(s, t), 0);
    a.th->log.clear();
    ASSERT_EQ(a.engine.release_session(s), 0);
    std::vector<std::string> want{"unpreserve:2", "unpreserve:1", "unpreserve:0"};
    EXPECT_EQ(a.th->log, want);
    EXPECT_EQ(a.engine.preserved_files(), 0u);
    EXPECT_EQ(a.flb.live_objects, 0);
}

TEST(EngineSession, UnpreserveRunsNoHandlerCodeAfterTeardown) {
    // docs/kernel-semantics.md#bug-handler-after-teardown: the identity used
    // to leave the managed set is the one recorded at preserve; get_id is
    // never called during teardown.
    Instance a;
    Session* s = a.create("vm0");
    ASSERT_EQ(a.preserve(s, 1), 0);
    a.th->log.clear();
    ASSERT_EQ(a.engine.release_session(s), 0);
    EXPECT_EQ(a.th->log, std::vector<std::string>{"unpreserve:0"});
}

TEST(EngineSession, SessionCapacityIsEnospcAndBeforeEexist) {
    Limits l;
    l.sessions = 3;
    Instance a(l);
    a.create("a");
    a.create("b");
    a.create("c");
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("d"), &s), -ENOSPC);
    // The kernel grows its block set before the duplicate check.
    EXPECT_EQ(a.engine.create_session(name_of("a"), &s), -ENOSPC);
}

TEST(EngineSession, DefaultBoundsAreTheKernels) {
    Engine e;
    EXPECT_EQ(e.limits().sessions, 510000u);
    EXPECT_EQ(e.limits().files_per_session, 630000u);
}

TEST(EngineSession, HundredThousandSessions) {
    Instance a;
    char buf[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(buf, sizeof buf, "s%d", i);
        Session* s = nullptr;
        ASSERT_EQ(a.engine.create_session(name_of(buf), &s), 0) << i;
    }
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("s99999"), &s), -EEXIST);
    EXPECT_EQ(a.engine.outgoing().size(), 100000u);
}

TEST(EngineSession, FullKernelSessionBound) {
    // 510,000 sessions fit, the next one is ENOSPC.
    Instance a;
    char buf[32];
    for (size_t i = 0; i < kMaxSessions; i++) {
        snprintf(buf, sizeof buf, "%zu", i);
        Session* s = nullptr;
        ASSERT_EQ(a.engine.create_session(name_of(buf), &s), 0) << i;
    }
    Session* s = nullptr;
    EXPECT_EQ(a.engine.create_session(name_of("one-more"), &s), -ENOSPC);
}

}  // namespace
}  // namespace lu::testing
