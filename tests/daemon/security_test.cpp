// SPDX-License-Identifier: Apache-2.0
// Who can reach what (docs/security.md): each test is an attack another user
// of the host could try, run for real with a second uid (nobody) in a child.
#include <grp.h>
#include <poll.h>
#include <sys/prctl.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;
constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr gid_t kDaemonGroup = 1;  // "daemon" on Debian: nobody is not in it

bool become_nobody(const std::vector<gid_t>& extra_groups = {}) {
    return setgroups(extra_groups.size(), extra_groups.data()) == 0 &&
           setresgid(kNogroup, kNogroup, kNogroup) == 0 && setresuid(kNobody, kNobody, kNobody) == 0;
}

// A scratch directory owned by root, 0755, removed with what is in it.
struct Scratch {
    std::string path;
    Scratch() {
        char tmpl[] = "/tmp/liveupdate-sec-XXXXXX";
        path = mkdtemp(tmpl);
        chmod(path.c_str(), 0755);
    }
    ~Scratch() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

// liveupdated as nobody can run it: the build tree may sit in a directory
// only root can enter (a checkout under a 0700 mktemp -d), so the binary
// and the libliveupdate it loads are copied into `dir` (0755). Returns the
// copy; it finds its library through LD_LIBRARY_PATH=dir.
std::string daemon_for_nobody(const std::string& dir) {
    namespace fs = std::filesystem;
    std::string ldd;
    DaemonProcess::shell(std::string("ldd '") + LIVEUPDATED_PATH + "'", &ldd);
    std::istringstream lines(ldd);
    for (std::string line; std::getline(lines, line);) {
        size_t arrow = line.find("=> "), lib = line.find("libliveupdate");
        if (arrow == std::string::npos || lib == std::string::npos || lib > arrow) continue;
        std::string from = line.substr(arrow + 3, line.find(" (") - arrow - 3);
        fs::copy_file(from, dir + "/" + fs::path(from).filename().string(),
                      fs::copy_options::overwrite_existing);
    }
    std::string exe = dir + "/liveupdated";
    fs::copy_file(LIVEUPDATED_PATH, exe, fs::copy_options::overwrite_existing);
    chmod(dir.c_str(), 0755);
    return exe;
}

struct Outcome {
    int status = -1;
    std::string err;  // what it wrote on stderr
};

// Runs liveupdated with args (as nobody if asked) and waits for it to exit;
// a daemon that starts serving instead is stopped and reported as status 0.
Outcome run_daemon(const std::vector<std::string>& args, bool as_nobody = false) {
    std::string bin, exe = LIVEUPDATED_PATH;
    if (as_nobody) {
        char tmpl[] = "/tmp/liveupdate-bin-XXXXXX";
        EXPECT_NE(mkdtemp(tmpl), nullptr);
        bin = tmpl;
        exe = daemon_for_nobody(bin);
    }
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        if (as_nobody) {
            setenv("LD_LIBRARY_PATH", bin.c_str(), 1);
            if (!become_nobody()) _exit(100);
        }
        std::vector<std::string> all{exe};
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        execv(argv[0], argv.data());
        _exit(101);
    }
    close(p[1]);
    Outcome o;
    pollfd pfd{p[0], POLLIN, 0};
    char buf[4096];
    // Its stderr until it closes (it exited) or says it serves; 30 s at most.
    for (int i = 0; i < 3000 && o.err.find("serving epoch") == std::string::npos; i++) {
        if (poll(&pfd, 1, 10) <= 0) continue;
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n <= 0) break;
        o.err.append(buf, n);
    }
    close(p[0]);
    if (o.err.find("serving epoch") != std::string::npos || waitpid(pid, &o.status, WNOHANG) != pid) {
        kill(pid, SIGTERM);
        waitpid(pid, &o.status, 0);
    }
    if (!bin.empty()) std::filesystem::remove_all(bin);
    return o;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// ---- the runtime directory ----

TEST(RuntimeDirSecurity, DirectoryPreCreatedByAnotherUserIsRefusedAndUntouched) {
    Scratch s;
    std::string pre = s.path + "/pre";
    ASSERT_EQ(mkdir(pre.c_str(), 0777), 0);
    ASSERT_EQ(chown(pre.c_str(), kNobody, kNogroup), 0);
    ASSERT_EQ(chmod(pre.c_str(), 0777), 0);
    Outcome o = run_daemon({"--runtime-dir", pre});
    ASSERT_TRUE(WIFEXITED(o.status));
    EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
    EXPECT_NE(o.err.find("belongs to uid 65534"), std::string::npos) << o.err;
    struct stat st;
    ASSERT_EQ(stat(pre.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, kNobody);
    EXPECT_EQ(st.st_mode & 07777, 0777u);
    EXPECT_NE(access((pre + "/control").c_str(), F_OK), 0) << "a socket was made in it";
}

TEST(RuntimeDirSecurity, NonRootDaemonRefusesAWorldWritableDirectory) {
    Scratch s;
    // Its own, but others can write it (they may have planted entries).
    std::string own = s.path + "/own";
    ASSERT_EQ(mkdir(own.c_str(), 0777), 0);
    ASSERT_EQ(chown(own.c_str(), kNobody, kNogroup), 0);
    ASSERT_EQ(chmod(own.c_str(), 0777), 0);
    Outcome o = run_daemon({"--runtime-dir", own}, true);
    ASSERT_TRUE(WIFEXITED(o.status));
    EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
    EXPECT_NE(o.err.find("writable by its group or by others"), std::string::npos) << o.err;
    struct stat st;
    ASSERT_EQ(stat(own.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0777u);
    // Made by root for nobody's daemon: not its own.
    std::string other = s.path + "/other";
    ASSERT_EQ(mkdir(other.c_str(), 0777), 0);
    ASSERT_EQ(chmod(other.c_str(), 0777), 0);
    o = run_daemon({"--runtime-dir", other}, true);
    ASSERT_TRUE(WIFEXITED(o.status));
    EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
    EXPECT_NE(o.err.find("belongs to uid 0"), std::string::npos) << o.err;
}

TEST(RuntimeDirSecurity, SymlinkedDirectoryIsRefusedAndItsTargetUntouched) {
    Scratch s;
    std::string victim = s.path + "/victim", link = s.path + "/lu-link";
    ASSERT_EQ(mkdir(victim.c_str(), 0755), 0);
    ASSERT_EQ(chmod(victim.c_str(), 0755), 0);
    { std::ofstream(victim + "/control") << "precious"; }
    ASSERT_EQ(symlink(victim.c_str(), link.c_str()), 0);
    for (auto extra : {std::vector<std::string>{}, std::vector<std::string>{"--group", "daemon"}}) {
        std::vector<std::string> args{"--runtime-dir", link};
        args.insert(args.end(), extra.begin(), extra.end());
        Outcome o = run_daemon(args);
        ASSERT_TRUE(WIFEXITED(o.status)) << o.status << " " << o.err;
        EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
        EXPECT_NE(o.err.find("is a symlink"), std::string::npos) << o.err;
        struct stat st;
        ASSERT_EQ(stat(victim.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 07777, 0755u);
        EXPECT_EQ(st.st_gid, 0u);
        ASSERT_EQ(lstat((victim + "/control").c_str(), &st), 0);
        EXPECT_TRUE(S_ISREG(st.st_mode));
        EXPECT_EQ(slurp(victim + "/control"), "precious");
    }
}

// Another user races the daemon's start, trying to swap its socket for a
// symlink to a root file (so that a chown or chmod by path would hit the
// file): with the directory pre-created by the attacker, and with the
// daemon's own. Bounded: 15 starts of each.
TEST(RuntimeDirSecurity, SocketModeAndOwnerHoldWhileAnotherUserRacesThePath) {
    Scratch s;
    ASSERT_EQ(chmod(s.path.c_str(), 01777), 0);  // as /tmp: anyone may make a directory here
    std::string target = s.path + "/secret";
    { std::ofstream(target) << "root only"; }
    ASSERT_EQ(chmod(target.c_str(), 0600), 0);
    std::string dir = s.path + "/rt";
    int stop_pipe[2];
    ASSERT_EQ(pipe2(stop_pipe, O_CLOEXEC), 0);
    pid_t attacker = fork();
    ASSERT_GE(attacker, 0);
    if (attacker == 0) {
        close(stop_pipe[1]);
        if (!become_nobody()) _exit(100);
        mkdir(dir.c_str(), 0777);  // works while nobody else made it
        chmod(dir.c_str(), 0777);
        std::string sock = dir + "/control", tmp = dir + "/.swap";
        pollfd p{stop_pipe[0], POLLIN, 0};
        while (poll(&p, 1, 0) == 0) {
            chmod(dir.c_str(), 0777);  // undo a chmod by the daemon
            unlink(tmp.c_str());
            if (symlink(target.c_str(), tmp.c_str()) == 0) rename(tmp.c_str(), sock.c_str());
        }
        _exit(0);
    }
    close(stop_pipe[0]);
    // Phase 1: the attacker's directory is refused, every time.
    for (int i = 0; i < 15; i++) {
        for (int w = 0; w < 5000 && access(dir.c_str(), F_OK) != 0; w++)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ASSERT_EQ(access(dir.c_str(), F_OK), 0) << "the attacker made no directory";
        Outcome o = run_daemon({"--runtime-dir", dir, "--group", "daemon"});
        ASSERT_TRUE(WIFEXITED(o.status));
        EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
    }
    close(stop_pipe[1]);
    int st = 0;
    waitpid(attacker, &st, 0);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the attacker could not become nobody";
    struct stat t;
    ASSERT_EQ(stat(target.c_str(), &t), 0);
    EXPECT_EQ(t.st_mode & 07777, 0600u);
    EXPECT_EQ(t.st_gid, 0u);
    EXPECT_EQ(slurp(target), "root only");

    // Phase 2: the daemon's own directory; the attacker cannot even enter.
    std::filesystem::remove_all(dir);
    ASSERT_EQ(pipe2(stop_pipe, O_CLOEXEC), 0);
    attacker = fork();
    ASSERT_GE(attacker, 0);
    if (attacker == 0) {
        close(stop_pipe[1]);
        if (!become_nobody()) _exit(100);
        std::string sock = dir + "/control", tmp = dir + "/.swap";
        pollfd p{stop_pipe[0], POLLIN, 0};
        int got_in = 0;
        while (poll(&p, 1, 0) == 0) {
            unlink(tmp.c_str());
            if (symlink(target.c_str(), tmp.c_str()) == 0) got_in = 1;
            if (rename(tmp.c_str(), sock.c_str()) == 0) got_in = 1;
        }
        _exit(got_in);
    }
    close(stop_pipe[0]);
    for (int i = 0; i < 15; i++) {
        DaemonProcess d({"--group", "daemon"}, dir);
        struct stat sk;
        ASSERT_EQ(lstat((dir + "/control").c_str(), &sk), 0);
        EXPECT_TRUE(S_ISSOCK(sk.st_mode));
        EXPECT_EQ(sk.st_mode & 07777, 0660u);
        EXPECT_EQ(sk.st_uid, 0u);
        EXPECT_EQ(sk.st_gid, kDaemonGroup);
        ASSERT_EQ(lstat(dir.c_str(), &sk), 0);
        EXPECT_EQ(sk.st_mode & 07777, 02750u);
    }
    close(stop_pipe[1]);
    waitpid(attacker, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the attacker wrote in the daemon's directory";
    ASSERT_EQ(stat(target.c_str(), &t), 0);
    EXPECT_EQ(t.st_mode & 07777, 0600u);
    EXPECT_EQ(t.st_gid, 0u);
}

// ---- the daemon's identity ----

// Another user listens where a client looks for the daemon: the client
// refuses to talk to it, so it neither gets the client's fds nor answers.
TEST(DaemonIdentity, ClientRefusesAnImpostor) {
    int ready[2];
    ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
    pid_t impostor = fork();
    ASSERT_GE(impostor, 0);
    if (impostor == 0) {
        close(ready[0]);
        if (!become_nobody()) _exit(100);
        // World-writable /tmp: a place any user can listen in.
        char tmpl[] = "/tmp/liveupdate-impostor-XXXXXX";
        if (!mkdtemp(tmpl)) _exit(101);
        chmod(tmpl, 0755);
        std::string dir = tmpl;
        Fd c(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)), a(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        for (auto [fd, name] : {std::pair{c.get(), "/control"}, std::pair{a.get(), "/admin"}}) {
            sockaddr_un sa{};
            sa.sun_family = AF_UNIX;
            snprintf(sa.sun_path, sizeof sa.sun_path, "%s%s", tmpl, name);
            if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) || listen(fd, 8)) _exit(102);
            chmod(sa.sun_path, 0666);
        }
        if (write(ready[1], dir.data(), dir.size()) != static_cast<ssize_t>(dir.size())) _exit(103);
        close(ready[1]);
        // Says yes to everyone, and keeps whatever it is sent.
        for (;;) {
            pollfd p[2] = {{c.get(), POLLIN, 0}, {a.get(), POLLIN, 0}};
            if (poll(p, 2, 5000) <= 0) break;
            for (auto& q : p) {
                if (!(q.revents & POLLIN)) continue;
                int conn = accept4(q.fd, nullptr, nullptr, SOCK_CLOEXEC);
                lu_wire_reply hello{LU_WIRE_MAGIC, 0, 0, 0};
                send(conn, &hello, sizeof hello, MSG_NOSIGNAL);
            }
        }
        std::filesystem::remove_all(dir);
        _exit(0);
    }
    ChildGuard guard(impostor);
    close(ready[1]);
    char buf[256] = {};
    ASSERT_GT(read(ready[0], buf, sizeof buf - 1), 0) << "the impostor did not start";
    close(ready[0]);
    std::string saved = getenv("LIVEUPDATE_RUNTIME_DIR") ? getenv("LIVEUPDATE_RUNTIME_DIR") : "";
    setenv("LIVEUPDATE_RUNTIME_DIR", buf, 1);
    EXPECT_EQ(lu_open(), -EPERM);
    char* reply = nullptr;
    EXPECT_EQ(lu_admin_request(R"({"op":"status"})", &reply), -EPERM);
    EXPECT_EQ(reply, nullptr);
    std::string out;
    EXPECT_NE(DaemonProcess::ctl({"status"}, &out), 0);
    if (saved.empty()) unsetenv("LIVEUPDATE_RUNTIME_DIR");
    else setenv("LIVEUPDATE_RUNTIME_DIR", saved.c_str(), 1);
    kill(impostor, SIGKILL);
    std::filesystem::remove_all(buf);
}

// A daemon run by an unprivileged user in a directory root gave that user
// (systemd's RuntimeDirectory= with User=) is the configured one: clients,
// root's included, talk to it.
TEST(DaemonIdentity, ClientTrustsTheOwnerRootGaveTheRuntimeDirectory) {
    Scratch s;  // root's, 0755: only root can have made what is in it
    std::string dir = s.path + "/rt";
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
    ASSERT_EQ(chown(dir.c_str(), kNobody, kNogroup), 0);
    std::string bin = s.path + "/bin";
    ASSERT_EQ(mkdir(bin.c_str(), 0755), 0);
    std::string exe = daemon_for_nobody(bin);
    pid_t d = fork();
    ASSERT_GE(d, 0);
    if (d == 0) {
        setenv("LD_LIBRARY_PATH", bin.c_str(), 1);
        if (!become_nobody()) _exit(100);
        execl(exe.c_str(), exe.c_str(), "--runtime-dir", dir.c_str(), nullptr);
        _exit(101);
    }
    ChildGuard guard(d);
    std::string saved = getenv("LIVEUPDATE_RUNTIME_DIR") ? getenv("LIVEUPDATE_RUNTIME_DIR") : "";
    setenv("LIVEUPDATE_RUNTIME_DIR", dir.c_str(), 1);
    int fd = -ENOENT;
    for (int i = 0; i < 1000 && fd == -ENOENT; i++) {
        fd = lu_open();
        if (fd == -ENOENT) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_GE(fd, 0) << strerror(-fd);
    if (fd >= 0) close(fd);
    if (saved.empty()) unsetenv("LIVEUPDATE_RUNTIME_DIR");
    else setenv("LIVEUPDATE_RUNTIME_DIR", saved.c_str(), 1);
    kill(d, SIGTERM);
    int st = guard.wait();
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

// ---- refusals reach the client as their errno ----

// The daemon answers a refused admin client and closes without reading its
// request; the client must still read the answer, every time.
TEST(AdminRefusals, EaccesReachesTheClientEveryTime) {
    DaemonProcess d({"--group", "daemon"});
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // In the group for the file system (supplementary, set here), not in
        // it by the group database the daemon asks: refused by the daemon.
        if (!become_nobody({kDaemonGroup})) _exit(100);
        int eacces = 0;
        for (int i = 0; i < 100; i++) {
            char* reply = nullptr;
            if (lu_admin_request(R"({"op":"status"})", &reply) == -EACCES) eacces++;
            lu_free(reply);
        }
        _exit(eacces == 100 ? 0 : 1 + eacces % 100);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0) << "100: could not switch user; else 1 + the number of EACCES";
}

TEST(AdminRefusals, EbusyReachesTheClientEveryTime) {
    DaemonProcess d;
    int ebusy = 0, attempts = 0;
    while (attempts < 100) {
        // 16 idle admin clients fill the table; an idle one makes room after
        // 2 s, so a fresh set is made well before that.
        std::vector<Fd> holders;
        for (int i = 0; i < 16; i++) holders.push_back(raw_connect(d.dir() + "/admin"));
        auto start = std::chrono::steady_clock::now();
        while (attempts < 100 && std::chrono::steady_clock::now() - start < std::chrono::milliseconds(500)) {
            char* reply = nullptr;
            int r = lu_admin_request(R"({"op":"status"})", &reply);
            lu_free(reply);
            attempts++;
            if (r == -EBUSY) ebusy++;
            else ADD_FAILURE() << "attempt " << attempts << ": " << strerror(-r);
        }
        holders.clear();
        // The daemon has reaped them once a status is answered again.
        ASSERT_FALSE(d.wait_serving().is_null());
    }
    EXPECT_EQ(ebusy, 100);
}

// ---- a live update's outcome goes to whoever asked ----

TEST(AdminRefusals, LiveUpdateOutcomeNeverReachesAnotherConnection) {
    DaemonProcess d;
    for (int round = 0; round < 5; round++) {
        pid_t before = d.pid();
        Fd a = raw_connect(d.dir() + "/admin");
        ASSERT_TRUE(a);
        std::string req = R"({"op":"reboot"})";
        ASSERT_EQ(raw_send(a.get(), req.data(), req.size()), 0);
        a.reset();  // the requester hangs up at once
        // The next admin client, likely on the requester's fd number, asks
        // only once the update is over: its first answer must be its own.
        Fd b = raw_connect(d.dir() + "/admin");
        ASSERT_TRUE(b);
        pid_t now = before;
        for (int i = 0; i < 1000 && now == before; i++) {
            json st = d.status();
            if (!st.is_null()) now = st["pid"].get<pid_t>();
            else std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ASSERT_NE(now, before) << "the reboot did not happen";
        std::string status = R"({"op":"status"})";
        raw_send(b.get(), status.data(), status.size());
        RawReply r = raw_recv(b.get());
        ASSERT_TRUE(r.got) << "no answer: " << strerror(r.recv_errno);
        ASSERT_EQ(r.fds.size(), 1u);
        char buf[65536];
        ssize_t n = pread(r.fds[0].get(), buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        json j = json::parse(std::string(buf, n), nullptr, false);
        EXPECT_TRUE(j.is_object() && j.contains("sessions"))
            << "round " << round << ": not the answer to status: " << std::string(buf, n);
        b.reset();
        d.track_update(before);
    }
}

// ---- what a retrieved file grants ----

// Another user's memfd, of which a client holds only a read-only fd: after a
// reboot the retrieved fd is read-only too, and the owner's data is safe.
TEST(RetrieveAccess, ReadOnlyMemfdComesBackReadOnlyAfterAReboot) {
    DaemonProcess d;
    Fd owner = make_memfd("owner's bytes");
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", owner.get());
    Fd ro(open(path, O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(ro);
    {
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        Fd s(lu_create_session(ctl.get(), "ro"));
        ASSERT_TRUE(s);
        ASSERT_EQ(lu_preserve_fd(s.get(), ro.get(), 7), 0);
        ASSERT_EQ(d.reboot(), 0);
    }
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_retrieve_session(ctl.get(), "ro"));
    ASSERT_TRUE(s) << strerror(-s.get());
    Fd got(lu_retrieve_fd(s.get(), 7));
    ASSERT_TRUE(got) << strerror(-got.get());
    EXPECT_EQ(fcntl(got.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
    EXPECT_EQ(pwrite(got.get(), "X", 1, 0), -1);
    EXPECT_EQ(errno, EBADF);
    char buf[16] = {};
    EXPECT_EQ(pread(got.get(), buf, 13, 0), 13);
    EXPECT_STREQ(buf, "owner's bytes");
    EXPECT_EQ(lu_finish(s.get()), 0);
}

// ---- no session keeps itself alive ----

// A session's own fd queued inside a Unix socket that the session would
// hold: the socket is refused, so closing everything still releases it.
TEST(SessionCycle, SessionFdQueuedInAUnixSocketCannotKeepItAlive) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "cycle"));
    ASSERT_TRUE(s);
    // A connected pair carrying the session's fd, and a listener with a
    // connection in its backlog carrying it.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Fd x(sv[0]), y(sv[1]);
    ASSERT_EQ(raw_send(y.get(), "s", 1, {s.get()}), 0);
    EXPECT_EQ(lu_preserve_fd(s.get(), x.get(), 1), -ENOENT);
    Fd l(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;  // autobind in the abstract namespace
    ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa_family_t)), 0);
    ASSERT_EQ(listen(l.get(), 4), 0);
    socklen_t len = sizeof sa;
    ASSERT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);
    Fd c(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&sa), len), 0);
    ASSERT_EQ(raw_send(c.get(), "s", 1, {s.get()}), 0);
    EXPECT_EQ(lu_preserve_fd(s.get(), l.get(), 2), -ENOENT);
    // Every fd this process has of the session is closed; the copies in
    // flight go with the sockets that carry them.
    s.reset();
    x.reset();
    y.reset();
    c.reset();
    l.reset();
    control_round_trip(ctl.get());
    EXPECT_FALSE(find_session(d.status(), "cycle")) << "the session outlived every fd";
    Fd again(lu_create_session(ctl.get(), "cycle"));
    EXPECT_TRUE(again) << strerror(-again.get());
}

}  // namespace
}  // namespace lu::testing
