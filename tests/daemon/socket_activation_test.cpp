// SPDX-License-Identifier: Apache-2.0
// Socket activation with systemd's own tool: systemd-socket-activate creates
// the listeners, execs liveupdated on the first connection and passes them
// as LISTEN_FDS/LISTEN_FDNAMES, as liveupdated.socket does.
#include <sys/prctl.h>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

class SocketActivation : public ::testing::Test {
protected:
    void SetUp() override {
        prctl(PR_SET_CHILD_SUBREAPER, 1);  // the next instance is ours to reap
        char tmpl[] = "/tmp/liveupdate-activate-XXXXXX";
        dir_ = mkdtemp(tmpl);
        setenv("LIVEUPDATE_RUNTIME_DIR", dir_.c_str(), 1);
        log_ = dir_ + ".log";
    }
    void TearDown() override {
        for (pid_t p : pids_) {
            kill(p, SIGTERM);
            DaemonProcess::wait_bounded(p);
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        unlink(log_.c_str());
    }

    // systemd-socket-activate listening on DIR/control and DIR/<second>
    // with these fd names, then liveupdated; stderr to log_. Its pid, which
    // is the daemon's once a connection made it exec.
    pid_t activate(const std::string& fdnames, bool seqpacket = true,
                   const std::string& second = "admin") {
        std::vector<std::string> args{"systemd-socket-activate", "-l", dir_ + "/control",
                                      "-l",                      dir_ + "/" + second,
                                      "--fdname=" + fdnames};
        if (seqpacket) args.insert(args.begin() + 1, "--seqpacket");
        args.insert(args.end(), {LIVEUPDATED_PATH, "--runtime-dir", dir_});
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        pid_t pid = -1;
        EXPECT_EQ(posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        pids_.push_back(pid);
        // It listens once both paths exist.
        for (int i = 0; i < 3000 && !(exists("control") && exists(second.c_str())); i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return pid;
    }
    bool exists(const char* name) const {
        struct stat st;
        return stat((dir_ + "/" + name).c_str(), &st) == 0;
    }
    ino_t inode(const char* name) const {
        struct stat st{};
        stat((dir_ + "/" + name).c_str(), &st);
        return st.st_ino;
    }
    std::string log() const {
        Fd f(open(log_.c_str(), O_RDONLY | O_CLOEXEC));
        return read_all_at(f.get());
    }
    // Waits for pid (started by activate) to exit; its wait status.
    int wait_exit(pid_t pid) {
        int st = DaemonProcess::wait_bounded(pid);
        std::erase(pids_, pid);
        return st;
    }

    std::string dir_, log_;
    std::vector<pid_t> pids_;
};

// Both fds named alike, as one socket unit names them: told apart by path.
TEST_F(SocketActivation, ServesOnTheSocketsItIsGivenAcrossALiveUpdate) {
    pid_t first = activate("liveupdated.socket:liveupdated.socket");
    ino_t control = inode("control"), admin = inode("admin");
    ASSERT_NE(control, 0u);

    // The first connection starts the daemon; it answers on the given socket.
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0) << out << log();
    json s = json::parse(out, nullptr, false);
    ASSERT_TRUE(s.is_object()) << out;
    EXPECT_EQ(s["pid"], first);  // systemd-socket-activate exec'd it
    EXPECT_EQ(s["epoch"], 0);
    Fd session = create_session_now("activated");
    ASSERT_TRUE(session);
    Fd m = make_memfd("kept across the update");
    ASSERT_EQ(lu_preserve_fd(session.get(), m.get(), 9), 0);

    ASSERT_EQ(DaemonProcess::ctl({"reboot"}, &out), 0) << out << log();
    EXPECT_EQ(wait_exit(first), 0) << log();  // the old instance handed over and left
    ASSERT_EQ(DaemonProcess::ctl({"status", "--json"}, &out), 0) << out << log();
    s = json::parse(out, nullptr, false);
    ASSERT_TRUE(s.is_object()) << out;
    EXPECT_EQ(s["epoch"], 1);
    pid_t next = s["pid"].get<pid_t>();
    EXPECT_NE(next, first);
    pids_.push_back(next);
    // The same socket files: the listeners moved, nothing was bound again.
    EXPECT_EQ(inode("control"), control);
    EXPECT_EQ(inode("admin"), admin);
    // And the state came along, retrievable through the given control socket.
    Fd ctl(lu_open());
    ASSERT_TRUE(ctl) << strerror(-ctl.get());
    Fd in(lu_retrieve_session(ctl.get(), "activated"));
    ASSERT_TRUE(in);
    Fd back(lu_retrieve_fd(in.get(), 9));
    ASSERT_TRUE(back);
    EXPECT_EQ(read_all_at(back.get()), "kept across the update");
}

// Names, when they say which is which, are enough (--fdname).
TEST_F(SocketActivation, NamesTellTheListenersApart) {
    pid_t pid = activate("control:admin", true, "other");
    std::string out;
    std::string admin = dir_ + "/other";  // the admin listener, by its name
    // The tool finds <dir>/admin: point a directory of links at the sockets.
    std::string links = dir_ + "/links";
    ASSERT_EQ(mkdir(links.c_str(), 0700), 0);
    ASSERT_EQ(symlink((dir_ + "/control").c_str(), (links + "/control").c_str()), 0);
    ASSERT_EQ(symlink(admin.c_str(), (links + "/admin").c_str()), 0);
    ASSERT_EQ(DaemonProcess::ctl({"--runtime-dir", links, "status", "--json"}, &out), 0)
        << out << log();
    EXPECT_EQ(json::parse(out, nullptr, false)["pid"], pid);
}

// A listener that is neither is refused with a message that says what to fix.
TEST_F(SocketActivation, RefusesAnUnknownListener) {
    pid_t pid = activate("liveupdated.socket:liveupdated.socket", true, "other");
    Fd poke(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control", dir_.c_str());
    ASSERT_EQ(connect(poke.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int st = wait_exit(pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << st << log();
    EXPECT_NE(log().find("(name \"liveupdated.socket\", socket \"other\") is not the one "
                         "\"control\" or the one \"admin\" listener"),
              std::string::npos)
        << log();
}

TEST_F(SocketActivation, RefusesStreamSockets) {
    pid_t pid = activate("control:admin", /*seqpacket=*/false);
    Fd poke(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/admin", dir_.c_str());
    ASSERT_EQ(connect(poke.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int st = wait_exit(pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << st << log();
    EXPECT_NE(log().find("\"control\" is not a listening AF_UNIX SOCK_SEQPACKET socket"),
              std::string::npos)
        << log();
}

}  // namespace
}  // namespace lu::testing
