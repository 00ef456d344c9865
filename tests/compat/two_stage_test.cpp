// SPDX-License-Identifier: Apache-2.0
// The uAPI conformance suite across a live update: stage 1 (an agent
// process) creates and preserves, hands its session fds to a long-lived
// child and exits; `liveupdatectl reboot` plays the kexec; stage 2, a fresh
// process, retrieves and verifies. Both stages use only the kernel's uAPI,
// through libliveupdate-compat.so.
#include "compat_util.hpp"

namespace lu::compat_test {
namespace {

// Against the default daemon and one started with --strict.
class CompatTwoStage : public ::testing::TestWithParam<DaemonMode> {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lu-compat-state-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        state_dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(state_dir_, ec);
    }

    void run_two_stages(const char* scenario) {
        std::string state = state_dir_ + "/" + scenario;
        AgentRun s1 = run_agent({"stage1", scenario, state});
        ASSERT_TRUE(s1.ok()) << "stage 1: " << s1.describe();
        Holder holder(holder_pid(s1.output));
        ASSERT_GT(holder.pid(), 0) << "stage 1 printed no holder: " << s1.output;
        ASSERT_TRUE(holder.alive()) << "the holder of the session fds is gone";
        ASSERT_EQ(d_.reboot(), 0) << "liveupdatectl reboot failed";
        AgentRun s2 = run_agent({"stage2", scenario, state});
        EXPECT_TRUE(s2.ok()) << "stage 2: " << s2.describe();
    }

    DaemonProcess d_{GetParam().args};
    std::string state_dir_;
};

INSTANTIATE_TEST_SUITE_P(Daemon, CompatTwoStage, kDaemonModes, daemon_mode_name);

// One memfd, and the incoming-side rules: retrieve once (EINVAL), PRESERVE_FD
// on incoming (EINVAL), RETRIEVE_FD shares one file, EFAULT effects, FINISH
// (reserved unchecked, idempotent), close removes, name reuse.
TEST_P(CompatTwoStage, OneMemfd) { run_two_stages("one_memfd"); }
// Sessions with files and empty ones; each FINISHes with 0.
TEST_P(CompatTwoStage, SeveralSessionsSomeEmpty) { run_two_stages("several"); }
TEST_P(CompatTwoStage, TwoThousandEmptySessions) { run_two_stages("many_sessions"); }
TEST_P(CompatTwoStage, FiveHundredFilesDistinctContent) { run_two_stages("many_files"); }
// 1 MiB of random bytes; the checksum recorded by stage 1.
TEST_P(CompatTwoStage, OneMiBRandomMemfd) { run_two_stages("big_random"); }
TEST_P(CompatTwoStage, EmptyMemfd) { run_two_stages("empty_memfd"); }
TEST_P(CompatTwoStage, DataWrittenAfterPreserve) { run_two_stages("write_after_preserve"); }
// The position at the live update, moved after preserve.
TEST_P(CompatTwoStage, FilePosition) { run_two_stages("file_position"); }

// Fds of the previous instance, used after the live update, are still known
// as LUO fds by the compat library: ESTALE, whatever the type byte.
TEST_P(CompatTwoStage, OldEpochFdsAreStale) {
    std::string state = state_dir_ + "/stale_fds";
    AgentRun s1 = run_agent({"stage1", "stale_fds", state});
    ASSERT_TRUE(s1.ok()) << "stage 1: " << s1.describe();
    Holder holder(holder_pid(s1.output));
    ASSERT_GT(holder.pid(), 0) << "stage 1 printed no holder: " << s1.output;
    ASSERT_EQ(d_.reboot(), 0) << "liveupdatectl reboot failed";
    ASSERT_EQ(kill(holder.pid(), SIGUSR1), 0);  // the holder uses its old fds now
    AgentRun s2 = run_agent({"stage2", "stale_fds", state});
    EXPECT_TRUE(s2.ok()) << "stage 2: " << s2.describe();
}

}  // namespace
}  // namespace lu::compat_test
