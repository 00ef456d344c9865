/* SPDX-License-Identifier: Apache-2.0 */
// sysfault: an LD_PRELOAD library that makes one chosen libc call of
// liveupdated fail, or kills the process at it, for the fault campaign
// (tests/faults). Test-only: nothing in the daemon knows it exists.
//
//   LU_SYSFAULT_ARM=path     calls are counted only while this file exists
//   LU_SYSFAULT_ROLE=old|next|keeper|recovered  the process that is counted:
//                            "next" is the instance started with
//                            --handover-socket, "keeper" the keeper (--keeper),
//                            "recovered" an instance its keeper started after
//                            a crash (--recover), "old" any other instance.
//                            The keeper and the instances it starts inherit
//                            the environment: without their own roles they
//                            would take the fault meant for the old instance.
//   LU_SYSFAULT=call:nth:action  the nth counted call of `call` gets `action`:
//                            an errno name (the call fails with it, without
//                            running; close() still closes, as Linux does),
//                            "short" (write/pread do half), "ctrunc" (recvmsg:
//                            the fds do not fit, as with a full fd table),
//                            or "kill" (SIGKILL before the call)
//   LU_SYSFAULT_TRACE=path   one line per counted call: "call ordinal detail"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kMaxCalls = 32 };
static const char* const kCalls[] = {"sendmsg", "recvmsg", "write",   "pread",      "memfd_create",
                                     "socketpair", "accept4", "epoll_ctl", "epoll_wait", "poll",
                                     "close",   "fcntl",   "posix_spawn", "connect", NULL};

static int counts[kMaxCalls];
static int role_checked, is_target;
static const char* arm_path;
static const char* trace_path;
static char fault_call[32];
static int fault_nth;
static char fault_action[32];

static int call_index(const char* name) {
    for (int i = 0; kCalls[i]; i++)
        if (strcmp(kCalls[i], name) == 0) return i;
    return -1;
}

// Whether this process is the instance the campaign targets.
static int targeted(void) {
    if (!role_checked) {
        role_checked = 1;
        const char* role = getenv("LU_SYSFAULT_ROLE");
        arm_path = getenv("LU_SYSFAULT_ARM");
        trace_path = getenv("LU_SYSFAULT_TRACE");
        const char* spec = getenv("LU_SYSFAULT");
        if (spec) sscanf(spec, "%31[^:]:%d:%31s", fault_call, &fault_nth, fault_action);
        char cmd[4096];
        int fd = (int)syscall(SYS_open, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? syscall(SYS_read, fd, cmd, sizeof cmd - 1) : 0;
        if (fd >= 0) syscall(SYS_close, fd);
        const char* mine = "old";
        for (ssize_t i = 0; i < n; i += (ssize_t)strlen(cmd + i) + 1) {
            cmd[n] = 0;
            if (strcmp(cmd + i, "--handover-socket") == 0) mine = "next";
            if (strcmp(cmd + i, "--keeper") == 0) mine = "keeper";
            if (strcmp(cmd + i, "--recover") == 0) mine = "recovered";
        }
        is_target = role && arm_path && strcmp(role, mine) == 0;
    }
    return is_target && access(arm_path, F_OK) == 0;
}

static int errno_named(const char* name) {
    static const struct { const char* name; int value; } kErrnos[] = {
        {"EINTR", EINTR},   {"ENOMEM", ENOMEM}, {"EMFILE", EMFILE}, {"ENFILE", ENFILE},
        {"ENOBUFS", ENOBUFS}, {"ENOSPC", ENOSPC}, {"EIO", EIO},     {"EAGAIN", EAGAIN},
        {"ECONNABORTED", ECONNABORTED}, {"EPIPE", EPIPE}, {"ECONNREFUSED", ECONNREFUSED}};
    for (size_t i = 0; i < sizeof kErrnos / sizeof kErrnos[0]; i++)
        if (strcmp(kErrnos[i].name, name) == 0) return kErrnos[i].value;
    return 0;
}

static void trace(const char* call, int nth, const char* detail) {
    if (!trace_path) return;
    char line[160];
    int len = snprintf(line, sizeof line, "%s %d %s\n", call, nth, detail);
    int fd = (int)syscall(SYS_open, trace_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    syscall(SYS_write, fd, line, (size_t)len);
    syscall(SYS_close, fd);
}

// Counts the call; returns the action for it ("" for none).
static const char* fault_for(const char* call, const char* detail) {
    if (!targeted()) return "";
    int i = call_index(call);
    int nth = ++counts[i];
    trace(call, nth, detail);
    if (fault_nth != nth || strcmp(fault_call, call) != 0) return "";
    // One fault per case: a kill disarms, so that the process started in
    // the killed one's place (a new keeper, a recovery) runs unharmed.
    if (strcmp(fault_action, "kill") == 0) {
        unlink(arm_path);
        kill(getpid(), SIGKILL);
    }
    return fault_action;
}

#define REAL(name) \
    static __typeof__(name)* real_##name; \
    if (!real_##name) real_##name = (__typeof__(name)*)dlsym(RTLD_NEXT, #name)

// Makes the call fail with the action's errno; 1 if it did.
static int inject(const char* action) {
    int e = errno_named(action);
    if (!e) return 0;
    errno = e;
    return 1;
}

ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
    REAL(sendmsg);
    char detail[64];
    size_t nfds = 0;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr*)msg, c))
        if (c->cmsg_type == SCM_RIGHTS) nfds += (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    snprintf(detail, sizeof detail, "%zu bytes, %zu fds", msg->msg_iov[0].iov_len, nfds);
    if (inject(fault_for("sendmsg", detail))) return -1;
    return real_sendmsg(fd, msg, flags);
}

static void close_received(struct msghdr* msg) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                syscall(SYS_close, ((int*)CMSG_DATA(c))[i]);
}

ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
    REAL(recvmsg);
    if (!targeted()) return real_recvmsg(fd, msg, flags);
    // Only calls that receive something are steps: the loop's reads for
    // more (EAGAIN) are not counted. A peek installs the fds too: close them.
    size_t controllen = msg->msg_controllen;
    ssize_t n = real_recvmsg(fd, msg, flags | MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
        msg->msg_controllen = controllen;
        if (errno == EAGAIN && !(flags & MSG_DONTWAIT)) return real_recvmsg(fd, msg, flags);
        return n;
    }
    close_received(msg);
    msg->msg_controllen = controllen;
    char detail[64];
    snprintf(detail, sizeof detail, "%zd bytes", n);
    const char* action = fault_for("recvmsg", detail);
    if (inject(action)) return -1;
    n = real_recvmsg(fd, msg, flags);
    if (n >= 0 && strcmp(action, "ctrunc") == 0) {
        close_received(msg);
        msg->msg_controllen = 0;
        msg->msg_flags |= MSG_CTRUNC;
    }
    return n;
}

ssize_t write(int fd, const void* buf, size_t len) {
    REAL(write);
    // stdout and stderr (the log) are not steps.
    if (fd <= 2) return real_write(fd, buf, len);
    char detail[32];
    snprintf(detail, sizeof detail, "%zu bytes", len);
    const char* action = fault_for("write", detail);
    if (inject(action)) return -1;
    if (strcmp(action, "short") == 0 && len > 1) len /= 2;
    return real_write(fd, buf, len);
}

ssize_t pread(int fd, void* buf, size_t len, off_t off) {
    REAL(pread);
    char detail[32];
    snprintf(detail, sizeof detail, "%zu bytes", len);
    const char* action = fault_for("pread", detail);
    if (inject(action)) return -1;
    if (strcmp(action, "short") == 0 && len > 1) len /= 2;
    return real_pread(fd, buf, len, off);
}
ssize_t pread64(int fd, void* buf, size_t len, off_t off) { return pread(fd, buf, len, off); }

int memfd_create(const char* name, unsigned flags) {
    REAL(memfd_create);
    if (inject(fault_for("memfd_create", name))) return -1;
    return real_memfd_create(name, flags);
}

int socketpair(int domain, int type, int protocol, int sv[2]) {
    REAL(socketpair);
    if (inject(fault_for("socketpair", ""))) return -1;
    return real_socketpair(domain, type, protocol, sv);
}

int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
    REAL(accept4);
    if (!targeted()) return real_accept4(fd, addr, len, flags);
    // Only accepts with a connection waiting are steps. (The real poll: our
    // own probe is not the daemon's step.)
    struct pollfd p = {fd, POLLIN, 0};
    if (syscall(SYS_poll, &p, 1, 0) != 1) return real_accept4(fd, addr, len, flags);
    if (inject(fault_for("accept4", ""))) return -1;
    return real_accept4(fd, addr, len, flags);
}

int connect(int fd, const struct sockaddr* addr, socklen_t len) {
    REAL(connect);
    if (inject(fault_for("connect", ""))) return -1;
    return real_connect(fd, addr, len);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event* ev) {
    REAL(epoll_ctl);
    const char* ops[] = {"", "add", "del", "mod"};
    if (inject(fault_for("epoll_ctl", op >= 1 && op <= 3 ? ops[op] : "?"))) return -1;
    return real_epoll_ctl(epfd, op, fd, ev);
}

int epoll_wait(int epfd, struct epoll_event* events, int max, int timeout) {
    REAL(epoll_wait);
    int n = real_epoll_wait(epfd, events, max, timeout);
    // Only waits that block are steps (the loop's nested non-blocking reads
    // are not), counted when they return: the idle daemon's wait, entered
    // before or after the campaign armed, ends after, so every run counts
    // the same waits. A failure here drops what the wait reported, which
    // the (level-triggered) loop is told again.
    if (timeout != 0 && inject(fault_for("epoll_wait", ""))) return -1;
    return n;
}

int poll(struct pollfd* fds, nfds_t n, int timeout) {
    REAL(poll);
    if (inject(fault_for("poll", ""))) return -1;
    return real_poll(fds, n, timeout);
}

int close(int fd) {
    REAL(close);
    const char* action = fault_for("close", "");
    int r = real_close(fd);
    // Linux closes the fd even when close() reports EINTR: so do we.
    if (r == 0 && inject(action)) return -1;
    return r;
}

int fcntl(int fd, int cmd, ...) {
    REAL(fcntl);
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    // Only the commands that allocate or can be refused are steps.
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC || cmd == F_ADD_SEALS) {
        const char* name = cmd == F_ADD_SEALS ? "add_seals" : "dupfd";
        if (inject(fault_for("fcntl", name))) return -1;
    }
    return real_fcntl(fd, cmd, arg);
}

int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa,
                const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    REAL(posix_spawn);
    const char* action = fault_for("posix_spawn", "");
    int e = errno_named(action);
    if (e) return e;  // posix_spawn returns its error
    return real_posix_spawn(pid, path, fa, attr, argv, envp);
}
