// SPDX-License-Identifier: Apache-2.0
// What liveupdated offers people who test LUO agents
// (docs/testing-luo-agents.md), each through the compat library and a
// kernel-only agent (agents/luo_agent.c) against a real daemon: strict mode,
// the kernel releases, error paths on demand, the trace.
#include "compat_util.hpp"

namespace lu::compat_test {
namespace {

// ---- strict mode ----

TEST(CompatStrict, SocketIsEnoentAsOnTheKernel) {
    DaemonProcess d({"--strict"});
    nlohmann::json s = d.status();
    EXPECT_EQ(s["strict"], true);
    EXPECT_EQ(s["kernel_release"], "7.2");
    AgentRun r = run_agent({"single", "socket_enoent"});
    EXPECT_TRUE(r.ok()) << r.describe();
}

TEST(CompatStrict, DefaultDaemonIsNotStrict) {
    DaemonProcess d;
    nlohmann::json s = d.status();
    EXPECT_EQ(s["strict"], false);
    EXPECT_EQ(s["agent_faults"], false);
}

// A kexec has no dry run: an extension, refused under --strict.
TEST(CompatStrict, DryRunRefused) {
    DaemonProcess d({"--strict"});
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"reboot", "--dry-run", "--json"}, &out), 1) << out;
    nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
    EXPECT_EQ(j["errno"], EOPNOTSUPP) << out;
}

// The next instance is strict too, and keeps the release.
TEST(CompatStrict, SurvivesTheReboot) {
    DaemonProcess d({"--strict", "--kernel-release", "7.1"});
    ASSERT_EQ(d.reboot(), 0);
    nlohmann::json s = d.status();
    EXPECT_EQ(s["epoch"], 1);
    EXPECT_EQ(s["strict"], true);
    EXPECT_EQ(s["kernel_release"], "7.1");
}

// ---- kernel releases: each difference, both ways ----

TEST(CompatKernelRelease, V7_1) {
    DaemonProcess d({"--kernel-release", "7.1"});
    EXPECT_EQ(d.status()["kernel_release"], "7.1");
    AgentRun r = run_agent({"single", "release_7_1"});
    EXPECT_TRUE(r.ok()) << r.describe();
}

TEST(CompatKernelRelease, V7_2IsTheDefault) {
    DaemonProcess d;
    EXPECT_EQ(d.status()["kernel_release"], "7.2");
    AgentRun r = run_agent({"single", "release_7_2"});
    EXPECT_TRUE(r.ok()) << r.describe();
}

TEST(CompatKernelRelease, V7_2Explicit) {
    DaemonProcess d({"--kernel-release", "7.2", "--strict"});
    AgentRun r = run_agent({"single", "release_7_2"});
    EXPECT_TRUE(r.ok()) << r.describe();
}

TEST(CompatKernelRelease, UnknownReleaseIsAUsageError) {
    std::string cmd = std::string(LIVEUPDATED_PATH) + " --kernel-release 6.1 2>/dev/null";
    int st = system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << st;
}

// ---- error paths on demand ----

class CompatAgentFaults : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lu-compat-state-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        state_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(state_, ec);
    }
    static void arm(const std::vector<std::string>& args) {
        std::vector<std::string> a{"fault"};
        a.insert(a.end(), args.begin(), args.end());
        std::string out;
        ASSERT_EQ(DaemonProcess::ctl(a, &out), 0) << out;
    }
    // stage 1, reboot, arm (after the reboot: the incoming side), stage 2.
    void two_stages(const char* scenario, const std::vector<std::string>& arm_before,
                    const std::vector<std::string>& arm_after) {
        AgentRun s1 = run_agent({"stage1", scenario, state_});
        ASSERT_TRUE(s1.ok()) << "stage 1: " << s1.describe();
        Holder holder(holder_pid(s1.output));
        ASSERT_GT(holder.pid(), 0) << s1.output;
        if (!arm_before.empty()) arm(arm_before);
        ASSERT_EQ(d_.reboot(), 0);
        if (!arm_after.empty()) arm(arm_after);
        AgentRun s2 = run_agent({"stage2", scenario, state_});
        EXPECT_TRUE(s2.ok()) << "stage 2: " << s2.describe();
    }
    DaemonProcess d_{{"--agent-faults"}};
    std::string state_;
};

TEST_F(CompatAgentFaults, FreezeFailsAtFileKAndEverythingIsUnfrozen) {
    arm({"freeze", "--file", "1", "--errno", "EIO"});
    // liveupdatectl plays kexec: run without the agent's preload (an ASan
    // build of it refuses a library loaded before its runtime).
    AgentRun r = run_agent({"single", "freeze_fails"},
                           {std::string("LU_REBOOT=env -u LD_PRELOAD ") + LIVEUPDATECTL_PATH + " reboot"});
    EXPECT_TRUE(r.ok()) << r.describe();
    nlohmann::json s = d_.status();
    EXPECT_EQ(s["epoch"], 0);
    EXPECT_EQ(s["gate"], "open");
    EXPECT_NE(s["update"]["last_error"].get<std::string>().find("freeze failed"), std::string::npos)
        << s.dump();
    // Armed for one reboot only: the next one goes through.
    ASSERT_EQ(d_.reboot(), 0);
}

TEST_F(CompatAgentFaults, DeserializeFailsAndOpenIsEio) {
    two_stages("deserialize_fails", {"deserialize"}, {});
    nlohmann::json s = d_.status();
    EXPECT_NE(s["deserialize_error"], 0) << s.dump();
}

TEST_F(CompatAgentFaults, RetrieveFailsForGood) {
    two_stages("retrieve_fails", {}, {"retrieve", "--session", "rf", "--token", "1"});
}

TEST_F(CompatAgentFaults, FinishRefusedOnce) {
    two_stages("finish_refused", {}, {"finish", "--session", "fr"});
}

TEST_F(CompatAgentFaults, ArmingNeedsAnIncomingSessionAndToken) {
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"fault", "retrieve", "--session", "none", "--token", "1"}, &out), 1);
    EXPECT_EQ(DaemonProcess::ctl({"fault", "retrieve", "--token", "1"}, &out), 2);
    EXPECT_EQ(DaemonProcess::ctl({"fault", "freeze", "--errno", "ENOTANERRNO"}, &out), 2);
}

// A daemon not started with --agent-faults refuses to arm any of them.
TEST(CompatAgentFaultsRefused, WithoutTheOption) {
    DaemonProcess d;
    for (const char* kind : {"freeze", "deserialize", "retrieve", "finish"}) {
        nlohmann::json j = d.admin(std::string(R"({"op":"fault","kind":")") + kind +
                                   R"(","file":0,"session":"s","token":1})");
        EXPECT_EQ(j["ok"], false) << kind;
        EXPECT_EQ(j["errno"], EPERM) << kind << ": " << j.dump();
    }
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"fault", "freeze", "--file", "0"}, &out), 4);
    ASSERT_EQ(d.reboot(), 0);  // nothing was armed
}

// ---- the trace ----

TEST(CompatTrace, PreserveEexistIsTraced) {
    DaemonProcess d;
    AgentRun r = run_agent({"single", "preserve_eexist"});
    ASSERT_TRUE(r.ok()) << r.describe();
    auto at = r.output.find("PID ");
    ASSERT_NE(at, std::string::npos) << r.output;
    std::string pid = std::to_string(atoi(r.output.c_str() + at + 4));
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"trace"}, &out), 0);
    bool found = false;
    std::istringstream lines(out);
    for (std::string l; std::getline(lines, l);) {
        if (l.find("pid " + pid + " ") != std::string::npos &&
            l.find("PRESERVE_FD") != std::string::npos &&
            l.find("token=7") != std::string::npos && l.find("fd=memfd") != std::string::npos &&
            l.find("EEXIST") != std::string::npos)
            found = true;
    }
    EXPECT_TRUE(found) << "pid " << pid << ", trace:\n" << out;
    // The JSON answer, for scripts.
    nlohmann::json j = d.admin(R"({"op":"trace"})");
    ASSERT_EQ(j["ok"], true);
    EXPECT_FALSE(j["lines"].empty());
    nlohmann::json later = d.admin(R"({"op":"trace","since":)" + j["next"].dump() + "}");
    EXPECT_TRUE(later["lines"].empty()) << later.dump();
}

}  // namespace
}  // namespace lu::compat_test
