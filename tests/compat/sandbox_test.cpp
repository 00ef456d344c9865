// SPDX-License-Identifier: Apache-2.0
// liveupdatectl sandbox: the conformance suite's two stages run through it
// as an agent author would, and whatever CMD does, nothing of the sandbox is
// left behind; reboot --kexec ends the old instance's holders in the
// sandbox, and nothing outside it.
#include <liveupdate/client.h>

#include <chrono>
#include <thread>

#include "compat_util.hpp"

namespace lu::compat_test {
namespace {

namespace fs = std::filesystem;

struct SandboxRun {
    int status = -1;
    std::string output;
};

// liveupdatectl [args...] sandbox -- sh -c SCRIPT, its output captured; the
// script gets the agent and liveupdatectl as $AGENT and $CTL.
SandboxRun sandbox(const std::string& script, const std::vector<std::string>& opts = {}) {
    // CMD runs with the compat library preloaded; in the sanitizer build the
    // liveupdatectl it runs must accept a library ahead of ASan's runtime.
    std::string cmd = std::string("ASAN_OPTIONS=\"$ASAN_OPTIONS:verify_asan_link_order=0\" AGENT='") +
                      LU_COMPAT_AGENT + "' CTL='" + LIVEUPDATECTL_PATH +
                      "' '" + LIVEUPDATECTL_PATH + "' sandbox";
    for (const auto& o : opts) cmd += " '" + o + "'";
    cmd += " -- sh -c '" + script + "' 2>&1";
    SandboxRun r;
    r.status = DaemonProcess::shell(cmd, &r.output);
    return r;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::string s((std::istreambuf_iterator<char>(f)), {});
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

bool process_exists(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

class Sandbox : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lu-sandbox-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    std::string dir_;
};

// Every two-stage scenario of the conformance suite, in one sandbox: stage 1
// leaves a holder of its session fds, reboot --kexec ends it, stage 2 (a
// fresh process) retrieves and checks.
TEST_F(Sandbox, RunsTheTwoStageConformanceSuite) {
    std::string script = "set -e; for s in one_memfd several many_sessions many_files big_random "
                         "empty_memfd write_after_preserve file_position; do "
                         "$AGENT stage1 $s " + dir_ + "/$s > " + dir_ + "/$s.out; "
                         "$CTL reboot --kexec; $AGENT stage2 $s " + dir_ + "/$s; done; echo all-stages-ok";
    SandboxRun r = sandbox(script, {"--timeout", "120"});
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("all-stages-ok"), std::string::npos) << r.output;
    // Each scenario's holder was ended by its kexec, no more.
    size_t kexecs = 0;
    for (size_t p = 0; (p = r.output.find("kexec: ended 1 process", p)) != std::string::npos; p++) kexecs++;
    EXPECT_EQ(kexecs, 8u) << r.output;
}

// CMD fails, crashes or hangs: its status comes back, and no directory and
// no process of the sandbox (the daemon, a child CMD left running) remains.
TEST_F(Sandbox, CleansUpAfterAFailingACrashingAndAHangingCommand) {
    struct Case {
        const char* end;
        std::vector<std::string> opts;
        int status;
    } cases[] = {{"exit 3", {}, 3},
                 {"kill -SEGV $$", {}, 128 + SIGSEGV},
                 {"sleep 600", {"--timeout", "1"}, 124}};
    for (const auto& c : cases) {
        std::string script = std::string("echo $LIVEUPDATE_RUNTIME_DIR > ") + dir_ +
                             "/rt; $CTL status --json | sed -n \"s/.*\\\"pid\\\": \\([0-9]*\\).*/\\1/p\" > " +
                             dir_ + "/daemon; sleep 600 & echo $! > " + dir_ + "/child; " + c.end;
        SandboxRun r = sandbox(script, c.opts);
        EXPECT_EQ(r.status, c.status) << c.end << ": " << r.output;
        std::string rt = read_file(dir_ + "/rt");
        ASSERT_FALSE(rt.empty()) << c.end << ": " << r.output;
        EXPECT_FALSE(fs::exists(fs::path(rt).parent_path())) << c.end << ": left " << rt;
        pid_t daemon = std::atoi(read_file(dir_ + "/daemon").c_str());
        pid_t child = std::atoi(read_file(dir_ + "/child").c_str());
        EXPECT_GT(daemon, 0) << c.end << ": " << r.output;
        EXPECT_GT(child, 0) << c.end;
        EXPECT_FALSE(process_exists(daemon)) << c.end << ": the daemon survived";
        EXPECT_FALSE(process_exists(child)) << c.end << ": CMD's child survived";
    }
}

// A process outside the sandbox that holds a session of the sandbox's daemon
// is not the sandbox's to end; stage 1's holder inside it is.
TEST_F(Sandbox, KexecEndsHoldersInsideTheSandboxOnly) {
    std::string ready = dir_ + "/ready", go = dir_ + "/go";
    std::string script = "$AGENT stage1 one_memfd " + dir_ + "/state > " + dir_ + "/stage1.out; "
                         "echo $LIVEUPDATE_RUNTIME_DIR > " + ready + ".tmp; mv " + ready + ".tmp " + ready +
                         "; i=0; while [ ! -e " + go + " ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
                         "$CTL reboot --kexec && $AGENT stage2 one_memfd " + dir_ + "/state";
    pid_t outside = -1;
    SandboxRun r;
    std::thread run([&] { r = sandbox(script, {"--timeout", "60"}); });
    for (int i = 0; i < 3000 && !fs::exists(ready); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::string rt = read_file(ready);
    ASSERT_FALSE(rt.empty());
    int sync[2];
    ASSERT_EQ(pipe(sync), 0);
    outside = fork();
    ASSERT_GE(outside, 0);
    if (outside == 0) {
        close(sync[0]);
        setenv("LIVEUPDATE_RUNTIME_DIR", rt.c_str(), 1);
        int ctl = lu_open();
        int s = ctl >= 0 ? lu_create_session(ctl, "outside") : -1;
        if (ctl >= 0) close(ctl);
        char ok = s >= 0 ? 'y' : 'n';
        if (write(sync[1], &ok, 1) != 1) _exit(1);
        pause();  // holds the session until killed
        _exit(0);
    }
    close(sync[1]);
    char ok = 0;
    ASSERT_EQ(read(sync[0], &ok, 1), 1);
    close(sync[0]);
    EXPECT_EQ(ok, 'y') << "the outside process could not open a session";
    { std::ofstream(go) << "go"; }
    run.join();
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("kexec: ended 1 process"), std::string::npos) << r.output;
    pid_t holder = std::atoi(read_file(dir_ + "/stage1.out").substr(7).c_str());  // "HOLDER n"
    EXPECT_FALSE(process_exists(holder)) << "stage 1's holder survived the kexec";
    EXPECT_TRUE(process_exists(outside)) << "a process outside the sandbox was ended";
    kill(outside, SIGKILL);
    waitpid(outside, nullptr, 0);
}

TEST_F(Sandbox, KexecOutsideASandboxIsRefused) {
    DaemonProcess d;
    pid_t before = d.pid();
    ASSERT_GT(before, 0);
    unsetenv("LIVEUPDATE_SANDBOX");
    std::string out;
    EXPECT_EQ(DaemonProcess::ctl({"reboot", "--kexec"}, &out), 2);
    auto st = d.status();
    ASSERT_FALSE(st.is_null());
    EXPECT_EQ(st["pid"].get<pid_t>(), before) << "a reboot happened";
    EXPECT_EQ(st["epoch"].get<int>(), 0);
}

}  // namespace
}  // namespace lu::compat_test
