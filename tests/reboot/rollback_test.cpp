// SPDX-License-Identifier: Apache-2.0
// A live update that fails before "ready", at every step: liveupdatectl
// fails, the same instance keeps serving with the gate open, every session
// and file is intact and usable, and the next plain update carries it all.
#include "reboot/reboot_util.hpp"

namespace lu::reboot_test {
namespace {

struct Fault {
    const char* name;
    std::vector<std::string> args;
};

void PrintTo(const Fault& f, std::ostream* os) {
    *os << f.name;
}

// 3 sessions x 3 pipes (the test handler's files: 9 freeze calls, in
// order), a memfd in each session between its pipes, and a TCP listener in
// the first: handlers mixed in the freeze order.
struct World {
    struct Pipe {
        uint64_t token;
        Fd r, w;  // r is preserved; the test keeps w to prove identity
    };
    struct Sess {
        std::string name;
        Fd fd;
        std::vector<Pipe> pipes;
        std::map<uint64_t, Bytes> memfds;
        std::set<uint64_t> tokens() const {
            std::set<uint64_t> t;
            for (auto& p : pipes) t.insert(p.token);
            for (auto& [k, _] : memfds) t.insert(k);
            if (name == "app-0") t.insert(kListenerToken);
            return t;
        }
    };
    static constexpr uint64_t kListenerToken = 7;
    Fd ctl;
    std::vector<Sess> sessions;
    Fd listener;
    uint16_t port = 0;
};

void build(World& w) {
    w.ctl = Fd(lu_open());
    ASSERT_GE(w.ctl.get(), 0) << strerror(-w.ctl.get());
    w.listener = tcp_listener(&w.port);
    ASSERT_TRUE(w.listener.ok());
    for (int i = 0; i < 3; i++) {
        World::Sess& s = w.sessions.emplace_back();
        s.name = "app-" + std::to_string(i);
        s.fd = Fd(lu_create_session(w.ctl.get(), s.name.c_str()));
        ASSERT_GE(s.fd.get(), 0) << strerror(-s.fd.get());
        for (int j = 0; j < 3; j++) {
            int p[2];
            ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
            World::Pipe& pp = s.pipes.emplace_back();
            pp.token = 100 + static_cast<uint64_t>(j);
            pp.r = Fd(p[0]);
            pp.w = Fd(p[1]);
            ASSERT_EQ(lu_preserve_fd(s.fd.get(), pp.r.get(), pp.token), 0)
                << s.name << " pipe " << j;
            if (j == 0) {
                Bytes b =
                    random_bytes(65536 + static_cast<size_t>(i), 200 + static_cast<uint64_t>(i));
                Fd m = make_memfd(s.name.c_str(), b);
                ASSERT_EQ(lu_preserve_fd(s.fd.get(), m.get(), 1), 0) << s.name;
                s.memfds[1] = std::move(b);
            }
        }
        if (i == 0) {
            ASSERT_EQ(lu_preserve_fd(s.fd.get(), w.listener.get(), World::kListenerToken), 0);
        }
    }
}

// The same instance serves, the gate is open, everything is listed and
// usable. Adds a new memfd to every session and a new (empty) session.
void check_rolled_back(const DaemonProcess& d, World& w, pid_t pid0) {
    json st = d.status();
    ASSERT_FALSE(st.is_null()) << "nobody serves after the failed update";
    EXPECT_EQ(num(st, "pid"), pid0) << "the serving instance changed";
    EXPECT_EQ(num(st, "epoch"), 0);
    EXPECT_EQ(str(st, "gate"), "open");
    EXPECT_EQ(str(st["update"], "state"), "idle") << st.dump();
    EXPECT_EQ(st["sessions"].size(), w.sessions.size()) << st.dump();
    for (auto& s : w.sessions) {
        SCOPED_TRACE(s.name);
        json js = find_session(st, s.name, "outgoing");
        ASSERT_FALSE(js.is_null()) << st.dump();
        EXPECT_EQ(str(js, "state"), "open");
        EXPECT_EQ(tokens_of(js), s.tokens());
        EXPECT_EQ(session_name(s.fd.get()), s.name);
        Bytes b = random_bytes(3333, 300 + s.name.back());
        Fd m = make_memfd("after rollback", b);
        EXPECT_EQ(lu_preserve_fd(s.fd.get(), m.get(), 500), 0);
        s.memfds[500] = std::move(b);
    }
    if (auto kids = children_of(pid0)) {
        EXPECT_TRUE(kids->empty()) << "next instance left running: " << list(*kids);
    }
    World::Sess& extra = w.sessions.emplace_back();
    extra.name = "after-rollback";
    extra.fd = Fd(lu_create_session(w.ctl.get(), extra.name.c_str()));
    EXPECT_GE(extra.fd.get(), 0) << strerror(-extra.fd.get());
    EXPECT_EQ(d.status()["sessions"].size(), w.sessions.size());
}

// Everything in the next epoch, with the right bytes; pipes and the
// listener are the same objects.
void check_next_epoch(const DaemonProcess& d, World& w, pid_t pid0) {
    json st = d.status();
    EXPECT_EQ(num(st, "epoch"), 1) << st.dump();
    EXPECT_NE(num(st, "pid"), pid0);
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
    for (auto& s : w.sessions) {
        SCOPED_TRACE(s.name);
        EXPECT_EQ(tokens_of(find_session(st, s.name, "incoming")), s.tokens());
        Fd in(lu_retrieve_session(ctl.get(), s.name.c_str()));
        ASSERT_GE(in.get(), 0) << strerror(-in.get());
        for (auto& [t, b] : s.memfds) {
            Fd r(lu_retrieve_fd(in.get(), t));
            ASSERT_GE(r.get(), 0) << "memfd " << t << ": " << strerror(-r.get());
            Bytes c = contents(r.get());
            EXPECT_TRUE(c == b) << "memfd " << t << ": " << diff(c, b);
        }
        for (auto& p : s.pipes) {
            Fd r(lu_retrieve_fd(in.get(), p.token));
            ASSERT_GE(r.get(), 0) << "pipe " << p.token << ": " << strerror(-r.get());
            std::string msg = s.name + "/" + std::to_string(p.token);
            ASSERT_EQ(write(p.w.get(), msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
            char buf[64] = {};
            pollfd pf{r.get(), POLLIN, 0};
            ASSERT_EQ(poll(&pf, 1, 20000), 1);
            ssize_t n = read(r.get(), buf, sizeof buf);
            EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), msg);
        }
        if (s.name == "app-0") {
            Fd rl(lu_retrieve_fd(in.get(), World::kListenerToken));
            ASSERT_GE(rl.get(), 0);
            EXPECT_EQ(local_port(rl.get()), w.port);
            Fd c = tcp_connect(w.port);
            ASSERT_TRUE(c.ok());
            Fd a = accept_one(rl.get());
            ASSERT_TRUE(a.ok());
            EXPECT_TRUE(flows(c.get(), a.get(), "after two updates"));
        }
    }
}

class Rollback : public ::testing::TestWithParam<Fault> {};

TEST_P(Rollback, EverythingIntactAndNextRebootWorks) {
    DaemonProcess d({"--test-handler"});
    const pid_t pid0 = d.pid();
    ASSERT_GT(pid0, 0);
    World w;
    ASSERT_NO_FATAL_FAILURE(build(w));

    std::string out;
    std::vector<std::string> args{"reboot"};
    args.insert(args.end(), GetParam().args.begin(), GetParam().args.end());
    const size_t fds_before = settled_fd_count(pid0);
    const std::set<std::string> listing_before = fd_listing(pid0);
    int rc;
    {
        Deadline guard("the failed update", {pid0});
        rc = DaemonProcess::ctl(args, &out);
    }
    EXPECT_NE(rc, 0) << "liveupdatectl reported success: " << out;
    // The unwind leaves no fd behind (blob, channel, received fds).
    EXPECT_EQ(settled_fd_count(pid0), fds_before)
        << "before: " << list(listing_before) << "\nafter: " << list(fd_listing(pid0));
    ASSERT_NO_FATAL_FAILURE(check_rolled_back(d, w, pid0));

    ASSERT_EQ(d.reboot(), 0) << "the plain update after the rollback failed; status: "
                             << d.status().dump();
    check_next_epoch(d, w, pid0);
}

INSTANTIATE_TEST_SUITE_P(
    RebootRollback, Rollback,
    ::testing::Values(
        Fault{"freeze_0", {"--inject-fault", "freeze:0"}},
        Fault{"freeze_4_of_9", {"--inject-fault", "freeze:4"}},
        Fault{"freeze_8_of_9", {"--inject-fault", "freeze:8"}},
        Fault{"write_handover", {"--inject-fault", "write-handover"}},
        Fault{"corrupt_handover", {"--inject-fault", "corrupt-handover"}},
        Fault{"truncate_handover", {"--inject-fault", "truncate-handover"}},
        Fault{"validate", {"--inject-fault", "validate"}},
        Fault{"crash_before_ready", {"--inject-fault", "crash-before-ready"}},
        Fault{"hang_before_ready", {"--inject-fault", "hang-before-ready", "--timeout", "1"}},
        Fault{"exec_nonexistent", {"--exec", "/nonexistent"}},
        Fault{"exec_bin_true", {"--exec", "/bin/true"}},
        Fault{"dry_run_validate", {"--dry-run", "--inject-fault", "validate"}},
        Fault{"dry_run_crash", {"--dry-run", "--inject-fault", "crash-before-ready"}}),
    [](const ::testing::TestParamInfo<Fault>& i) { return std::string(i.param.name); });

// ---- a wrapper script as the next binary ----

// A process that is gone: no /proc entry, or a zombie left to its reaper.
// A SIGKILL is delivered, not waited for: give it a few seconds to land.
bool gone(pid_t pid) {
    for (int i = 0; i < 500; i++) {
        std::string line;
        try {  // a process that exits mid-read makes libstdc++'s filebuf throw (ESRCH)
            std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
            if (!std::getline(f, line)) return true;
        } catch (const std::exception&) {
            return true;
        }
        size_t paren = line.rfind(')');
        if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z') return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// A wrapper that starts a long-lived child before its last line, which is
// `last`; returns its path. The child's pid lands in DIR/child.pid.
std::string write_wrapper(const DaemonProcess& d, const std::string& last) {
    std::string path = d.dir() + "/wrapper.sh";
    std::ofstream(path) << "#!/bin/sh\nsleep 60 &\necho $! > " << d.dir() << "/child.pid\n"
                        << last << "\n";
    chmod(path.c_str(), 0755);
    return path;
}

pid_t wrapper_child(const DaemonProcess& d) {
    pid_t pid = 0;
    std::ifstream(d.dir() + "/child.pid") >> pid;
    return pid;
}

struct Wrapper {
    const char* name;
    std::string last_line;  // LIVEUPDATED stands for the daemon's path
};

void PrintTo(const Wrapper& w, std::ostream* os) { *os << w.name; }

class WrapperRollback : public ::testing::TestWithParam<Wrapper> {};

// A failed update through a wrapper ends everything the wrapper started, at
// once: the old instance serves on, and a control open answers without
// waiting for the wrapper's child.
TEST_P(WrapperRollback, EndsTheWholeTreeAndServesAtOnce) {
    DaemonProcess d({"--test-handler"});
    const pid_t pid0 = d.pid();
    World w;
    ASSERT_NO_FATAL_FAILURE(build(w));
    std::string last = GetParam().last_line;
    if (size_t at = last.find("LIVEUPDATED"); at != std::string::npos)
        last.replace(at, 11, LIVEUPDATED_PATH);
    std::string out;
    int rc;
    {
        Deadline guard("the failed update", {pid0});
        rc = DaemonProcess::ctl({"reboot", "--exec", write_wrapper(d, last), "--timeout", "20"}, &out);
    }
    EXPECT_NE(rc, 0) << out;
    const pid_t child = wrapper_child(d);
    ASSERT_GT(child, 0);
    EXPECT_TRUE(gone(child)) << "the wrapper's child outlived the rollback";
    // Exclusive again at once: nothing of the failed update holds the gate.
    w.ctl.reset();
    w.ctl = Fd(lu_open());
    EXPECT_GE(w.ctl.get(), 0) << strerror(-w.ctl.get());
    ASSERT_NO_FATAL_FAILURE(check_rolled_back(d, w, pid0));
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
}

INSTANTIATE_TEST_SUITE_P(
    RebootWrapper, WrapperRollback,
    ::testing::Values(Wrapper{"exits", "exit 3"},
                      Wrapper{"execs_a_refusing_daemon", "exec LIVEUPDATED \"$@\" --fault validate"},
                      Wrapper{"forks_a_crashing_daemon",
                              "LIVEUPDATED \"$@\" --fault crash-before-ready; exit 1"}),
    [](const ::testing::TestParamInfo<Wrapper>& i) { return std::string(i.param.name); });

// A wrapper's other children never get the channel: after a committed
// update through it, the child it started holds no socket.
TEST(WrapperCommit, TheWrappersChildHoldsNoFdOfTheHandover) {
    DaemonProcess d({"--test-handler"});
    const pid_t pid0 = d.pid();
    World w;
    ASSERT_NO_FATAL_FAILURE(build(w));
    std::string out;
    int rc = DaemonProcess::ctl(
        {"reboot", "--exec", write_wrapper(d, std::string("exec ") + LIVEUPDATED_PATH + " \"$@\"")},
        &out);
    ASSERT_EQ(rc, 0) << out;
    const pid_t child = wrapper_child(d);
    ASSERT_GT(child, 0);
    for (const std::string& fd : fd_listing(child))
        EXPECT_EQ(fd.find("socket:"), std::string::npos) << "the wrapper's child holds " << fd;
    kill(child, SIGKILL);
    check_next_epoch(d, w, pid0);
}

}  // namespace
}  // namespace lu::reboot_test
