// SPDX-License-Identifier: Apache-2.0
// Helpers for the bench programs: percentiles, CPU pinning, a daemon.
#pragma once

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <liveupdate/client.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace lu::bench {

inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

inline double pct(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
}

inline void pin(pid_t pid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(pid, sizeof set, &set);
}

// The floor of a live update that moves `nfds` fds, measured now: passing
// that many fds with SCM_RIGHTS at 253 per message to another process, plus
// one spawn of `binary` to its exit. In microseconds.
inline double handover_floor_us(size_t nfds, const char* binary) {
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
            if (recvmsg(3, &m, MSG_CMSG_CLOEXEC) <= 0) _exit(1);
            cmsghdr* c = CMSG_FIRSTHDR(&m);
            got += c ? (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
        }
        char ok = 1;
        if (write(3, &ok, 1) < 0) _exit(1);
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
    char* argv[] = {const_cast<char*>(binary), const_cast<char*>("--help"), nullptr};
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

// Fills the daemon with `sessions` x `files` memfds of `bytes` each; the
// session fds stay open (as an agent keeps them) and are returned.
inline std::vector<int> fill_sessions(size_t sessions, size_t files, size_t bytes = 0) {
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

}  // namespace lu::bench
