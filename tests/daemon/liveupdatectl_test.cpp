// SPDX-License-Identifier: Apache-2.0
// liveupdatectl against the real daemon.
#include <arpa/inet.h>
#include <netinet/in.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

// Runs liveupdatectl with args; stdout and stderr together in *out.
int run_ctl_all(const std::vector<std::string>& args, std::string* out) {
    std::string cmd = LIVEUPDATECTL_PATH;
    for (auto& a : args) cmd += " '" + a + "'";
    cmd += " 2>&1";
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return -1;
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    int st = pclose(f);
    *out = text;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(Liveupdatectl, StatusJson) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s1(lu_create_session(ctl.get(), "web"));
    Fd s2(lu_create_session(ctl.get(), "empty"));
    ASSERT_TRUE(s1 && s2);
    Fd m = make_memfd(std::string(12345, 'q'));
    ASSERT_EQ(lu_preserve_fd(s1.get(), m.get(), 77), 0);
    Fd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(tcp.get(), 1), 0);
    ASSERT_EQ(lu_preserve_fd(s1.get(), tcp.get(), 1ull << 40), 0);

    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0) << out;
    json j = json::parse(out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << out;
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["ok"], true);
    EXPECT_EQ(j["pid"], d.pid());
    EXPECT_EQ(j["epoch"], 0);
    EXPECT_EQ(j["control_connected"], true);
    ASSERT_TRUE(j["sessions"].is_array());
    ASSERT_EQ(j["sessions"].size(), 2u);
    auto web = find_session(j, "web");
    ASSERT_TRUE(web);
    EXPECT_EQ((*web)["direction"], "outgoing");
    EXPECT_EQ((*web)["state"], "open");
    const json& files = (*web)["files"];
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0]["token"], 77);
    EXPECT_EQ(files[0]["handler"], "memfd-v2");
    EXPECT_EQ(files[0]["size"], 12345);
    EXPECT_EQ(files[1]["token"].get<uint64_t>(), 1ull << 40);
    EXPECT_EQ(files[1]["handler"], "socket-v1");
    EXPECT_FALSE(files[1].contains("size"));  // not a regular file
    auto empty = find_session(j, "empty");
    ASSERT_TRUE(empty);
    EXPECT_TRUE((*empty)["files"].empty());

    // --runtime-dir gives the same daemon as the environment.
    std::string out2;
    ASSERT_EQ(DaemonProcess::ctl({"--runtime-dir", d.dir(), "status", "--json"}, &out2), 0);
    json j2 = json::parse(out2, nullptr, false);
    ASSERT_TRUE(j2.is_object());
    EXPECT_EQ(j2["pid"], d.pid());

    // The human form names the sessions too.
    std::string text;
    ASSERT_EQ(DaemonProcess::ctl({"status"}, &text), 0);
    EXPECT_NE(text.find("web"), std::string::npos) << text;
    EXPECT_NE(text.find("memfd-v2"), std::string::npos) << text;

    // After a live update: epoch 1, incoming sessions.
    ctl.reset();
    ASSERT_EQ(d.reboot(), 0);
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0) << out;
    j = json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << out;
    EXPECT_EQ(j["epoch"], 1);
    EXPECT_EQ(j["pid"], d.pid());
    web = find_session(j, "web");
    ASSERT_TRUE(web);
    EXPECT_EQ((*web)["direction"], "incoming");
    EXPECT_EQ((*web)["state"], "unretrieved");
    ASSERT_EQ((*web)["files"].size(), 2u);
    EXPECT_EQ((*web)["files"][0]["size"], 12345);
}

// --version names the tool and the project's version, and needs no daemon.
TEST(Liveupdatectl, Version) {
    std::string out;
    EXPECT_EQ(run_ctl_all({"--version"}, &out), 0);
    EXPECT_EQ(out, "liveupdatectl " LU_PROJECT_VERSION "\n");
    FILE* f = popen(LIVEUPDATED_PATH " --version 2>&1", "r");
    ASSERT_NE(f, nullptr);
    char buf[256] = {};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int st = pclose(f);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(std::string(buf, n), "liveupdated " LU_PROJECT_VERSION "\n");
    // A usage error is exit status 2, as both tools' --help say.
    st = system(LIVEUPDATED_PATH " --no-such-option 2>/dev/null");
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << st;
}

// A file in a fresh temporary directory, with the given text and mode.
class TempFile {
public:
    TempFile(const std::string& text, mode_t mode) {
        char tmpl[] = "/tmp/liveupdate-next-XXXXXX";
        dir_ = mkdtemp(tmpl);
        path_ = dir_ + "/next";
        FILE* f = fopen(path_.c_str(), "w");
        fputs(text.c_str(), f);
        fclose(f);
        chmod(path_.c_str(), mode);
    }
    ~TempFile() {
        unlink(path_.c_str());
        rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }

private:
    std::string dir_, path_;
};

// A reboot whose next instance cannot start: exit 1, the daemon's reason on
// stderr, and the same instance still serves.
std::string failed_reboot(DaemonProcess& d, const std::string& exec) {
    pid_t before = d.pid();
    std::string out;
    EXPECT_EQ(run_ctl_all({"reboot", "--exec", exec}, &out), 1) << out;
    EXPECT_NE(out.find("the running instance still serves"), std::string::npos) << out;
    EXPECT_EQ(d.pid(), before);
    return out;
}

TEST(Liveupdatectl, NextNotExecutable) {
    DaemonProcess d;
    TempFile next("#!/bin/sh\nexit 0\n", 0644);
    std::string out = failed_reboot(d, next.path());
    EXPECT_NE(out.find(next.path() + ": not executable"), std::string::npos) << out;
    EXPECT_EQ(out.find("ermission denied"), std::string::npos) << out;
}

TEST(Liveupdatectl, NextExitStatusAndStderr) {
    DaemonProcess d;
    TempFile next("#!/bin/sh\necho 'next: cannot go on' >&2\nexit 7\n", 0755);
    std::string out = failed_reboot(d, next.path());
    EXPECT_NE(out.find("exited before it was ready (exit status 7): next: cannot go on"),
              std::string::npos)
        << out;
}

TEST(Liveupdatectl, NextKilledBySignal) {
    DaemonProcess d;
    TempFile next("#!/bin/sh\nkill -USR1 $$\nsleep 60\n", 0755);
    std::string out = failed_reboot(d, next.path());
    EXPECT_NE(out.find("(killed by signal SIGUSR1)"), std::string::npos) << out;
}

// The dynamic loader's own words reach the operator, not just "exit 127".
TEST(Liveupdatectl, NextLoaderError) {
    DaemonProcess d;
    std::string out = failed_reboot(d, LU_NEEDS_GONE_LIB);
    EXPECT_NE(out.find("(exit status 127): " LU_NEEDS_GONE_LIB
                       ": error while loading shared libraries: liblu_gone_lib.so"),
              std::string::npos)
        << out;
    // The next instance that does start takes its stderr back: the daemon's
    // own reboot works, and says nothing about the previous failure.
    EXPECT_EQ(d.reboot(), 0);
}

TEST(Liveupdatectl, NoDaemon) {
    DaemonProcess d;  // a live daemon elsewhere: --runtime-dir must win over the environment
    char tmpl[] = "/tmp/liveupdate-empty-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string empty = tmpl;
    std::string out;
    EXPECT_EQ(run_ctl_all({"--runtime-dir", empty, "status"}, &out), 3);
    EXPECT_NE(out.find("no daemon"), std::string::npos) << out;
    EXPECT_EQ(run_ctl_all({"--runtime-dir", empty, "status", "--json"}, &out), 3);
    EXPECT_NE(out.find("no daemon"), std::string::npos) << out;
    EXPECT_EQ(run_ctl_all({"--runtime-dir", empty, "reboot"}, &out), 3);
    // --json: one JSON error object on stdout, as the daemon's errors are.
    for (const char* cmd : {"status", "reboot"}) {
        std::vector<std::string> args{"--runtime-dir", empty, cmd, "--json"};
        EXPECT_EQ(DaemonProcess::ctl(args, &out), 3);
        json j = json::parse(out, nullptr, false);
        ASSERT_TRUE(j.is_object()) << "not a JSON object: " << out;
        EXPECT_EQ(j["ok"], false);
        EXPECT_EQ(j["errno"], ENOENT);
        EXPECT_EQ(j["error"], "no daemon at " + empty) << out;
    }
    // A directory that does not exist at all.
    EXPECT_EQ(run_ctl_all({"--runtime-dir", empty + "/nope", "status"}, &out), 3);
    EXPECT_NE(out.find("no daemon"), std::string::npos) << out;
    rmdir(tmpl);
    // The daemon was not touched.
    EXPECT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0);
}

}  // namespace
}  // namespace lu::testing
