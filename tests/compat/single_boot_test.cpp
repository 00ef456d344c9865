// SPDX-License-Identifier: Apache-2.0
// The uAPI conformance suite, one boot: each case is a function of the agent
// (agents/luo_agent.c) that uses only open/ioctl/close on /dev/liveupdate,
// run through libliveupdate-compat.so against a real liveupdated.
#include "compat_util.hpp"

namespace lu::compat_test {
namespace {

// Every case against the default daemon and against one started with
// --strict (only what the kernel has): a kernel-only agent sees no
// difference.
class CompatSingleBoot : public ::testing::TestWithParam<DaemonMode> {
protected:
    void expect_case(const char* name) {
        AgentRun r = run_agent({"single", name});
        EXPECT_TRUE(r.ok()) << "case " << name << ": " << r.describe();
    }
    DaemonProcess d_{GetParam().args};
};

INSTANTIATE_TEST_SUITE_P(Daemon, CompatSingleBoot, kDaemonModes, daemon_mode_name);

// open/close, FD_CLOEXEC only with O_CLOEXEC.
TEST_P(CompatSingleBoot, OpenClose) { expect_case("open_close"); }
// open, open64, openat(64) with any dirfd, the _FORTIFY_SOURCE __open*_2;
// O_CREAT|O_EXCL -> EEXIST, O_DIRECTORY -> ENOTDIR; other paths untouched.
TEST_P(CompatSingleBoot, OpenVariants) { expect_case("open_variants"); }
// A second open -> EBUSY, also while a dup or a forked child holds it.
TEST_P(CompatSingleBoot, ExclusiveOpen) { expect_case("exclusive"); }
TEST_P(CompatSingleBoot, SessionNames) { expect_case("session_names"); }
// `liveupdatectl upgrade` under a running agent: it notices nothing.
TEST_P(CompatSingleBoot, AcrossAnUpgrade) {
    // liveupdatectl runs without the agent's preload (an ASan build of it
    // refuses a library loaded before its runtime).
    AgentRun r = run_agent({"single", "across_upgrade"},
                           {std::string("LU_UPGRADE=env -u LD_PRELOAD ") + LIVEUPDATECTL_PATH + " upgrade"});
    EXPECT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(d_.status()["upgrades"], 2);
}
TEST_P(CompatSingleBoot, PreserveMemfds) { expect_case("preserve_memfds"); }
// /dev/null, a pipe, LUO's own fds -> ENOENT; bad fds -> EBADF.
TEST_P(CompatSingleBoot, PreserveUnsupported) { expect_case("preserve_unsupported"); }
// Same token -> EEXIST; same file, other token or session -> EBUSY.
TEST_P(CompatSingleBoot, DoublePreserve) { expect_case("double_preserve"); }
TEST_P(CompatSingleBoot, TwoThousandSessions) { expect_case("many_sessions"); }
TEST_P(CompatSingleBoot, FiveHundredFiles) { expect_case("many_files"); }
TEST_P(CompatSingleBoot, ErrnoNrOutOfRange) { expect_case("errno_range"); }
TEST_P(CompatSingleBoot, ErrnoFullCommandMismatch) { expect_case("errno_enotty"); }
TEST_P(CompatSingleBoot, ErrnoSizeBelowMinimum) { expect_case("errno_size"); }
TEST_P(CompatSingleBoot, ErrnoNonZeroTail) { expect_case("errno_e2big"); }
TEST_P(CompatSingleBoot, ErrnoSessionType) { expect_case("errno_session_type"); }
// Bad pointers at each step; replies into read-only memory.
TEST_P(CompatSingleBoot, ErrnoFault) { expect_case("errno_efault"); }
TEST_P(CompatSingleBoot, GetNameReserved) { expect_case("get_name_reserved"); }
TEST_P(CompatSingleBoot, FdFieldWrittenBack) { expect_case("fd_writeback"); }
TEST_P(CompatSingleBoot, DupAndForkShareTheSession) { expect_case("dup_fork"); }
TEST_P(CompatSingleBoot, ExecInheritsTheSession) { expect_case("exec"); }
// Concurrent ioctls on one session (one fd and a dup) from four threads.
TEST_P(CompatSingleBoot, ThreadsOnOneSession) { expect_case("threads"); }
// LUO ioctl numbers on non-LUO fds go to the real ioctl.
TEST_P(CompatSingleBoot, OtherFdsPassThrough) { expect_case("passthrough"); }
// Another type byte on a LUO fd: the number is decoded first (EINVAL out of
// range), as luo_ioctl and luo_session_ioctl do; the VFS's own still work.
TEST_P(CompatSingleBoot, ForeignTypeOnLuoFdIsDecodedByNumber) { expect_case("foreign_types"); }
// A program's own AF_UNIX SOCK_SEQPACKET socket is not a LUO fd: ENOTTY.
TEST_P(CompatSingleBoot, OwnSeqpacketSocketIsNotLuo) { expect_case("own_seqpacket"); }
// LUO fds are still known after dup, fork and SCM_RIGHTS.
TEST_P(CompatSingleBoot, LuoFdKnownAfterDupForkAndScmRights) { expect_case("luo_fd_travels"); }

// Without a daemon, open fails as on a kernel without LUO.
TEST(CompatNoDaemon, OpenIsEnoent) {
    char tmpl[] = "/tmp/lu-compat-empty-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    AgentRun r = run_agent({"single", "no_daemon"}, {std::string("LIVEUPDATE_RUNTIME_DIR=") + tmpl});
    EXPECT_TRUE(r.ok()) << r.describe();
    rmdir(tmpl);
}

}  // namespace
}  // namespace lu::compat_test
