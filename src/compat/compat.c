/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libliveupdate-compat.so: LD_PRELOAD it into a program written for the
 * kernel's /dev/liveupdate, and liveupdated plays the kernel.
 *
 * open("/dev/liveupdate") becomes a connection to the daemon's control
 * socket (as lu_open); an ioctl on a LUO fd becomes one wire request
 * (lu_ioctl_wire), whatever its type byte, as the kernel's luo_ioctl and
 * luo_session_ioctl decode the number of every command that reaches them.
 * A LUO fd is known by its peer (is_luo_fd). Everything else goes to the
 * next definition (libc) untouched. Session fds are real sockets, so close,
 * dup, fcntl, fork and exec need no interposition; the ioctl test is
 * stateless (one getpeername per call), so nothing goes stale.
 *
 * The caller's argument is read and written with process_vm_readv/writev on
 * our own pid: a bad pointer is EFAULT at the kernel's step, never a crash.
 * Differences from the kernel: docs/kernel-differences.md, "Compat library".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <liveupdate/client.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stddef.h>
#include <unistd.h>

#include "wire.h"

#define LU_DEV_PATH "/dev/liveupdate"

/* ---- the next definitions (libc's), found once ---- */

static void* next_fn(const char* name, void** slot) {
    void* p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}

#define NEXT(name, type)                          \
    static type next_##name(void) {               \
        static void* slot;                        \
        return (type)next_fn(#name, &slot);       \
    }

typedef int (*open_fn)(const char*, int, ...);
typedef int (*openat_fn)(int, const char*, int, ...);
typedef int (*open2_fn)(const char*, int);
typedef int (*openat2_fn)(int, const char*, int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
NEXT(open, open_fn)
NEXT(open64, open_fn)
NEXT(openat, openat_fn)
NEXT(openat64, openat_fn)
NEXT(__open_2, open2_fn)
NEXT(__open64_2, open2_fn)
NEXT(__openat_2, openat2_fn)
NEXT(__openat64_2, openat2_fn)
NEXT(ioctl, ioctl_fn)

/* ---- open ---- */

/* True if the kernel's own /dev/liveupdate exists: then we step aside for
 * the life of the process. Checked once. */
static bool have_real_device(void) {
    static int state; /* 0 unknown, 1 present, 2 absent */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (!s) {
        int saved = errno;
        struct stat st;
        s = stat(LU_DEV_PATH, &st) == 0 ? 1 : 2;
        errno = saved;
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s == 1;
}

/* Ours to emulate: the exact path, absolute (so any dirfd), no real node. */
static bool is_ours(const char* path, int flags) {
    /* An O_PATH fd never reaches the device's open: nothing to emulate. */
    return path && strcmp(path, LU_DEV_PATH) == 0 && !(flags & O_PATH) && !have_real_device();
}

/* The kernel's open of the device node, as far as the flags go; then the
 * daemon's control connection. */
static int emulate_open(int flags) {
    if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
        errno = EEXIST; /* the node exists */
        return -1;
    }
    if (flags & O_DIRECTORY) { /* O_TMPFILE includes it */
        errno = ENOTDIR;
        return -1;
    }
    int saved = errno;
    int fd = lu_open(); /* ENOENT (no daemon), EBUSY, EIO, EACCES, ... */
    if (fd < 0) {
        errno = -fd;
        return -1;
    }
    /* The kernel gives FD_CLOEXEC only if asked; lu_open always sets it. */
    if (!(flags & O_CLOEXEC)) fcntl(fd, F_SETFD, 0);
    /* A status flag the caller can see with F_GETFL; ioctls still wait. */
    if (flags & O_NONBLOCK) fcntl(fd, F_SETFL, O_NONBLOCK);
    errno = saved;
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return __OPEN_NEEDS_MODE(flags) ? va_arg(ap, mode_t) : 0;
}

/* The variadic mode of the calling open*(): one expression, so each
 * interposer is its three lines of logic. */
#define TAKE_MODE(flags)                        \
    ({                                          \
        va_list ap_;                            \
        va_start(ap_, flags);                   \
        mode_t mode_ = mode_arg(flags, ap_);    \
        va_end(ap_);                            \
        mode_;                                  \
    })

int open(const char* path, int flags, ...) {
    mode_t mode = TAKE_MODE(flags);
    if (is_ours(path, flags)) return emulate_open(flags);
    return next_open()(path, flags, mode);
}

int open64(const char* path, int flags, ...) {
    mode_t mode = TAKE_MODE(flags);
    if (is_ours(path, flags)) return emulate_open(flags);
    return next_open64()(path, flags, mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
    mode_t mode = TAKE_MODE(flags);
    if (is_ours(path, flags)) return emulate_open(flags);
    return next_openat()(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char* path, int flags, ...) {
    mode_t mode = TAKE_MODE(flags);
    if (is_ours(path, flags)) return emulate_open(flags);
    return next_openat64()(dirfd, path, flags, mode);
}

/* The _FORTIFY_SOURCE entry points (flags without O_CREAT/O_TMPFILE). */
int __open_2(const char* path, int flags) {
    if (is_ours(path, flags)) return emulate_open(flags);
    return next___open_2()(path, flags);
}

int __open64_2(const char* path, int flags) {
    if (is_ours(path, flags)) return emulate_open(flags);
    return next___open64_2()(path, flags);
}

int __openat_2(int dirfd, const char* path, int flags) {
    if (is_ours(path, flags)) return emulate_open(flags);
    return next___openat_2()(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char* path, int flags) {
    if (is_ours(path, flags)) return emulate_open(flags);
    return next___openat64_2()(dirfd, path, flags);
}

/* ---- ioctl ---- */

/* A LUO fd, known by its peer, which survives dup, fork, exec and
 * SCM_RIGHTS (wire.h): a session fd's peer is the daemon's end of the
 * socketpair, bound to an abstract name with LU_WIRE_SESSION_PEER_PREFIX;
 * the control fd's peer is the control socket, bound by the relative name
 * LU_WIRE_CONTROL_PEER_NAME. One getpeername per call (ENOTSOCK at once for
 * other files; a SO_TYPE check only for a peer of that name): a program's
 * own AF_UNIX sockets are not taken for LUO's. */
static bool is_luo_fd(int fd) {
    struct sockaddr_un peer;
    socklen_t len = sizeof(peer);
    int saved = errno;
    bool ours = false;
    if (getpeername(fd, (struct sockaddr*)&peer, &len) == 0 && peer.sun_family == AF_UNIX &&
        len > offsetof(struct sockaddr_un, sun_path)) {
        size_t n = len - offsetof(struct sockaddr_un, sun_path);
        const char* session = LU_WIRE_SESSION_PEER_PREFIX;
        const char* control = LU_WIRE_CONTROL_PEER_NAME;
        if (peer.sun_path[0] == 0) {
            ours = n - 1 >= strlen(session) && memcmp(peer.sun_path + 1, session, strlen(session)) == 0;
        } else if (strnlen(peer.sun_path, n) == strlen(control) &&
                   memcmp(peer.sun_path, control, strlen(control)) == 0) {
            int type;
            socklen_t tlen = sizeof(type);
            ours = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_SEQPACKET;
        }
    }
    errno = saved;
    return ours;
}

/* The commands the VFS answers itself (do_vfs_ioctl) before a file's own
 * ioctl is called: they never reach luo_ioctl, so they go to the socket,
 * where the VFS answers them alike (docs/kernel-differences.md). */
static bool is_vfs_ioctl(uint32_t cmd) {
    switch (cmd) {
        case FIOCLEX:
        case FIONCLEX:
        case FIONBIO:
        case FIOASYNC:
        case FIOQSIZE:
        case FIFREEZE:
        case FITHAW:
        case FS_IOC_FIEMAP:
        case FIGETBSZ:
        case FICLONE:
        case FICLONERANGE:
        case FIDEDUPERANGE:
#ifdef FS_IOC_GETFSUUID
        case FS_IOC_GETFSUUID:
#endif
#ifdef FS_IOC_GETFSSYSFSPATH
        case FS_IOC_GETFSSYSFSPATH:
#endif
            return true;
        default:
            return false;
    }
}

/* Fault-safe copies between the caller's memory and ours: the number of
 * bytes copied, in address order, up to the first fault. */
static size_t read_user(void* dst, const void* src, size_t n) {
    struct iovec local = {dst, n}, remote = {(void*)src, n};
    ssize_t r = n ? process_vm_readv(getpid(), &local, 1, &remote, 1, 0) : 0;
    return r < 0 ? 0 : (size_t)r;
}

static size_t write_user(void* dst, const void* src, size_t n) {
    struct iovec local = {(void*)src, n}, remote = {dst, n};
    ssize_t r = n ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0) : 0;
    return r < 0 ? 0 : (size_t)r;
}

/* copy_struct_from_user's tail check for the bytes past the ones sent, in
 * address order: a non-zero byte before any fault is E2BIG, a fault first
 * is EFAULT. */
static uint32_t scan_tail(const unsigned char* p, size_t n) {
    unsigned char chunk[4096];
    while (n) {
        size_t want = n < sizeof(chunk) ? n : sizeof(chunk);
        size_t got = read_user(chunk, p, want);
        for (size_t i = 0; i < got; i++)
            if (chunk[i]) return LU_WIRE_TAIL_NONZERO;
        if (got < want) return LU_WIRE_FAULT_ARG;
        p += got;
        n -= got;
    }
    return 0;
}

/* Replies are not tagged, so one request is in flight per socket: threads
 * using the same session (through one fd or its dups) take turns. Keyed by
 * the socket's inode, which all dups share. */
#define LOCKS 64
static pthread_mutex_t locks[LOCKS] = {[0 ... LOCKS - 1] = PTHREAD_MUTEX_INITIALIZER};

/* A fork may happen while another thread holds a lock; that thread does
 * not exist in the child, so the child starts with all locks free. */
static void reset_locks(void) {
    for (int i = 0; i < LOCKS; i++) pthread_mutex_init(&locks[i], NULL);
}

__attribute__((constructor)) static void compat_init(void) {
    pthread_atfork(NULL, NULL, reset_locks);
}

static pthread_mutex_t* lock_for(int fd) {
    struct stat st;
    unsigned long key = fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : (unsigned long)fd;
    return &locks[key % LOCKS];
}

/* One LUO ioctl through the daemon, the kernel's steps (luo_ioctl,
 * copy_struct_from_user): what is read here only says which bytes could be
 * read; the daemon judges, the number first. */
static int compat_ioctl(int fd, uint32_t cmd, unsigned char* uarg) {
    unsigned char buf[LU_WIRE_MAX_ARG];
    uint32_t size, flags = 0, len = 0;
    if (read_user(&size, uarg, sizeof(size)) != sizeof(size)) {
        flags = LU_WIRE_FAULT_SIZE; /* get_user(size) */
    } else {
        uint32_t want = size < LU_WIRE_MAX_ARG ? size : LU_WIRE_MAX_ARG;
        /* Bytes up to the first fault; the daemon sees a short struct as
         * the fault, after its checks of what precedes it. */
        len = (uint32_t)read_user(buf, uarg, want);
        if (len < want)
            flags = LU_WIRE_FAULT_ARG;
        else if (size > LU_WIRE_MAX_ARG)
            flags = scan_tail(uarg + LU_WIRE_MAX_ARG, size - LU_WIRE_MAX_ARG);
    }

    uint32_t rlen = 0;
    int newfd = -1;
    pthread_mutex_t* m = lock_for(fd);
    pthread_mutex_lock(m);
    int rc = lu_ioctl_wire(fd, cmd, flags, buf, len, &rlen, &newfd);
    pthread_mutex_unlock(m);

    if (rc == 0 && (rlen || newfd >= 0)) {
        if (newfd >= 0) {
            int32_t v = newfd; /* the fd field, at offset 4 in every struct */
            memcpy(buf + 4, &v, sizeof(v));
            if (rlen < 8) rlen = 8;
        }
        /* copy_to_user failed: the kernel's side effects follow from
         * releasing the new file (the fput after a failed
         * luo_ucmd_respond): a created session is gone, a retrieved one is
         * finished, a retrieved file's reference is dropped; a preserved
         * file stays preserved. */
        if (write_user(uarg, buf, rlen) != rlen) {
            if (newfd >= 0) close(newfd);
            rc = -EFAULT;
        }
    }
    if (rc) {
        errno = -rc;
        return -1;
    }
    return 0;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    /* The kernel's command is an unsigned int. */
    uint32_t cmd = (uint32_t)request;
    if (!is_vfs_ioctl(cmd) && is_luo_fd(fd)) {
        int saved = errno;
        int rc = compat_ioctl(fd, cmd, arg);
        if (rc == 0) errno = saved;
        return rc;
    }
    ioctl_fn next = next_ioctl();
    if (!next) {
        errno = ENOSYS;
        return -1;
    }
    return next(fd, request, arg);
}
