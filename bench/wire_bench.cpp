// SPDX-License-Identifier: Apache-2.0
// PRESERVE_FD and RETRIEVE_FD round trips through libliveupdate to a real
// liveupdated, beside the floor: a raw SCM_RIGHTS round trip (one fd each
// way) on a SOCK_SEQPACKET pair between two processes, measured in the same
// run with the same CPU placement; and requests per second with 1 and 16
// clients.   build/release/bench/wire_bench
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "bench_util.hpp"
#include "support/daemon_process.hpp"

using namespace lu::bench;
using lu::testing::DaemonProcess;

namespace {

constexpr int kSamples = 4000;

// The floor: a child echoes every message back with the fd it received.
std::vector<double> floor_round_trips(int client_cpu, int server_cpu) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
    pid_t child = fork();
    if (child == 0) {
        pin(0, server_cpu);
        close(sv[0]);
        for (;;) {
            char buf[128];
            char cbuf[CMSG_SPACE(sizeof(int))];
            iovec iov{buf, sizeof buf};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = cbuf;
            m.msg_controllen = sizeof cbuf;
            ssize_t n = recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC);
            if (n <= 0) _exit(0);
            int fd;
            memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
            iov.iov_len = size_t(n);
            m.msg_controllen = sizeof cbuf;
            sendmsg(sv[1], &m, 0);
            close(fd);
        }
    }
    close(sv[1]);
    pin(0, client_cpu);
    int mfd = memfd_create("floor", MFD_CLOEXEC);
    std::vector<double> us;
    for (int i = 0; i < kSamples + 200; i++) {
        char buf[88] = {};
        char cbuf[CMSG_SPACE(sizeof(int))];
        iovec iov{buf, sizeof buf};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf;
        m.msg_controllen = sizeof cbuf;
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &mfd, sizeof mfd);
        uint64_t t0 = now_ns();
        sendmsg(sv[0], &m, 0);
        m.msg_controllen = sizeof cbuf;
        recvmsg(sv[0], &m, MSG_CMSG_CLOEXEC);
        uint64_t t1 = now_ns();
        int back;
        memcpy(&back, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof back);
        close(back);
        if (i >= 200) us.push_back(double(t1 - t0) / 1000.0);
    }
    close(sv[0]);
    close(mfd);
    waitpid(child, nullptr, 0);
    return us;
}

struct Ours {
    std::vector<double> preserve, retrieve_first, retrieve_again;
};

Ours ours_round_trips(DaemonProcess& d, int client_cpu, int daemon_cpu) {
    pin(d.pid(), daemon_cpu);
    pin(0, client_cpu);
    Ours r;
    int ctl = lu_open();
    int s = lu_create_session(ctl, "bench");
    std::vector<int> memfds;
    for (int i = 0; i < kSamples; i++) memfds.push_back(memfd_create("bench", MFD_CLOEXEC));
    for (int i = 0; i < kSamples; i++) {
        uint64_t t0 = now_ns();
        int e = lu_preserve_fd(s, memfds[i], uint64_t(i));
        uint64_t t1 = now_ns();
        if (e) fprintf(stderr, "preserve: %s\n", strerror(-e));
        r.preserve.push_back(double(t1 - t0) / 1000.0);
    }
    close(ctl);
    // To retrieve, the files must come from the previous epoch.
    d.reboot();
    pin(d.pid(), daemon_cpu);
    ctl = lu_open();
    int in = lu_retrieve_session(ctl, "bench");
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < kSamples; i++) {
            uint64_t t0 = now_ns();
            int fd = lu_retrieve_fd(in, uint64_t(i));
            uint64_t t1 = now_ns();
            if (fd < 0) fprintf(stderr, "retrieve: %s\n", strerror(-fd));
            else close(fd);
            (pass ? r.retrieve_again : r.retrieve_first).push_back(double(t1 - t0) / 1000.0);
        }
    }
    lu_finish(in);
    close(in);
    close(s);
    close(ctl);
    for (int fd : memfds) close(fd);
    return r;
}

// GET_NAME (a request that changes nothing) from N client threads, each on
// its own session, for about a second.
double requests_per_second(int clients) {
    int ctl = lu_open();
    std::vector<int> sessions;
    for (int i = 0; i < clients; i++)
        sessions.push_back(lu_create_session(ctl, ("rps-" + std::to_string(i)).c_str()));
    close(ctl);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> total{0};
    std::vector<std::thread> threads;
    uint64_t t0 = now_ns();
    for (int i = 0; i < clients; i++)
        threads.emplace_back([&, i] {
            uint64_t n = 0;
            char name[64];
            while (!stop.load(std::memory_order_relaxed)) {
                if (lu_get_name(sessions[i], name) == 0) n++;
            }
            total += n;
        });
    std::this_thread::sleep_for(std::chrono::seconds(1));
    stop = true;
    for (auto& t : threads) t.join();
    double secs = double(now_ns() - t0) / 1e9;
    for (int s : sessions) close(s);
    return double(total) / secs;
}

void row(const char* what, const std::vector<double>& v, double floor_p50, double floor_p99) {
    printf("  %-32s p50 %8.1f us  p99 %8.1f us   x%.2f / x%.2f of the floor\n", what, pct(v, 50),
           pct(v, 99), pct(v, 50) / floor_p50, pct(v, 99) / floor_p99);
}

}  // namespace

int main() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    printf("wire_bench: %d round trips each; client and daemon pinned as stated\n", kSamples);
    for (auto [cc, dc, label] : {std::tuple{0, 0, "same CPU"}, std::tuple{0, 1, "across CPUs"}}) {
        auto fl = floor_round_trips(cc, dc);
        double f50 = pct(fl, 50), f99 = pct(fl, 99);
        printf("%s:\n  %-28s p50 %8.1f us  p99 %8.1f us\n", label,
               "floor (raw SCM_RIGHTS rt)", f50, f99);
        // With the crash protection (the default: each preserve also goes
        // to the keeper, pinned with the daemon) and without (--no-keeper).
        for (bool keeper : {true, false}) {
            DaemonProcess d(keeper ? std::vector<std::string>{} : std::vector<std::string>{"--no-keeper"});
            if (keeper) pin(d.status()["keeper"]["pid"].get<pid_t>(), dc);
            Ours o = ours_round_trips(d, cc, dc);
            const std::string tag = keeper ? "" : ", no keeper";
            row(("PRESERVE_FD" + tag).c_str(), o.preserve, f50, f99);
            row(("RETRIEVE_FD (first" + tag + ")").c_str(), o.retrieve_first, f50, f99);
            row(("RETRIEVE_FD (again" + tag + ")").c_str(), o.retrieve_again, f50, f99);
        }
    }
    DaemonProcess d;
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < 2; c++) CPU_SET(c, &all);
    sched_setaffinity(0, sizeof all, &all);
    double r1 = requests_per_second(1), r16 = requests_per_second(16);
    printf("requests/s (GET_NAME, unpinned): 1 client %.0f, 16 clients %.0f (x%.2f)\n", r1, r16,
           r16 / r1);
    return 0;
}
