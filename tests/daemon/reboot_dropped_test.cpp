// SPDX-License-Identifier: Apache-2.0
// A reboot, and its dry run, name the incoming sessions nobody retrieved:
// they are dropped at the next reboot, as in the kernel, but not silently.
#include "daemon/daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

TEST(RebootDropped, UnretrievedIncomingSessionsAreReported) {
    DaemonProcess d;
    {
        Fd kept = create_session_now("kept");
        Fd mem = make_memfd("x");
        ASSERT_EQ(lu_preserve_fd(kept.get(), mem.get(), 1), 0);
        Fd forgotten = create_session_now("forgotten");
        pid_t old = d.pid();
        json r = d.admin(R"({"op":"reboot"})");
        ASSERT_EQ(r["ok"], true) << r;
        EXPECT_EQ(r["dropped"], json::array());  // nothing incoming yet
        d.track_update(old);
    }
    // "kept" is retrieved by its service, "forgotten" by nobody.
    Fd ctl(lu_open());
    ASSERT_TRUE(ctl);
    Fd in(lu_retrieve_session(ctl.get(), "kept"));
    ASSERT_TRUE(in);
    ctl.reset();
    json dry = d.admin(R"({"op":"reboot","dry_run":true})");
    ASSERT_EQ(dry["ok"], true) << dry;
    EXPECT_EQ(dry["dropped"], json::array({"forgotten"}));
    std::string out;
    pid_t old = d.pid();
    EXPECT_EQ(DaemonProcess::ctl({"reboot"}, &out), 0) << out;
    d.track_update(old);
    EXPECT_NE(out.find("dropped 1 incoming session(s) nobody retrieved: forgotten"), std::string::npos)
        << out;
}

}  // namespace
}  // namespace lu::testing
