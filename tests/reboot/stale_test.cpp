// SPDX-License-Identifier: Apache-2.0
// What a client's fd answers once its daemon instance is gone. A reboot hands
// the epoch's client connections to the next instance, which answers ESTALE
// on them for as long as they are kept; a daemon that dies answers nothing,
// and the library says EOWNERDEAD: a crash never looks like a hand-over.
#include "reboot/reboot_util.hpp"

namespace lu::reboot_test {
namespace {

TEST(StaleFds, AfterARebootTheyAnswerEstaleForAsLongAsTheyAreKept) {
    DaemonProcess d;
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "app"));
    ASSERT_TRUE(s.ok());
    Fd m = make_memfd("app", random_bytes(100, 1));
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    ASSERT_EQ(d.reboot(), 0);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    for (int i = 0; i < 3; i++) EXPECT_EQ(lu_get_name(s.get(), name), -ESTALE) << i;
    EXPECT_EQ(lu_preserve_fd(s.get(), m.get(), 2), -ESTALE);
    EXPECT_EQ(lu_create_session(ctl.get(), "other"), -ESTALE);
    // An upgrade carries them as they are.
    ASSERT_EQ(d.upgrade(), 0);
    EXPECT_EQ(lu_get_name(s.get(), name), -ESTALE);
    EXPECT_EQ(lu_create_session(ctl.get(), "other"), -ESTALE);
    // The stale control connection does not hold the device: a new one opens.
    Fd ctl2(lu_open());
    ASSERT_TRUE(ctl2.ok()) << strerror(-ctl2.get());
    Fd in(lu_retrieve_session(ctl2.get(), "app"));
    EXPECT_TRUE(in.ok()) << strerror(-in.get());
}

TEST(StaleFds, ADaemonThatDiesIsEownerdeadNeverEstale) {
    DaemonProcess d;
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "app"));
    ASSERT_TRUE(s.ok());
    const pid_t pid = d.pid();
    ASSERT_GT(pid, 0);
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    waitpid(pid, nullptr, 0);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    EXPECT_EQ(lu_get_name(s.get(), name), -EOWNERDEAD);
    EXPECT_EQ(lu_get_name(s.get(), name), -EOWNERDEAD);
    EXPECT_EQ(lu_create_session(ctl.get(), "other"), -EOWNERDEAD);
}

}  // namespace
}  // namespace lu::reboot_test
