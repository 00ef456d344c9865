// SPDX-License-Identifier: Apache-2.0
// liveupdatectl against a fake admin socket: the requests it sends, what it
// prints and its exit codes. The binary is LIVEUPDATECTL_PATH, else found
// from this test's build directory; the test is skipped without it.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fake_server.hpp"

extern char** environ;

namespace {

using nlohmann::json;

std::string ctl_path() {
#ifdef LIVEUPDATECTL_PATH
    return LIVEUPDATECTL_PATH;  // from tests/CMakeLists.txt when the tools are built
#else
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return "";
    std::string dir(self, static_cast<size_t>(n));
    dir.resize(dir.rfind('/'));
    return dir + "/../tools/liveupdatectl";
#endif
}

std::string read_all(int fd) {
    std::string s;
    char buf[4096];
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), static_cast<off_t>(s.size()))) > 0)
        s.append(buf, static_cast<size_t>(n));
    return s;
}

struct Result {
    int code = -1;
    std::string out, err;
};

class CtlTest : public fake::FdLeakTest {
  protected:
    void SetUp() override {
        FdLeakTest::SetUp();
        ctl_ = ctl_path();
        if (access(ctl_.c_str(), X_OK) != 0) GTEST_SKIP() << "no liveupdatectl at " << ctl_;
    }

    // Runs liveupdatectl --runtime-dir DIR args...; stdout/stderr in memfds.
    Result run(std::vector<std::string> args, bool with_dir = true) {
        std::vector<std::string> argv{ctl_};
        if (with_dir) argv.insert(argv.end(), {"--runtime-dir", dir_.path()});
        argv.insert(argv.end(), args.begin(), args.end());
        std::vector<char*> cargv;
        for (auto& a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);
        int out = memfd_create("out", MFD_CLOEXEC), err = memfd_create("err", MFD_CLOEXEC);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, out, 1);
        posix_spawn_file_actions_adddup2(&fa, err, 2);
        Result r;
        pid_t pid;
        int rc = posix_spawn(&pid, ctl_.c_str(), &fa, nullptr, cargv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        EXPECT_EQ(rc, 0);
        int status = 0;
        if (rc == 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status))
            r.code = WEXITSTATUS(status);
        r.out = read_all(out);
        r.err = read_all(err);
        close(out);
        close(err);
        return r;
    }

    // Serves one admin request with `answer`; the request lands in request_.
    std::thread serve(int listener, std::string answer) {
        return std::thread([this, listener, answer] {
            int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
            ASSERT_GE(c, 0);
            request_ = json::parse(fake::recv_request(c).text, nullptr, false);
            int m = memfd_create("answer", MFD_CLOEXEC);
            ASSERT_EQ(write(m, answer.data(), answer.size()), (ssize_t)answer.size());
            fake::send_reply(c, 0, nullptr, 0, {m});
            close(m);
            close(c);
        });
    }

    Result exchange(const std::string& answer, std::vector<std::string> args) {
        int l = dir_.listen_at("admin");
        auto t = serve(l, answer);
        Result r = run(std::move(args));
        t.join();
        close(l);
        return r;
    }

    std::string ctl_;
    fake::RuntimeDir dir_;
    json request_;
};

const char* kStatus = R"({"pid":1234,"epoch":3,"version":"0.1.0","gate":"open",
  "update":{"state":"idle","last_error":"exec failed"},"deserialize_error":0,"leaked_fds":0,
  "control_connected":true,"sessions":[
   {"name":"db","direction":"outgoing","state":"open","files":[
     {"token":1,"handler":"memfd","size":4096},{"token":18446744073709551615,"handler":"socket"}]},
   {"name":"old\u0001","direction":"incoming","state":"retrieved","files":[
     {"token":7,"handler":"memfd","retrieved":true}]}]})";

TEST_F(CtlTest, StatusTable) {
    Result r = exchange(kStatus, {"status"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(request_, json({{"op", "status"}}));
    EXPECT_NE(r.out.find("pid 1234, epoch 3, version 0.1.0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("last error: exec failed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("db       outgoing    open         -         2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("18446744073709551615"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("old\\x01"), std::string::npos) << r.out;  // escaped
    EXPECT_NE(r.out.find("retrieved"), std::string::npos) << r.out;
    EXPECT_EQ(r.err, "");
}

TEST_F(CtlTest, StatusToleratesMissingFields) {
    Result r = exchange(R"({"pid":1,"sessions":[{"name":"x"}],"deserialize_error":5})", {"status"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("deserialize error: 5"), std::string::npos) << r.out;
}

TEST_F(CtlTest, StatusJsonIsTheDaemonsObject) {
    Result r = exchange(kStatus, {"status", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out, nullptr, false), json::parse(kStatus));
}

TEST_F(CtlTest, RebootDefaults) {
    Result r = exchange(R"({"ok":true,"pid":99,"epoch":4,"blackout_us":1500,"dry_run":false})",
                        {"reboot"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(request_, json({{"op", "reboot"}, {"timeout", 30}, {"dry_run", false}}));
    EXPECT_NE(r.out.find("pid 99, epoch 4, blackout 1500 us"), std::string::npos) << r.out;
}

TEST_F(CtlTest, RebootOptions) {
    Result r = exchange(R"({"ok":true,"epoch":3,"dry_run":true})",
                        {"reboot", "--exec", "bin/liveupdated", "--timeout", "5", "--dry-run",
                         "--inject-fault", "freeze"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(request_["timeout"], 5);
    EXPECT_EQ(request_["dry_run"], true);
    EXPECT_EQ(request_["fault"], "freeze");
    std::string exec = request_.value("exec", "");
    EXPECT_EQ(exec.front(), '/');  // made absolute: the daemon's cwd is not ours
    EXPECT_NE(exec.find("/bin/liveupdated"), std::string::npos);
    EXPECT_NE(r.out.find("dry run ok"), std::string::npos) << r.out;
}

TEST_F(CtlTest, RebootFailureStillServing) {
    Result r = exchange(
        R"({"ok":false,"errno":8,"error":"exec format error","still_serving":true})", {"reboot"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("exec format error"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("the running instance still serves"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
}

TEST_F(CtlTest, ReplyErrnosWithTheirOwnExitCode) {
    Result r =
        exchange(R"({"ok":false,"errno":16,"error":"an update is in progress"})", {"reboot"});
    EXPECT_EQ(r.code, 5) << r.err;
    r = exchange(R"({"ok":false,"errno":1,"error":"not allowed"})", {"reboot"});
    EXPECT_EQ(r.code, 4) << r.err;
}

TEST_F(CtlTest, NoDaemon) {
    Result r = run({"status"});
    EXPECT_EQ(r.code, 3);
    EXPECT_NE(r.err.find("no daemon at " + dir_.path()), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
}

TEST_F(CtlTest, UsageAndHelp) {
    EXPECT_EQ(run({}).code, 2);
    EXPECT_EQ(run({"frobnicate"}).code, 2);
    EXPECT_EQ(run({"reboot", "--timeout", "-1"}).code, 2);
    Result h = run({"--help"}, false);
    EXPECT_EQ(h.code, 0);
    EXPECT_NE(h.out.find("Exit status"), std::string::npos) << h.out;
    h = run({"reboot", "--help"}, false);
    EXPECT_EQ(h.code, 0);
    EXPECT_EQ(h.out.find("inject-fault"), std::string::npos) << h.out;  // hidden
}

}  // namespace
