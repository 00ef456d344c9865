// SPDX-License-Identifier: Apache-2.0
// The smallest useful LUO agent: keeps a memfd of data and a listening
// socket across a live update of liveupdated.
//
//   memfd-demo preserve MiB   creates session "demo", fills a memfd with a
//                             pattern, preserves it and a TCP listener, prints
//                             the listener's port, and holds the session
//                             until it is killed (as an agent would, until
//                             the kexec)
//   memfd-demo hold MiB       the same, as a bystander: holds the session
//                             until SIGTERM or SIGINT, then checks it is
//                             still its own (no ESTALE) and every byte is
//                             right: exit 0 if undisturbed
//   memfd-demo retrieve       retrieves session "demo" in the next epoch,
//                             checks every byte, accepts one connection queued
//                             on the listener if any, finishes the session
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "liveupdate/client.h"

namespace {

constexpr uint64_t kDataToken = 1, kListenerToken = 2;

uint64_t pattern(uint64_t i) { return i * 0x9E3779B97F4A7C15ull ^ 0x5eed; }

int die(const char* what, int err) {
    fprintf(stderr, "memfd-demo: %s: %s\n", what, strerror(-err));
    return 1;
}

// Every byte of the memfd is the pattern.
bool intact(int mfd, size_t size) {
    auto* p = static_cast<uint64_t*>(mmap(nullptr, size, PROT_READ, MAP_SHARED, mfd, 0));
    if (p == MAP_FAILED) return false;
    bool ok = true;
    for (size_t i = 0; ok && i < size / 8; i++) ok = p[i] == pattern(i);
    munmap(p, size);
    return ok;
}

int preserve(size_t mib, bool hold = false) {
    int ctl = lu_open();
    if (ctl < 0) return die("open", ctl);
    int s = lu_create_session(ctl, "demo");
    if (s < 0) return die("create session", s);
    size_t size = mib << 20;
    int mfd = memfd_create("demo-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ftruncate(mfd, static_cast<off_t>(size)) < 0) return die("ftruncate", -errno);
    auto* p = static_cast<uint64_t*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0));
    if (p == MAP_FAILED) return die("mmap", -errno);
    for (size_t i = 0; i < size / 8; i++) p[i] = pattern(i);
    munmap(p, size);
    int r = lu_preserve_fd(s, mfd, kDataToken);
    if (r < 0) return die("preserve memfd", r);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(lfd, 16) < 0 ||
        getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) < 0)
        return die("listen", -errno);
    r = lu_preserve_fd(s, lfd, kListenerToken);
    if (r < 0) return die("preserve listener", r);
    close(ctl);
    printf("%u\n", ntohs(a.sin_port));
    fflush(stdout);
    fprintf(stderr, "memfd-demo: preserved %zu MiB and a listener on port %u in session \"demo\"\n",
            mib, ntohs(a.sin_port));
    if (!hold) {
        pause();  // hold the session until the live update (and beyond: our fds go stale)
        return 0;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    int sig = 0;
    sigwait(&set, &sig);
    char name[LIVEUPDATE_SESSION_NAME_LENGTH];
    r = lu_get_name(s, name);
    if (r < 0) return die("the session is no longer ours", r);
    if (!intact(mfd, size)) {
        fprintf(stderr, "memfd-demo: the data changed\n");
        return 1;
    }
    printf("session \"demo\" undisturbed: still ours, %zu MiB intact\n", mib);
    return 0;
}

int retrieve() {
    int ctl = lu_open();
    if (ctl < 0) return die("open", ctl);
    int s = lu_retrieve_session(ctl, "demo");
    if (s < 0) return die("retrieve session", s);
    int mfd = lu_retrieve_fd(s, kDataToken);
    if (mfd < 0) return die("retrieve memfd", mfd);
    off_t size = lseek(mfd, 0, SEEK_END);
    auto t0 = std::chrono::steady_clock::now();
    auto* p = static_cast<uint64_t*>(mmap(nullptr, size, PROT_READ, MAP_SHARED, mfd, 0));
    if (p == MAP_FAILED) return die("mmap", -errno);
    for (size_t i = 0; i < static_cast<size_t>(size) / 8; i++)
        if (p[i] != pattern(i)) {
            fprintf(stderr, "memfd-demo: byte %zu differs\n", i * 8);
            return 1;
        }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    int lfd = lu_retrieve_fd(s, kListenerToken);
    if (lfd < 0) return die("retrieve listener", lfd);
    pollfd pf{lfd, POLLIN, 0};
    int queued = 0;
    while (poll(&pf, 1, 0) == 1) {
        int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) break;
        const char msg[] = "served by the next epoch\n";
        if (write(c, msg, sizeof msg - 1) < 0) return die("write", -errno);
        close(c);
        queued++;
    }
    int r = lu_finish(s);
    if (r < 0) return die("finish", r);
    printf("verified %lld MiB byte for byte (%.1f ms to map and read), accepted %d queued "
           "connection(s), session finished\n",
           static_cast<long long>(size >> 20), ms, queued);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && !strcmp(argv[1], "preserve")) return preserve(strtoull(argv[2], nullptr, 10));
    if (argc == 3 && !strcmp(argv[1], "hold")) return preserve(strtoull(argv[2], nullptr, 10), true);
    if (argc == 2 && !strcmp(argv[1], "retrieve")) return retrieve();
    fprintf(stderr, "usage: memfd-demo preserve MiB | memfd-demo hold MiB | memfd-demo retrieve\n");
    return 2;
}
