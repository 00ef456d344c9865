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
    // A directory that does not exist at all.
    EXPECT_EQ(run_ctl_all({"--runtime-dir", empty + "/nope", "status"}, &out), 3);
    EXPECT_NE(out.find("no daemon"), std::string::npos) << out;
    rmdir(tmpl);
    // The daemon was not touched.
    EXPECT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0);
}

}  // namespace
}  // namespace lu::testing
