// SPDX-License-Identifier: Apache-2.0
// Blackout of a live update (gate closed -> next instance serving, as the
// next instance measures it) for sessions x 10 files, beside the floor
// measured in the same run: passing that many fds with SCM_RIGHTS at 253 per
// message to another process, plus one spawn+exit of the daemon binary. Then
// 1 MiB versus 8 GiB of preserved memfd data.
//   build/release/bench/blackout_bench [max-sessions]
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include <unistd.h>

#include <cstring>
#include <iterator>
#include <string>

#include "bench_util.hpp"
#include "support/daemon_process.hpp"

using namespace lu::bench;
using lu::testing::DaemonProcess;

namespace {

constexpr int kRuns = 5;

constexpr const char* kPhases[] = {"freeze", "encode", "spawn", "transfer", "validate", "commit"};
constexpr size_t kNrPhases = std::size(kPhases);

// One live update; returns the blackout the daemon reports, in us, and its
// phases as the next instance recorded them into *phases (when given).
double reboot_blackout(DaemonProcess& d, std::vector<double>* phases = nullptr) {
    nlohmann::json r = d.admin(R"({"op":"reboot","timeout":120})");
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (r.is_null() || !r.value("ok", false)) {
        fprintf(stderr, "reboot failed: %s\n", r.dump().c_str());
        return -1;
    }
    if (phases) {
        nlohmann::json last = d.status()["updates"]["last"].back()["phases_us"];
        for (size_t i = 0; i < kNrPhases; i++) phases[i].push_back(last.value(kPhases[i], 0.0));
    }
    return r["blackout_us"].get<double>();
}

double floor_us(size_t nfds) {
    std::vector<int> fds;
    for (size_t i = 0; i < nfds; i++) fds.push_back(memfd_create("floor", MFD_CLOEXEC));
    int sv[2];
    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
    uint64_t t0 = now_ns();
    pid_t child = fork();
    if (child == 0) {
        // Only the channel: the fds we inherited would count against the
        // same fd limit as the ones we receive.
        dup2(sv[1], 3);
        close_range(4, ~0u, 0);
        sv[1] = 3;
        size_t got = 0;
        while (got < nfds) {
            char buf[16];
            std::vector<char> cbuf(CMSG_SPACE(sizeof(int) * 253));
            iovec iov{buf, sizeof buf};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = cbuf.data();
            m.msg_controllen = cbuf.size();
            if (recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC) <= 0) _exit(1);
            cmsghdr* c = CMSG_FIRSTHDR(&m);
            got += c ? (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
        }
        char ok = 1;
        if (write(sv[1], &ok, 1) < 0) _exit(1);
        _exit(0);
    }
    close(sv[1]);
    for (size_t i = 0; i < nfds; i += 253) {
        size_t n = std::min<size_t>(253, nfds - i);
        char buf[16] = {};
        std::vector<char> cbuf(CMSG_SPACE(sizeof(int) * n));
        iovec iov{buf, sizeof buf};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.data();
        m.msg_controllen = cbuf.size();
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds.data() + i, sizeof(int) * n);
        sendmsg(sv[0], &m, 0);
    }
    char ok;
    if (nfds == 0 || read(sv[0], &ok, 1) == 1) {
    }
    waitpid(child, nullptr, 0);
    uint64_t t1 = now_ns();
    close(sv[0]);
    for (int fd : fds) close(fd);
    // One spawn of the daemon binary, to its exit.
    char* argv[] = {const_cast<char*>(LIVEUPDATED_PATH), const_cast<char*>("--help"), nullptr};
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 1);
    uint64_t t2 = now_ns();
    pid_t p;
    posix_spawn(&p, argv[0], &fa, nullptr, argv, environ);
    waitpid(p, nullptr, 0);
    uint64_t t3 = now_ns();
    posix_spawn_file_actions_destroy(&fa);
    close(devnull);
    return double((t1 - t0) + (t3 - t2)) / 1000.0;
}

// Fills a daemon with `sessions` x `files` memfds; the client keeps the
// session fds open (as an agent would) and returns them.
std::vector<int> fill(size_t sessions, size_t files, size_t bytes) {
    int ctl = lu_open();
    std::vector<int> keep;
    for (size_t s = 0; s < sessions; s++) {
        int sfd = lu_create_session(ctl, ("s" + std::to_string(s)).c_str());
        keep.push_back(sfd);
        for (size_t f = 0; f < files; f++) {
            int m = memfd_create("b", MFD_CLOEXEC);
            if (bytes && fallocate(m, 0, 0, off_t(bytes)) < 0) perror("fallocate");
            if (int e = lu_preserve_fd(sfd, m, f); e) fprintf(stderr, "preserve: %s\n", strerror(-e));
            close(m);
        }
    }
    close(ctl);
    return keep;
}

}  // namespace

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    size_t max_sessions = argc > 1 ? strtoul(argv[1], nullptr, 10) : 1000;
    printf("blackout_bench: median of %d live updates each, release daemon, 2 CPUs unpinned\n",
           kRuns);
    printf("%10s %7s %7s %12s %12s %8s\n", "sessions", "files", "fds", "blackout_us", "floor_us",
           "ratio");
    std::vector<std::string> by_phase;
    for (size_t sessions : {size_t(1), size_t(100), size_t(1000), size_t(10000)}) {
        if (sessions > max_sessions) break;
        std::vector<double> b, f, phases[kNrPhases];
        for (int run = 0; run < kRuns; run++) {
            DaemonProcess d;
            std::vector<int> keep = fill(sessions, 10, 0);
            b.push_back(reboot_blackout(d, phases));
            f.push_back(floor_us(sessions * 10));
            for (int fd : keep) close(fd);
        }
        printf("%10zu %7d %7zu %12.0f %12.0f %8.2f\n", sessions, 10, sessions * 10, pct(b, 50),
               pct(f, 50), pct(b, 50) / pct(f, 50));
        char line[160];
        int n = snprintf(line, sizeof line, "%10zu %7zu", sessions, sessions * 10);
        for (auto& p : phases) n += snprintf(line + n, sizeof line - size_t(n), " %9.0f", pct(p, 50));
        by_phase.push_back(line);
    }
    // Each phase's median on its own (they need not add up to the median blackout).
    printf("\nphases_us (medians) as the next instance recorded them\n%10s %7s", "sessions", "fds");
    for (const char* p : kPhases) printf(" %9s", p);
    printf("\n");
    for (auto& l : by_phase) printf("%s\n", l.c_str());
    printf("\n%12s %12s\n", "memfd", "blackout_us");
    double small = 0;
    for (size_t mib : {size_t(1), size_t(8192)}) {
        std::vector<double> b;
        DaemonProcess d;
        std::vector<int> keep = fill(1, 1, mib << 20);
        for (int run = 0; run < kRuns; run++) {
            b.push_back(reboot_blackout(d));
            // Move the session back out for the next run: retrieve, finish, re-preserve.
            int ctl = lu_open();
            int in = lu_retrieve_session(ctl, "s0");
            int m = lu_retrieve_fd(in, 0);
            lu_finish(in);
            close(in);
            for (int fd : keep) close(fd);
            keep = {lu_create_session(ctl, "s0")};
            lu_preserve_fd(keep[0], m, 0);
            close(m);
            close(ctl);
        }
        printf("%9zu MiB %12.0f", mib, pct(b, 50));
        if (mib == 1) small = pct(b, 50);
        else printf("   x%.2f of 1 MiB", pct(b, 50) / small);
        printf("\n");
        for (int fd : keep) close(fd);
    }
    return 0;
}
