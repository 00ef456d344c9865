/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libliveupdate: the client side of the wire protocol (src/wire/wire.h).
 * Translate, never judge: every uAPI check is the daemon's, so that the
 * errno and the order of the checks are the kernel's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liveupdate/client.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

/* Room for a few fds: the daemon sends at most one, but whatever arrives
 * must be received to be closed rather than leaked. */
#define LU_MAX_RECV_FDS 8

_Static_assert(sizeof(struct lu_wire_request) == 16, "wire request header");
_Static_assert(sizeof(struct lu_wire_reply) == 16, "wire reply header");

int lu_runtime_dir(char* buf, size_t len) {
    if (!buf) return -EFAULT;
    const char* base = secure_getenv("LIVEUPDATE_RUNTIME_DIR");
    const char* suffix = "";
    if (!base || !*base) {
        if (geteuid() == 0) {
            base = "/run/liveupdate";
        } else {
            base = secure_getenv("XDG_RUNTIME_DIR");
            if (!base || !*base) return -ENOENT;
            suffix = "/liveupdate";
        }
    }
    size_t n = strlen(base) + strlen(suffix);
    /* The longest socket name is "/control"; sun_path needs its NUL too. */
    if (n + sizeof("/control") > sizeof(((struct sockaddr_un*)0)->sun_path) || n >= len)
        return -ENAMETOOLONG;
    strcpy(buf, base);
    strcat(buf, suffix);
    return 0;
}

static void close_fds(const int* fds, int n) {
    for (int i = 0; i < n; i++) close(fds[i]);
}

/* ---- bounds ---- */

/* The bound of one call, unless set otherwise. A live daemon answers in
 * microseconds, and its blackouts (an upgrade, a reboot, a new instance
 * after a crash) last milliseconds; 30 s is far beyond any of them on a
 * loaded machine, yet short enough that a service whose daemon hangs fails
 * with an error of its own before an init system's start timeout (90 s by
 * default in systemd) kills it without one. */
#define LU_DEFAULT_TIMEOUT_MS 30000u
/* The longest hand-off the daemon accepts: a HANDOFF_WAIT may last that. */
#define LU_HANDOFF_MAX_MS (3600u * 1000u)
/* The daemon's own wait when an admin request gives no "timeout". */
#define LU_ADMIN_DEFAULT_WAIT_MS 30000u

/* Set by lu_set_timeout_ms; -1 until then: the environment decides. */
static _Atomic long long timeout_set = -1;

/* $LIVEUPDATE_TIMEOUT_MS: decimal digits only, at most UINT_MAX. Anything
 * else is a typo, and a typo must not turn the bound off (0 does). */
static unsigned env_timeout_ms(void) {
    const char* s = secure_getenv("LIVEUPDATE_TIMEOUT_MS");
    if (!s || *s < '0' || *s > '9') return LU_DEFAULT_TIMEOUT_MS;
    int saved = errno;
    char* end;
    unsigned long long v = strtoull(s, &end, 10);
    errno = saved;
    return (*end || v > UINT_MAX) ? LU_DEFAULT_TIMEOUT_MS : (unsigned)v;
}

/* Read at every call, so that a program may set the variable at any time
 * before its calls: one getenv beside a round trip to the daemon. */
static unsigned timeout_ms(void) {
    long long v = atomic_load(&timeout_set);
    return v >= 0 ? (unsigned)v : env_timeout_ms();
}

int lu_set_timeout_ms(unsigned ms) {
    long long prev = atomic_exchange(&timeout_set, (long long)ms);
    unsigned was = prev >= 0 ? (unsigned)prev : env_timeout_ms();
    return was > INT_MAX ? INT_MAX : (int)was;
}

/* A CLOCK_MONOTONIC instant in ns; LU_NO_DEADLINE: wait forever. */
struct deadline {
    int64_t at;
};
#define LU_NO_DEADLINE INT64_MAX

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ms from now; 0: no bound. */
static struct deadline deadline_in(uint64_t ms) {
    return (struct deadline){ms ? now_ns() + (int64_t)ms * 1000000 : LU_NO_DEADLINE};
}

/* The general bound of one call. */
static struct deadline call_deadline(void) {
    return deadline_in(timeout_ms());
}

/* A call that waits for something of its own (an outcome, a new daemon
 * instance) may take `wait_ms` by design: the bound is that plus a margin
 * for the daemon to report it (a rollback takes time too). The margin is
 * the general bound, never less than the default, as a short general bound
 * is meant for a quick answer, not to cut a rollback short. A general
 * bound of 0 turns this one off too. */
static struct deadline long_deadline(uint64_t wait_ms) {
    unsigned b = timeout_ms();
    if (!b) return deadline_in(0);
    return deadline_in(wait_ms + (b > LU_DEFAULT_TIMEOUT_MS ? b : LU_DEFAULT_TIMEOUT_MS));
}

/* The time left for poll(2): -1 for none, 0 once it has passed; rounded up,
 * so that poll does not wake a fraction of a ms early and spin. */
static int poll_ms(struct deadline d) {
    if (d.at == LU_NO_DEADLINE) return -1;
    int64_t left = d.at - now_ns();
    if (left <= 0) return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Waits for events until the deadline (-ETIMEDOUT). A signal does not
 * restart the wait from zero: the deadline stays where it was. */
static int wait_ready(int fd, short events, struct deadline d) {
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int ms = poll_ms(d);
        if (ms == 0) return -ETIMEDOUT;
        int n = poll(&p, 1, ms);
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR) return -errno;
    }
}

/* The daemon instance on the other end died (a crash, a kill) without
 * handing this fd over. No live update closes a client's connection: a
 * reboot passes it to the next instance, which answers ESTALE on it, and an
 * upgrade serves it on. So an end of file is never a hand-over, and gets
 * its own errno. */
#define LU_DAEMON_DIED (-EOWNERDEAD)

static int map_io_errno(int err) {
    return (err == EPIPE || err == ECONNRESET) ? LU_DAEMON_DIED : -err;
}

/* Never blocks in sendmsg: the daemon's queue is full only when it stopped
 * reading, and then poll waits, within the deadline. A caller's
 * non-blocking socket gets the same blocking request. */
static int send_msg(int fd, const struct msghdr* msg, struct deadline d) {
    for (;;) {
        if (sendmsg(fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            int rc = wait_ready(fd, POLLOUT, d);
            if (rc) return rc;
            continue;
        }
        return map_io_errno(errno);
    }
}

/*
 * Receives one reply into *hdr and arg (up to arg_cap bytes). On success the
 * reply is well formed, hdr->arg_len <= arg_cap and *out_fd is the one fd it
 * carried (or -1); every other fd received is closed.
 */
static int recv_reply(int fd, struct lu_wire_reply* hdr, void* arg, size_t arg_cap, int* out_fd,
                      struct deadline d) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * LU_MAX_RECV_FDS)];
    } ctl;
    struct iovec iov[2] = {{hdr, sizeof(*hdr)}, {arg, arg_cap}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = arg_cap ? 2 : 1};
    ssize_t n;
    bool reset_seen = false;
    /* One blocking recvmsg, bounded by SO_RCVTIMEO set to the time left:
     * a poll before it would cost every request a second sleep and wake-up.
     * A socket the caller made non-blocking answers EAGAIN at once: then,
     * and after a timeout that leaves time (a signal), poll waits within the
     * deadline and a recvmsg that cannot block follows. */
    bool wait_first = false;
    if (d.at != LU_NO_DEADLINE) {
        int64_t left = d.at - now_ns();
        if (left <= 0) return -ETIMEDOUT;
        int64_t us = left / 1000 + 1;
        struct timeval tv = {.tv_sec = us / 1000000, .tv_usec = us % 1000000};
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) wait_first = true;
    }
    *out_fd = -1;
    for (;;) {
        if (wait_first) {
            int rc = wait_ready(fd, POLLIN, d);
            if (rc) return rc;
        }
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (wait_first ? MSG_DONTWAIT : 0));
        if (n >= 0) break;
        if (errno == EINTR) continue;
        /* A daemon that answers and closes without reading what we sent
         * (a refusal: EACCES, EBUSY) makes the socket report ECONNRESET
         * once, ahead of its answer still queued: read on, once. */
        if (errno == ECONNRESET && !reset_seen) {
            reset_seen = true;
            continue;
        }
        if (errno == EAGAIN) {
            if (d.at != LU_NO_DEADLINE && now_ns() >= d.at) return -ETIMEDOUT;
            wait_first = true;
            continue;
        }
        return map_io_errno(errno);
    }

    int fds[LU_MAX_RECV_FDS];
    int nfds = 0;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && nfds < LU_MAX_RECV_FDS; i++)
            memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }

    int rc = 0;
    if (n == 0) {
        rc = LU_DAEMON_DIED; /* EOF: see map_io_errno */
    } else if ((size_t)n < sizeof(*hdr) || (msg.msg_flags & MSG_TRUNC) ||
               hdr->magic != LU_WIRE_MAGIC || hdr->err < 0 || hdr->err > 4095 ||
               hdr->arg_len != (size_t)n - sizeof(*hdr)) {
        rc = -EPROTO;
    } else if (hdr->nr_fds > 0 && nfds == 0) {
        /* The fd was sent but could not be installed: the kernel reports
         * this as MSG_CTRUNC, and the usual cause is RLIMIT_NOFILE. */
        rc = -EMFILE;
    }
    if (rc || hdr->nr_fds == 0 || hdr->err != 0) {
        close_fds(fds, nfds);
        return rc;
    }
    *out_fd = fds[0];
    close_fds(fds + 1, nfds - 1);
    return 0;
}

/*
 * The uid that root gave the runtime directory `dir`, or -1: when its parent
 * belongs to root and nobody else may write it (as /run), only root can
 * have made `dir` and chosen its owner (systemd's RuntimeDirectory= with
 * User=, say), so a daemon running as that owner is the configured one.
 */
static uid_t configured_owner(const char* dir) {
    char parent[sizeof(((struct sockaddr_un*)0)->sun_path)];
    snprintf(parent, sizeof(parent), "%s", dir);
    char* slash = strrchr(parent, '/');
    if (!slash) return (uid_t)-1;
    if (slash == parent) slash[1] = '\0';
    else *slash = '\0';
    struct stat ps, ds;
    if (stat(parent, &ps) < 0 || ps.st_uid != 0 || (ps.st_mode & (S_IWGRP | S_IWOTH))) return (uid_t)-1;
    if (stat(dir, &ds) < 0 || !S_ISDIR(ds.st_mode)) return (uid_t)-1;
    return ds.st_uid;
}

/* Whoever listens on the path could be an impostor that another user put
 * there: talk only to a daemon running as root, as ourselves, or as the
 * runtime directory's configured owner (see docs/security.md). */
static int check_daemon(int fd, const char* dir) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
    if (cred.uid == 0 || cred.uid == geteuid() || cred.uid == configured_owner(dir)) return 0;
    return -EPERM;
}

/* connect(2) on AF_UNIX waits for room in the listener's backlog, and
 * poll cannot wait for that: SO_SNDTIMEO bounds that wait instead (EAGAIN
 * when it ends). 0 clears it, so that the fd returned carries no option of
 * ours. */
static int set_send_timeout(int fd, int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ? -errno : 0;
}

/* Maps a connect() failure the way the kernel's open("/dev/liveupdate")
 * would report it: no daemon is ENOENT. A connect that finds room in the
 * backlog returns at once, even if nobody accepts it yet (a new daemon
 * instance coming up): the wait for the answer is the caller's recv. */
static int connect_to(const char* name, struct deadline d) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char dir[sizeof(sa.sun_path)];
    int rc = lu_runtime_dir(dir, sizeof(dir));
    if (rc) return rc;
    strcpy(sa.sun_path, dir);
    strcat(sa.sun_path, name); /* lu_runtime_dir checked that it fits */

    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    /* An AF_UNIX connect interrupted while waiting for backlog room leaves
     * the socket unconnected: retrying is correct. */
    for (;;) {
        int ms = poll_ms(d);
        rc = ms == 0 ? -ETIMEDOUT : ms > 0 ? set_send_timeout(fd, ms) : 0;
        if (rc) break;
        if (connect(fd, (struct sockaddr*)&sa, sizeof(sa)) == 0) {
            if (ms > 0) rc = set_send_timeout(fd, 0);
            break;
        }
        if (errno == EINTR) continue;
        int err = errno;
        if (err == EAGAIN && ms > 0) rc = -ETIMEDOUT; /* the backlog stayed full */
        else rc = (err == ENOENT || err == ECONNREFUSED) ? -ENOENT : -err;
        break;
    }
    if (rc) {
        close(fd);
        return rc;
    }
    rc = check_daemon(fd, dir);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

int lu_open(void) {
    struct deadline d = call_deadline();
    int fd = connect_to("/control", d);
    if (fd < 0) return fd;
    struct lu_wire_reply hello;
    int extra;
    int rc = recv_reply(fd, &hello, NULL, 0, &extra, d);
    if (rc == 0 && extra >= 0) {
        close(extra); /* a hello carries no fd */
        rc = -EPROTO;
    }
    if (rc == 0 && hello.err) rc = -hello.err;
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

/* EBUSY is the one answer that passes by itself: another process holds
 * the control connection for a moment. ENOENT (no daemon) and the rest
 * are not retried: waiting would not change them, or hide a misconfigured
 * runtime directory. */
int lu_open_wait(unsigned timeout_ms) {
    const int64_t until = now_ns() + (int64_t)timeout_ms * 1000000;
    int64_t backoff = 1000000; /* 1 ms, doubling to 50 ms */
    for (;;) {
        int fd = lu_open();
        if (fd != -EBUSY) return fd;
        int64_t left = until - now_ns();
        if (left <= 0) return -EBUSY;
        int64_t ns = backoff < left ? backoff : left;
        struct timespec t = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
        nanosleep(&t, NULL); /* a signal only ends this nap early */
        if (backoff < 50000000) backoff = backoff * 2 < 50000000 ? backoff * 2 : 50000000;
    }
}

/* After a timeout the reply may still come, and would then answer the next
 * request: the connection cannot be used any more. Shut it down, which the
 * daemon sees as a close (a session is released, the control connection
 * freed), and put an unconnected socket under the same fd number, so that
 * every later call on it answers ENOTCONN, which no daemon's failure gives.
 * The caller still owns the fd and closes it. Without a free fd for the
 * replacement, later calls see the shut-down socket: EOWNERDEAD. */
static void abandon(int fd) {
    shutdown(fd, SHUT_RDWR);
    int spare = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (spare < 0) return;
    int fdflags = fcntl(fd, F_GETFD);
    dup3(spare, fd, fdflags >= 0 && (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
    close(spare);
}

/* Commands whose request carries the caller's fd, and those whose reply
 * carries a new one; for all of them the fd field is at offset 4. */
#define LU_FD_OFFSET 4

int lu_ioctl_wire(int fd, unsigned long cmd, uint32_t flags, void* arg, uint32_t arg_len,
                  uint32_t* reply_len, int* new_fd) {
    if (reply_len) *reply_len = 0;
    if (new_fd) *new_fd = -1;
    if ((arg_len && !arg) || arg_len > LU_WIRE_MAX_ARG || (flags & ~LU_WIRE_FLAGS_ALL))
        return -EINVAL;
    /* The kernel's ioctl command is an unsigned int: truncate as it does. */
    struct lu_wire_request req = {
        .magic = LU_WIRE_MAGIC, .cmd = (uint32_t)cmd, .flags = flags, .arg_len = arg_len};
    struct iovec iov[2] = {{&req, sizeof(req)}, {arg, req.arg_len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = req.arg_len ? 2 : 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    if (req.cmd == LIVEUPDATE_SESSION_PRESERVE_FD && req.arg_len >= LU_FD_OFFSET + sizeof(int32_t)) {
        int32_t pfd;
        memcpy(&pfd, (char*)arg + LU_FD_OFFSET, sizeof(pfd));
        /* A bad fd is sent as no fd: the daemon answers EBADF at the
         * kernel's step, after the checks that come before it. */
        if (pfd >= 0 && fcntl(pfd, F_GETFD) >= 0) {
            memset(&ctl, 0, sizeof(ctl));
            msg.msg_control = ctl.buf;
            msg.msg_controllen = sizeof(ctl.buf);
            struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pfd, sizeof(int));
        }
    }
    /* HANDOFF_WAIT waits for the outcome, which the daemon's timer of the
     * hand-off decides: the wait may last as long as the longest hand-off.
     * Matched by number alone, as the daemon decodes it. */
    struct deadline d = _IOC_NR(req.cmd) == LU_CMD_SESSION_HANDOFF_WAIT
                            ? long_deadline(LU_HANDOFF_MAX_MS)
                            : call_deadline();
    int rc = send_msg(fd, &msg, d);
    unsigned char rbuf[LU_WIRE_MAX_ARG];
    struct lu_wire_reply rep;
    int newfd = -1;
    if (rc == 0) rc = recv_reply(fd, &rep, rbuf, sizeof(rbuf), &newfd, d);
    if (rc == -ETIMEDOUT) abandon(fd);
    if (rc) return rc;
    /* The daemon writes back min(size, ksize) bytes, as the kernel does;
     * more than was sent would overrun the caller's struct. */
    if (rep.arg_len > req.arg_len || (newfd >= 0 && req.arg_len < LU_FD_OFFSET + sizeof(int32_t))) {
        if (newfd >= 0) close(newfd);
        return -EPROTO;
    }
    if (rep.arg_len) memcpy(arg, rbuf, rep.arg_len);
    if (reply_len) *reply_len = rep.arg_len;
    if (new_fd)
        *new_fd = newfd;
    else if (newfd >= 0)
        close(newfd);
    return rep.err ? -rep.err : 0;
}

int lu_ioctl(int fd, unsigned long cmd, void* arg) {
    uint32_t flags = 0, size = 0, len = 0;
    if (!arg) {
        flags = LU_WIRE_FAULT_SIZE;
    } else {
        memcpy(&size, arg, sizeof(size));
        len = size < LU_WIRE_MAX_ARG ? size : LU_WIRE_MAX_ARG;
        /* copy_struct_from_user's tail check, for the bytes not sent. */
        const unsigned char* p = arg;
        for (size_t i = LU_WIRE_MAX_ARG; i < size; i++) {
            if (p[i]) {
                flags |= LU_WIRE_TAIL_NONZERO;
                break;
            }
        }
    }
    int newfd;
    int rc = lu_ioctl_wire(fd, cmd, flags, arg, len, NULL, &newfd);
    if (newfd >= 0) {
        int32_t v = newfd;
        memcpy((char*)arg + LU_FD_OFFSET, &v, sizeof(v));
    }
    return rc;
}

/* Fills a 64-byte name field: a name of 64 bytes or more is copied
 * unterminated, so the daemon gives the kernel's EINVAL for it. */
static void copy_name(__u8 dst[LIVEUPDATE_SESSION_NAME_LENGTH], const char* name) {
    size_t len = strnlen(name, LIVEUPDATE_SESSION_NAME_LENGTH);
    memcpy(dst, name, len);
}

int lu_create_session(int ctl, const char* name) {
    if (!name) return -EFAULT;
    struct liveupdate_ioctl_create_session a = {.size = sizeof(a), .fd = -1};
    copy_name(a.name, name);
    int rc = lu_ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a);
    return rc ? rc : a.fd;
}

int lu_retrieve_session(int ctl, const char* name) {
    if (!name) return -EFAULT;
    struct liveupdate_ioctl_retrieve_session a = {.size = sizeof(a), .fd = -1};
    copy_name(a.name, name);
    int rc = lu_ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a);
    return rc ? rc : a.fd;
}

int lu_preserve_fd(int session, int fd, uint64_t token) {
    struct liveupdate_session_preserve_fd a = {.size = sizeof(a), .fd = fd, .token = token};
    return lu_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &a);
}

int lu_retrieve_fd(int session, uint64_t token) {
    struct liveupdate_session_retrieve_fd a = {.size = sizeof(a), .fd = -1, .token = token};
    int rc = lu_ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &a);
    return rc ? rc : a.fd;
}

int lu_finish(int session) {
    struct liveupdate_session_finish a = {.size = sizeof(a)};
    return lu_ioctl(session, LIVEUPDATE_SESSION_FINISH, &a);
}

int lu_get_name(int session, char name[LIVEUPDATE_SESSION_NAME_LENGTH]) {
    if (!name) return -EFAULT;
    struct liveupdate_session_get_name a = {.size = sizeof(a)};
    int rc = lu_ioctl(session, LIVEUPDATE_SESSION_GET_NAME, &a);
    if (rc) return rc;
    memcpy(name, a.name, sizeof(a.name));
    name[LIVEUPDATE_SESSION_NAME_LENGTH - 1] = '\0'; /* the daemon's job, but cheap */
    return 0;
}

int lu_handoff(int session, int32_t next_pid, uint32_t timeout_ms, uint32_t flags) {
    struct lu_session_handoff a = {
        .size = sizeof(a), .flags = flags, .next_pid = next_pid, .timeout_ms = timeout_ms};
    return lu_ioctl(session, LU_SESSION_HANDOFF, &a);
}

int lu_handoff_wait(int session, int* reason) {
    struct lu_session_handoff_wait a = {.size = sizeof(a)};
    int rc = lu_ioctl(session, LU_SESSION_HANDOFF_WAIT, &a);
    if (rc) return rc;
    if (reason) *reason = a.reason;
    return (int)a.outcome;
}

int lu_handoff_abort(int session) {
    struct lu_session_handoff_abort a = {.size = sizeof(a)};
    return lu_ioctl(session, LU_SESSION_HANDOFF_ABORT, &a);
}

/* Reads a whole (sealed) memfd from offset 0 into a NUL-terminated string. */
static int read_whole(int fd, char** out) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    if (st.st_size < 0 || (unsigned long long)st.st_size >= SIZE_MAX) return -EFBIG;
    size_t size = (size_t)st.st_size;
    char* s = malloc(size + 1);
    if (!s) return -ENOMEM;
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, s + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EPROTO; /* shorter than fstat said */
            free(s);
            return -err;
        }
        got += (size_t)n;
    }
    s[size] = '\0';
    *out = s;
    return 0;
}

/* Where the value of "key" starts in the JSON text, or NULL. A key is a
 * quoted string followed by a colon; a match inside a string value would
 * have its quotes escaped. */
static const char* json_value(const char* json, const char* key) {
    size_t klen = strlen(key);
    for (const char* p = json; (p = strchr(p, '"')); p++) {
        if ((p > json && p[-1] == '\\') || strncmp(p + 1, key, klen) || p[1 + klen] != '"') continue;
        const char* v = p + klen + 2;
        v += strspn(v, " \t\r\n");
        if (*v != ':') continue;
        return v + 1 + strspn(v + 1, " \t\r\n");
    }
    return NULL;
}

/* The admin ops that wait for something (a new instance: "reboot",
 * "upgrade"; a hand-off's outcome: "update") take their "timeout" in
 * seconds, the daemon's default when absent; the others answer at once. */
static struct deadline admin_deadline(const char* json) {
    const char* t = json_value(json, "timeout");
    if (t) {
        char* end;
        double s = strtod(t, &end);
        if (end != t && s > 0) return long_deadline(s < 3600 ? (uint64_t)(s * 1000) + 1 : LU_HANDOFF_MAX_MS);
        return call_deadline(); /* the daemon refuses it at once */
    }
    const char* op = json_value(json, "op");
    if (op && (!strncmp(op, "\"reboot\"", 8) || !strncmp(op, "\"upgrade\"", 9) ||
               !strncmp(op, "\"update\"", 8)))
        return long_deadline(LU_ADMIN_DEFAULT_WAIT_MS);
    return call_deadline();
}

int lu_admin_request(const char* json, char** reply_json) {
    if (!json || !reply_json) return -EFAULT;
    *reply_json = NULL;
    size_t len = strlen(json);
    if (len > LU_WIRE_MAX_ADMIN) return -E2BIG;
    struct deadline d = admin_deadline(json);
    int fd = connect_to("/admin", d);
    if (fd < 0) return fd;

    /* The JSON text without its NUL: a message has its own length. */
    struct iovec iov = {(void*)json, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    int rc = send_msg(fd, &msg, d);
    struct lu_wire_reply rep;
    int memfd = -1;
    char* inline_json = malloc(LU_WIRE_MAX_ADMIN + 1);
    if (!inline_json) {
        close(fd);
        return -ENOMEM;
    }
    /* A daemon that refuses the connection (EBUSY: too many admin clients,
     * EACCES, EMFILE) answers at once and closes, so our send may fail:
     * its answer is still waiting to be read, and is the real outcome. */
    if (rc == 0 || rc == LU_DAEMON_DIED) {
        int sent = rc;
        rc = recv_reply(fd, &rep, inline_json, LU_WIRE_MAX_ADMIN, &memfd, d);
        if (rc == 0 && sent == LU_DAEMON_DIED && rep.err == 0) rc = LU_DAEMON_DIED;
    }
    close(fd);
    if (rc == 0 && rep.err) rc = -rep.err;
    if (rc == 0 && memfd >= 0) {
        rc = read_whole(memfd, reply_json);
    } else if (rc == 0 && rep.arg_len > 0) { /* the daemon had no memfd for it */
        inline_json[rep.arg_len] = '\0';
        *reply_json = inline_json;
        inline_json = NULL;
    } else if (rc == 0) {
        rc = -EPROTO;
    }
    if (memfd >= 0) close(memfd);
    free(inline_json);
    return rc;
}

/* s as a JSON string (quoted, escaped) at out; false if it does not fit. */
static bool json_string(const char* s, char* out, size_t len) {
    size_t at = 0;
    if (len < 3) return false;
    out[at++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        int n;
        if (c == '"' || c == '\\') n = snprintf(esc, sizeof esc, "\\%c", c);
        else if (c < 0x20) n = snprintf(esc, sizeof esc, "\\u%04x", c);
        else n = snprintf(esc, sizeof esc, "%c", c);
        if (at + (size_t)n + 2 > len) return false;
        memcpy(out + at, esc, (size_t)n);
        at += (size_t)n;
    }
    out[at++] = '"';
    out[at] = '\0';
    return true;
}

/* One live update of the daemon: the request, and its outcome from the
 * reply's "ok" and "errno" (the daemon writes compact JSON). */
static int admin_update(const char* op, const char* exec, unsigned timeout_s, unsigned flags,
                        char** reply_json) {
    if (reply_json) *reply_json = NULL;
    if (flags & ~LU_UPDATE_DRY_RUN) return -EINVAL;
    char path[LU_WIRE_MAX_ADMIN / 2] = "null";
    if (exec && !json_string(exec, path, sizeof path)) return -ENAMETOOLONG;
    char req[LU_WIRE_MAX_ADMIN];
    int n = snprintf(req, sizeof req, "{\"op\":\"%s\",\"timeout\":%u,\"dry_run\":%s%s%s}", op,
                     timeout_s ? timeout_s : 30, (flags & LU_UPDATE_DRY_RUN) ? "true" : "false",
                     exec ? ",\"exec\":" : "", exec ? path : "");
    if (n < 0 || (size_t)n >= sizeof req) return -E2BIG;
    char* reply = NULL;
    int rc = lu_admin_request(req, &reply);
    if (rc < 0) return rc;
    if (!strstr(reply, "\"ok\":true")) {
        const char* e = strstr(reply, "\"errno\":");
        long err = e ? strtol(e + 8, NULL, 10) : 0;
        rc = err > 0 && err < 4096 ? (int)-err : -EIO;
    }
    if (reply_json) *reply_json = reply;
    else free(reply);
    return rc;
}

int lu_admin_upgrade(const char* exec, unsigned timeout_s, unsigned flags, char** reply_json) {
    return admin_update("upgrade", exec, timeout_s, flags, reply_json);
}

int lu_admin_reboot(const char* exec, unsigned timeout_s, unsigned flags, char** reply_json) {
    return admin_update("reboot", exec, timeout_s, flags, reply_json);
}

void lu_free(void* p) {
    free(p);
}
