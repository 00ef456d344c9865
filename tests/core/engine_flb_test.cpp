// SPDX-License-Identifier: Apache-2.0
// FLB lifetime and registration (docs/kernel-semantics.md#flb).
#include "engine_test_util.hpp"

namespace lu::testing {
namespace {

TEST(EngineFlb, OutgoingPreservedOnceAcrossSessionsAndUnpreservedOnLast) {
    Instance a;
    Session* s1 = a.create("a");
    Session* s2 = a.create("b");
    ASSERT_EQ(a.preserve(s1, 1), 0);
    ASSERT_EQ(a.preserve(s2, 1), 0);
    ASSERT_EQ(a.preserve(s2, 2), 0);
    EXPECT_EQ(a.flb.preserve_calls, 1);
    void* obj = nullptr;
    ASSERT_EQ(a.engine.flb_get_outgoing(&a.flb, &obj), 0);
    EXPECT_NE(obj, nullptr);
    ASSERT_EQ(a.engine.release_session(s2), 0);
    EXPECT_EQ(a.flb.unpreserve_calls, 0);
    ASSERT_EQ(a.engine.release_session(s1), 0);
    EXPECT_EQ(a.flb.unpreserve_calls, 1);
    EXPECT_EQ(a.flb.live_objects, 0);
}

TEST(EngineFlb, IncomingCountLoadedUpFrontFinishesOnceWithoutAnyGet) {
    // docs/kernel-semantics.md#flb-incoming: with the count loaded lazily,
    // finishing files before any get underflows and finish never runs. Ours
    // runs it once.
    Instance a, b;
    Session* s = a.create("a");
    ASSERT_EQ(a.preserve(s, 1), 0);
    ASSERT_EQ(a.preserve(s, 2), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    Session* in = b.retrieve("a");
    ASSERT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.flb.retrieve_calls, 1);  // retrieved for its finish
    EXPECT_EQ(b.flb.finish_calls, 1);
    EXPECT_EQ(b.flb.live_objects, 0);
    void* obj = nullptr;
    EXPECT_EQ(b.engine.flb_get_incoming(&b.flb, &obj), -ENODATA);
}

TEST(EngineFlb, GetHoldsTheObjectPastTheLastFile) {
    // docs/kernel-semantics.md#bug-flb-object-lifetime: finish runs only after
    // the last put, exactly once.
    Instance a, b;
    ASSERT_EQ(a.preserve(a.create("a"), 1), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    void* obj = nullptr;
    ASSERT_EQ(b.engine.flb_get_incoming(&b.flb, &obj), 0);
    ASSERT_NE(obj, nullptr);
    void* obj2 = nullptr;
    ASSERT_EQ(b.engine.flb_get_incoming(&b.flb, &obj2), 0);
    EXPECT_EQ(obj, obj2);
    Session* in = b.retrieve("a");
    ASSERT_EQ(b.engine.finish_session(in), 0);
    EXPECT_EQ(b.flb.finish_calls, 0);
    EXPECT_EQ(*static_cast<int*>(obj), 2);  // still alive
    b.engine.flb_put_incoming(&b.flb);
    EXPECT_EQ(b.flb.finish_calls, 0);
    b.engine.flb_put_incoming(&b.flb);
    EXPECT_EQ(b.flb.finish_calls, 1);
    b.engine.flb_put_incoming(&b.flb);  // an extra put changes nothing
    EXPECT_EQ(b.flb.finish_calls, 1);
    EXPECT_EQ(b.flb.retrieve_calls, 1);
}

TEST(EngineFlb, FailedRetrieveIsPermanent) {
    // docs/kernel-semantics.md#retrieve-is-final, for FLBs.
    Instance a, b;
    ASSERT_EQ(a.preserve(a.create("a"), 1), 0);
    ASSERT_EQ(hand_over(a, b), 0);
    b.flb.fail_retrieve = -EIO;
    void* obj = nullptr;
    EXPECT_EQ(b.engine.flb_get_incoming(&b.flb, &obj), -EIO);
    b.flb.fail_retrieve = 0;
    EXPECT_EQ(b.engine.flb_get_incoming(&b.flb, &obj), -EIO);
    EXPECT_EQ(b.flb.retrieve_calls, 1);
    ASSERT_EQ(b.engine.finish_session(b.retrieve("a")), 0);
    EXPECT_EQ(b.flb.finish_calls, 0);  // never had an object to finish
}

TEST(EngineFlb, NoIncomingStateIsEnodata) {
    Instance a;
    void* obj = nullptr;
    EXPECT_EQ(a.engine.flb_get_incoming(&a.flb, &obj), -ENODATA);
    Instance b, c;
    ASSERT_EQ(hand_over(b, c), 0);  // a handover with no FLB in it
    EXPECT_EQ(c.engine.flb_get_incoming(&c.flb, &obj), -ENOENT);
}

TEST(EngineRegistration, HandlerChecks) {
    Engine e;
    EXPECT_EQ(e.register_file_handler(std::make_unique<TestHandler>()), 0);
    EXPECT_EQ(e.register_file_handler(std::make_unique<TestHandler>()), -EEXIST);
    struct Nameless : TestHandler {
        std::string_view compatible() const override { return ""; }
    };
    EXPECT_EQ(e.register_file_handler(std::make_unique<Nameless>()), -EINVAL);
    struct Long : TestHandler {
        std::string_view compatible() const override {
            return "0123456789012345678901234567890123456789012345678";  // 49
        }
    };
    EXPECT_EQ(e.register_file_handler(std::make_unique<Long>()), -EINVAL);
}

TEST(EngineRegistration, FlbChecks) {
    Engine e;
    auto h = std::make_unique<TestHandler>();
    TestHandler* th = h.get();
    TestFlb flb;
    TestHandler stranger;
    EXPECT_EQ(e.register_flb(&stranger, &flb), -EINVAL);  // handler not registered
    ASSERT_EQ(e.register_file_handler(std::move(h)), 0);
    EXPECT_EQ(e.register_flb(th, &flb), 0);
    EXPECT_EQ(e.register_flb(th, &flb), -EEXIST);
    TestFlb same_name;
    EXPECT_EQ(e.register_flb(th, &same_name), -EEXIST);
    struct Named : TestFlb {
        std::string name;
        std::string_view compatible() const override { return name; }
    };
    std::vector<std::unique_ptr<Named>> many;
    for (int i = 0; i < 62; i++) {
        many.push_back(std::make_unique<Named>());
        many.back()->name = "flb-" + std::to_string(i);
        ASSERT_EQ(e.register_flb(th, many.back().get()), 0) << i;
    }
    Named one_more;
    one_more.name = "flb-63";
    EXPECT_EQ(e.register_flb(th, &one_more), -ENOSPC);  // LUO_FLB_MAX = 63
}

}  // namespace
}  // namespace lu::testing
