// SPDX-License-Identifier: Apache-2.0
#include "kexec_kill.hpp"

#include "procfs.hpp"

#include <dirent.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

namespace lu::ctl {

namespace {

// The socket inodes among a process's fds.
std::set<ino_t> socket_inodes(pid_t pid) {
    std::set<ino_t> out;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        char link[64];
        ssize_t n = readlink((dir + "/" + e->d_name).c_str(), link, sizeof link - 1);
        if (n <= 0) continue;
        link[n] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1) out.insert(static_cast<ino_t>(ino));
    }
    closedir(d);
    return out;
}

// Every unix socket of this network namespace with its peer: inode -> peer.
std::map<ino_t, ino_t> unix_peers(std::string* why) {
    std::map<ino_t, ino_t> peers;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) {
        *why = std::string("sock_diag: ") + strerror(errno);
        return peers;
    }
    struct {
        nlmsghdr nlh;
        unix_diag_req req;
    } msg{};
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.req.sdiag_family = AF_UNIX;
    msg.req.udiag_states = ~0u;
    msg.req.udiag_show = UDIAG_SHOW_PEER;
    if (send(nl, &msg, sizeof msg, 0) < 0) {
        *why = std::string("sock_diag: ") + strerror(errno);
        close(nl);
        return peers;
    }
    std::vector<char> buf(64 * 1024);
    for (bool done = false; !done;) {
        ssize_t n = recv(nl, buf.data(), buf.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            *why = std::string("sock_diag: ") + (n < 0 ? strerror(errno) : "end of data");
            break;
        }
        int left = static_cast<int>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left);
             h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = true;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                *why = "sock_diag: the kernel refused the dump";
                done = true;
                break;
            }
            auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
            int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
            for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                if (a->rta_type != UNIX_DIAG_PEER || RTA_PAYLOAD(a) < sizeof(uint32_t)) continue;
                uint32_t peer;
                memcpy(&peer, RTA_DATA(a), sizeof peer);
                peers[m->udiag_ino] = peer;
            }
        }
    }
    close(nl);
    return peers;
}

}  // namespace

bool read_instance_sockets(pid_t daemon_pid, InstanceSockets* s, std::string* why) {
    std::set<ino_t> ours = socket_inodes(daemon_pid);
    if (ours.empty()) {
        *why = "cannot read the daemon's fds (pid " + std::to_string(daemon_pid) + ")";
        return false;
    }
    s->own.insert(ours.begin(), ours.end());
    for (auto [ino, peer] : unix_peers(why))
        if (ours.count(peer) && !ours.count(ino)) s->client_ends.insert(ino);
    return true;
}

int kill_holders(pid_t sandbox_pid, const InstanceSockets& s) {
    // The sandbox's processes: descendants of its supervisor (a subreaper,
    // so orphans of stage 1 are still below it).
    std::map<pid_t, pid_t> parent;
    for (pid_t p : all_pids()) parent[p] = parent_of(p);
    auto below = [&](pid_t p) {
        for (int depth = 0; depth < 4096 && p > 1; depth++) {
            auto it = parent.find(p);
            if (it == parent.end()) return false;
            p = it->second;
            if (p == sandbox_pid) return true;
        }
        return false;
    };
    std::vector<pid_t> victims;
    for (auto [pid, ppid] : parent) {
        if (pid == getpid() || ppid < 0 || !below(pid)) continue;
        std::set<ino_t> held = socket_inodes(pid);
        bool daemon = std::any_of(held.begin(), held.end(), [&](ino_t i) { return s.own.count(i); });
        bool holder = std::any_of(held.begin(), held.end(), [&](ino_t i) { return s.client_ends.count(i); });
        if (holder && !daemon) victims.push_back(pid);
    }
    for (pid_t v : victims) kill(v, SIGKILL);
    // Gone (or a zombie for its parent to reap) before stage 2 starts.
    for (pid_t v : victims)
        for (int i = 0; i < 500 && parent_of(v) >= 0; i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return static_cast<int>(victims.size());
}

}  // namespace lu::ctl
