/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A LUO agent written for the kernel: it uses only open/ioctl/close on
 * /dev/liveupdate and the uAPI header (include/liveupdate/uapi.h mirrors
 * <linux/liveupdate.h>), so it runs unchanged on a kernel with LUO. The
 * conformance suite (tests/compat/) runs it with LD_PRELOAD of
 * libliveupdate-compat.so against liveupdated. Expectations come from the
 * kernel's documented uAPI behaviour (docs/kernel-semantics.md), not from
 * any kernel source.
 *
 *   luo_agent single CASE              one boot; exit 0 when every check holds
 *   luo_agent stage1 SCENARIO STATE    create and preserve, hand the session
 *                                      fds to a holder child, print
 *                                      "HOLDER <pid>" and exit
 *   luo_agent stage2 SCENARIO STATE    after the reboot: retrieve and verify
 *   luo_agent exec_child FD NAME       used by the exec case
 *
 * Cases that reboot run $LU_REBOOT (on a kernel: kexec -e; here:
 * liveupdatectl reboot) with system().
 *
 * A failed check prints where and why on stderr and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liveupdate/uapi.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* glibc's _FORTIFY_SOURCE entry points, called directly to cover them. */
extern int __open_2(const char* path, int flags);
extern int __open64_2(const char* path, int flags);
extern int __openat_2(int dirfd, const char* path, int flags);
extern int __openat64_2(int dirfd, const char* path, int flags);

#define DEV "/dev/liveupdate"

/* ---- checks ---- */

#define FAIL(...)                                        \
    do {                                                 \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                    \
        fputc('\n', stderr);                             \
        exit(1);                                         \
    } while (0)

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) FAIL("CHECK(%s) failed (errno: %s)", #cond, strerror(errno)); \
    } while (0)

/* The call succeeds (returns >= 0). */
#define OK(call)                                                              \
    do {                                                                      \
        errno = 0;                                                            \
        long r_ = (long)(call);                                               \
        if (r_ < 0) FAIL("%s: want success, got %ld (%s)", #call, r_, strerror(errno)); \
    } while (0)

/* The call fails with -1 and errno e. */
#define ERR(call, e)                                                                   \
    do {                                                                               \
        errno = 0;                                                                     \
        long r_ = (long)(call);                                                        \
        int e_ = errno;                                                                \
        if (r_ != -1 || e_ != (e))                                                     \
            FAIL("%s: want -1 (%s), got %ld (%s)", #call, strerror(e), r_,            \
                 r_ == -1 ? strerror(e_) : "no error");                                \
    } while (0)

static long page_size(void) {
    return sysconf(_SC_PAGESIZE);
}

static int cloexec(int fd) {
    int f = fcntl(fd, F_GETFD);
    CHECK(f >= 0);
    return (f & FD_CLOEXEC) != 0;
}

/* ---- the uAPI, one helper per ioctl (-1 and errno on failure) ---- */

static void set_name(__u8 dst[LIVEUPDATE_SESSION_NAME_LENGTH], const char* name) {
    size_t n = strlen(name);
    memcpy(dst, name, n < LIVEUPDATE_SESSION_NAME_LENGTH ? n : LIVEUPDATE_SESSION_NAME_LENGTH);
}

static int dev_open(void) {
    int fd = open(DEV, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0);
    return fd;
}

static int create_session(int ctl, const char* name) {
    struct liveupdate_ioctl_create_session a = {.size = sizeof(a), .fd = -1};
    set_name(a.name, name);
    if (ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a) < 0) return -1;
    return a.fd;
}

static int retrieve_session(int ctl, const char* name) {
    struct liveupdate_ioctl_retrieve_session a = {.size = sizeof(a), .fd = -1};
    set_name(a.name, name);
    if (ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a) < 0) return -1;
    return a.fd;
}

static int preserve(int s, int fd, __u64 token) {
    struct liveupdate_session_preserve_fd a = {.size = sizeof(a), .fd = fd, .token = token};
    return ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &a);
}

static int retrieve_fd(int s, __u64 token) {
    struct liveupdate_session_retrieve_fd a = {.size = sizeof(a), .fd = -1, .token = token};
    if (ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &a) < 0) return -1;
    return a.fd;
}

static int finish(int s) {
    struct liveupdate_session_finish a = {.size = sizeof(a)};
    return ioctl(s, LIVEUPDATE_SESSION_FINISH, &a);
}

/* The session's name, or "" (with errno) on failure. */
static const char* get_name(int s) {
    static __thread char name[LIVEUPDATE_SESSION_NAME_LENGTH + 1];
    struct liveupdate_session_get_name a = {.size = sizeof(a)};
    if (ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &a) < 0) return "";
    memcpy(name, a.name, LIVEUPDATE_SESSION_NAME_LENGTH);
    name[LIVEUPDATE_SESSION_NAME_LENGTH] = '\0';
    return name;
}

#define NAME_IS(s, want)                                                              \
    do {                                                                              \
        const char* got_ = get_name(s);                                               \
        if (strcmp(got_, (want)) != 0)                                                \
            FAIL("GET_NAME: want \"%s\", got \"%s\" (%s)", (want), got_, strerror(errno)); \
    } while (0)

/* ---- files ---- */

static void write_all(int fd, const void* data, size_t n, off_t off) {
    const char* p = data;
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
        off += w;
    }
}

/* A memfd holding n bytes of data, position 0. */
static int make_memfd(const void* data, size_t n) {
    int fd = memfd_create("luo-agent", MFD_CLOEXEC);
    CHECK(fd >= 0);
    if (n) write_all(fd, data, n, 0);
    return fd;
}

static int memfd_str(const char* s) {
    return make_memfd(s, strlen(s));
}

/* The whole file (malloc'd, NUL-terminated), read without moving the
 * position; its size in *n. */
static char* contents(int fd, size_t* n) {
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    char* b = malloc((size_t)st.st_size + 1);
    CHECK(b);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    b[got] = '\0';
    *n = got;
    return b;
}

#define CONTENT_IS(fd, want)                                                            \
    do {                                                                                \
        size_t n_;                                                                      \
        char* c_ = contents(fd, &n_);                                                   \
        if (n_ != strlen(want) || memcmp(c_, (want), n_) != 0)                          \
            FAIL("content: want \"%s\", got \"%.*s\"", (want), (int)(n_ > 80 ? 80 : n_), c_); \
        free(c_);                                                                       \
    } while (0)

static uint64_t fnv1a(const unsigned char* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* n bytes of memory followed by an inaccessible page: returns a pointer p
 * such that p[0..n) is readable and writable and p[n] faults. */
static unsigned char* before_guard(size_t n) {
    long pg = page_size();
    size_t pages = (n + (size_t)pg - 1) / (size_t)pg + 1;
    unsigned char* base = mmap(NULL, pages * (size_t)pg, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(base != MAP_FAILED);
    CHECK(mprotect(base + (pages - 1) * (size_t)pg, (size_t)pg, PROT_NONE) == 0);
    return base + (pages - 1) * (size_t)pg - n;
}

/* A page holding a copy of the n bytes at src, then made read-only. */
static void* read_only_copy(const void* src, size_t n) {
    void* p = mmap(NULL, (size_t)page_size(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memcpy(p, src, n);
    CHECK(mprotect(p, (size_t)page_size(), PROT_READ) == 0);
    return p;
}

/* ======================= single boot ======================= */

static void case_open_close(void) {
    int fd = open(DEV, O_RDWR);
    CHECK(fd >= 0);
    CHECK(!cloexec(fd)); /* FD_CLOEXEC only if asked */
    OK(close(fd));
    fd = open(DEV, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0 && cloexec(fd));
    OK(close(fd));
    fd = open(DEV, O_RDWR);
    CHECK(fd >= 0);
    OK(close(fd));
}

/* The entry points one at a time (each must be closed for the next). */
static void case_open_variants(void) {
    int tmp = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(tmp >= 0);
    int fd;
#define ONE(expr)                           \
    do {                                    \
        fd = (expr);                        \
        if (fd < 0) FAIL("%s: %s", #expr, strerror(errno)); \
        OK(close(fd));                      \
    } while (0)
    ONE(openat(AT_FDCWD, DEV, O_RDWR));
    ONE(openat(tmp, DEV, O_RDWR)); /* absolute: the dirfd does not matter */
    ONE(open64(DEV, O_RDWR));
    ONE(openat64(tmp, DEV, O_RDWR));
    ONE(__open_2(DEV, O_RDWR));
    ONE(__open64_2(DEV, O_RDWR));
    ONE(__openat_2(tmp, DEV, O_RDWR));
    ONE(__openat64_2(AT_FDCWD, DEV, O_RDWR));
    ONE(open(DEV, O_RDONLY));
    ONE(open(DEV, O_WRONLY));
    ONE(open(DEV, O_RDWR | O_CREAT, 0600)); /* the node exists: opened */
#undef ONE
    /* O_NONBLOCK is a status flag of the file; ioctls complete anyway. */
    fd = open(DEV, O_RDWR | O_NONBLOCK);
    CHECK(fd >= 0 && (fcntl(fd, F_GETFL) & O_NONBLOCK));
    int s = create_session(fd, "nonblock");
    CHECK(s >= 0);
    NAME_IS(s, "nonblock");
    OK(close(s));
    OK(close(fd));
    /* What the existing character device node decides. */
    ERR(open(DEV, O_RDWR | O_CREAT | O_EXCL, 0600), EEXIST);
    ERR(open(DEV, O_RDONLY | O_DIRECTORY), ENOTDIR);
    /* Other paths are untouched. */
    fd = open("/dev/null", O_RDONLY);
    CHECK(fd >= 0);
    OK(close(fd));
    ERR(open("/dev/liveupdate-nonexistent", O_RDONLY), ENOENT);
    OK(close(tmp));
}

static void case_exclusive(void) {
    int a = open(DEV, O_RDWR);
    CHECK(a >= 0);
    ERR(open(DEV, O_RDWR), EBUSY);
    /* Exclusivity belongs to the open file description: a dup keeps it. */
    int d = dup(a);
    CHECK(d >= 0);
    OK(close(a));
    ERR(open(DEV, O_RDWR), EBUSY);
    OK(close(d));
    a = open(DEV, O_RDWR);
    CHECK(a >= 0);
    /* ... and so does a forked child. */
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        char c;
        while (read(p[0], &c, 1) > 0) {
        }
        _exit(0);
    }
    close(p[0]);
    OK(close(a));
    ERR(open(DEV, O_RDWR), EBUSY);
    close(p[1]); /* the child exits, closing the last reference */
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    a = open(DEV, O_RDWR);
    CHECK(a >= 0);
    OK(close(a));
}

static void case_no_daemon(void) {
    ERR(open(DEV, O_RDWR), ENOENT); /* as a kernel without LUO */
}

static void case_session_names(void) {
    int ctl = dev_open();
    int a = create_session(ctl, "alpha");
    CHECK(a >= 0);
    ERR(create_session(ctl, "alpha"), EEXIST);
    int b = create_session(ctl, "beta");
    CHECK(b >= 0);
    ERR(create_session(ctl, ""), EINVAL);
    char longname[LIVEUPDATE_SESSION_NAME_LENGTH + 1];
    memset(longname, 'x', LIVEUPDATE_SESSION_NAME_LENGTH);
    longname[LIVEUPDATE_SESSION_NAME_LENGTH] = '\0';
    ERR(create_session(ctl, longname), EINVAL); /* 64 bytes, no NUL */
    longname[LIVEUPDATE_SESSION_NAME_LENGTH - 1] = '\0';
    int c = create_session(ctl, longname); /* 63 characters */
    CHECK(c >= 0);
    NAME_IS(c, longname);
    NAME_IS(a, "alpha");
    NAME_IS(b, "beta");
    /* GET_NAME writes the name and its NUL; the caller's bytes after it stay. */
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    memset(g.name, 0xAA, sizeof(g.name));
    OK(ioctl(b, LIVEUPDATE_SESSION_GET_NAME, &g));
    CHECK(memcmp(g.name, "beta", 5) == 0);
    for (size_t i = 5; i < sizeof(g.name); i++) CHECK(g.name[i] == 0xAA);
    /* A name freed by a close can be reused at once. */
    OK(close(a));
    a = create_session(ctl, "alpha");
    CHECK(a >= 0);
    /* No live update happened: nothing to retrieve. */
    ERR(retrieve_session(ctl, "alpha"), ENOENT);
    ERR(retrieve_session(ctl, "never"), ENOENT);
    /* Sessions do not depend on the control fd. */
    OK(close(ctl));
    NAME_IS(a, "alpha");
    OK(close(a));
    OK(close(b));
    OK(close(c));
}

static void case_preserve_memfds(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "memfds");
    CHECK(s >= 0);
    int m = memfd_str("one memfd");
    OK(preserve(s, m, 1));
    OK(close(m));
    /* Several, a mix of empty and full ones, any u64 token. */
    __u64 tokens[] = {0, 2, 3, 1000, 0x8000000000000000ull, ~0ull};
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "memfd %zu", i);
        m = i % 2 ? memfd_str(buf) : make_memfd(NULL, 0);
        OK(preserve(s, m, tokens[i]));
        OK(close(m));
    }
    OK(close(s));
    OK(close(ctl));
}

static void case_preserve_unsupported(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "unsupported");
    CHECK(s >= 0);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    CHECK(null >= 0);
    ERR(preserve(s, null, 1), ENOENT);
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    ERR(preserve(s, p[0], 2), ENOENT);
    ERR(preserve(s, s, 3), ENOENT); /* LUO's own objects */
    ERR(preserve(s, ctl, 4), ENOENT);
    ERR(preserve(s, -1, 5), EBADF);
    int closed = dup(null);
    close(closed);
    ERR(preserve(s, closed, 6), EBADF);
    /* The token check comes first. */
    int m = memfd_str("x");
    OK(preserve(s, m, 7));
    ERR(preserve(s, -1, 7), EEXIST);
    OK(close(m));
    close(p[0]);
    close(p[1]);
    close(null);
    OK(close(s));
    OK(close(ctl));
}

static void case_double_preserve(void) {
    int ctl = dev_open();
    int s1 = create_session(ctl, "double-1");
    int s2 = create_session(ctl, "double-2");
    CHECK(s1 >= 0 && s2 >= 0);
    int m = memfd_str("preserved once");
    OK(preserve(s1, m, 1));
    ERR(preserve(s1, m, 1), EEXIST);
    ERR(preserve(s1, m, 2), EBUSY); /* same file, other token */
    ERR(preserve(s2, m, 1), EBUSY); /* same file, other session */
    int d = dup(m);
    CHECK(d >= 0);
    ERR(preserve(s2, d, 3), EBUSY); /* same file through another fd */
    /* Closing the session unpreserves: the file is free again at once. */
    OK(close(s1));
    OK(preserve(s2, m, 1));
    OK(close(d));
    OK(close(m));
    OK(close(s2));
    OK(close(ctl));
}

#define MANY_SESSIONS 2000
static void case_many_sessions(void) {
    int ctl = dev_open();
    static int s[MANY_SESSIONS];
    char name[32];
    for (int i = 0; i < MANY_SESSIONS; i++) {
        snprintf(name, sizeof(name), "many-%04d", i);
        s[i] = create_session(ctl, name);
        if (s[i] < 0) FAIL("create %s: %s", name, strerror(errno));
    }
    for (int i = 0; i < MANY_SESSIONS; i += 97) {
        snprintf(name, sizeof(name), "many-%04d", i);
        NAME_IS(s[i], name);
    }
    ERR(create_session(ctl, "many-1999"), EEXIST);
    for (int i = 0; i < MANY_SESSIONS; i++) OK(close(s[i]));
    int again = create_session(ctl, "many-1999");
    CHECK(again >= 0);
    OK(close(again));
    OK(close(ctl));
}

#define MANY_FILES 500
static void case_many_files(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "many-files");
    CHECK(s >= 0);
    for (int i = 0; i < MANY_FILES; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "file %d", i);
        int m = memfd_str(buf);
        if (preserve(s, m, (__u64)i) < 0) FAIL("preserve %d: %s", i, strerror(errno));
        OK(close(m));
    }
    int m = memfd_str("one more");
    ERR(preserve(s, m, MANY_FILES - 1), EEXIST);
    OK(preserve(s, m, MANY_FILES));
    OK(close(m));
    OK(close(s));
    OK(close(ctl));
}

/* A buffer for a struct and a tail, aligned like the structs. */
union argbuf {
    __u64 align;
    unsigned char b[8192];
    struct liveupdate_ioctl_create_session create;
    struct liveupdate_session_preserve_fd preserve;
    struct liveupdate_session_retrieve_fd retrieve;
    struct liveupdate_session_finish finish;
    struct liveupdate_session_get_name get_name;
};

static void case_errno_range(void) {
    int ctl = dev_open();
    static union argbuf a;
    a.create.size = sizeof(a.create);
    set_name(a.create.name, "range");
    ERR(ioctl(ctl, _IO(LIVEUPDATE_IOCTL_TYPE, 2), &a), EINVAL);
    ERR(ioctl(ctl, _IO(LIVEUPDATE_IOCTL_TYPE, 0x40), &a), EINVAL);
    ERR(ioctl(ctl, _IO(LIVEUPDATE_IOCTL_TYPE, 0xff), &a), EINVAL);
    /* The range check comes before reading the argument. */
    ERR(ioctl(ctl, _IO(LIVEUPDATE_IOCTL_TYPE, 2), NULL), EINVAL);
    ERR(ioctl(ctl, _IO(LIVEUPDATE_IOCTL_TYPE, 2), (void*)1), EINVAL);
    int s = create_session(ctl, "range-session");
    CHECK(s >= 0);
    memset(&a, 0, sizeof(a));
    a.get_name.size = sizeof(a.get_name);
    ERR(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x3f), &a), EINVAL);
    ERR(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x44), &a), EINVAL);
    ERR(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x00), &a), EINVAL); /* a control nr */
    ERR(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x44), (void*)1), EINVAL);
    /* Nothing was created by the failures. */
    int r = create_session(ctl, "range");
    CHECK(r >= 0);
    OK(close(r));
    OK(close(s));
    OK(close(ctl));
}

static void case_errno_enotty(void) {
    int ctl = dev_open();
    static union argbuf a;
    a.create.size = sizeof(a.create);
    set_name(a.create.name, "enotty");
    const unsigned long create_iowr =
        _IOWR(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION, struct liveupdate_ioctl_create_session);
    ERR(ioctl(ctl, create_iowr, &a), ENOTTY);
    ERR(ioctl(ctl, _IOW(LIVEUPDATE_IOCTL_TYPE, 1, struct liveupdate_ioctl_retrieve_session), &a),
        ENOTTY);
    a.create.size = 0; /* ENOTTY comes before the size check */
    ERR(ioctl(ctl, create_iowr, &a), ENOTTY);
    int s = create_session(ctl, "enotty");
    CHECK(s >= 0); /* the failures created nothing */
    memset(&a, 0, sizeof(a));
    a.get_name.size = sizeof(a.get_name);
    ERR(ioctl(s, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x43, struct liveupdate_session_get_name), &a), ENOTTY);
    ERR(ioctl(s, _IOR(LIVEUPDATE_IOCTL_TYPE, 0x40, struct liveupdate_session_preserve_fd), &a),
        ENOTTY);
    /* ... and before the session-type check (FINISH on an outgoing one). */
    a.finish.size = sizeof(a.finish);
    ERR(ioctl(s, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x42, struct liveupdate_session_finish), &a), ENOTTY);
    /* Another type with an in-range nr (TCGETS: nr 1) on the control fd:
     * the size is read, then the full command differs. (On a session fd the
     * kernel answers EINVAL from the nr alone: case_foreign_types.) */
    struct termios t;
    memset(&t, 0, sizeof(t));
    ERR(ioctl(ctl, TCGETS, &t), ENOTTY);
    OK(close(s));
    OK(close(ctl));
}

static void case_errno_size(void) {
    int ctl = dev_open();
    static union argbuf a;
    set_name(a.create.name, "size");
    __u32 small[] = {0, 4, 8, 71};
    for (size_t i = 0; i < 4; i++) {
        a.create.size = small[i];
        ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), EINVAL);
        ERR(ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a), EINVAL);
    }
    int s = create_session(ctl, "size");
    CHECK(s >= 0);
    int m = memfd_str("size");
    memset(&a, 0, sizeof(a));
    a.preserve.fd = m;
    a.preserve.token = 1;
    a.preserve.size = 15;
    ERR(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &a), EINVAL);
    a.preserve.size = 0;
    ERR(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &a), EINVAL);
    memset(&a, 0, sizeof(a));
    a.get_name.size = 71;
    ERR(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &a), EINVAL);
    /* The file was not preserved by the failures. */
    OK(preserve(s, m, 1));
    OK(close(m));
    OK(close(s));
    OK(close(ctl));
}

static void case_errno_e2big(void) {
    int ctl = dev_open();
    static union argbuf a;
    /* A tail past the known struct: non-zero is E2BIG, zero is accepted. */
    set_name(a.create.name, "e2big");
    a.create.size = sizeof(a.create) + 8;
    a.b[sizeof(a.create) + 7] = 1;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), E2BIG);
    a.b[sizeof(a.create) + 7] = 0;
    a.b[sizeof(a.create)] = 1;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), E2BIG);
    a.b[sizeof(a.create)] = 0;
    OK(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a));
    int s1 = a.create.fd;
    NAME_IS(s1, "e2big");
    /* A long tail. */
    memset(&a, 0, sizeof(a));
    set_name(a.create.name, "e2big-long");
    a.create.size = sizeof(a.b);
    a.b[sizeof(a.b) - 1] = 1;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), E2BIG);
    a.b[sizeof(a.b) - 1] = 0;
    a.b[2000] = 0x80;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), E2BIG);
    a.b[2000] = 0;
    OK(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &a));
    int s2 = a.create.fd;
    NAME_IS(s2, "e2big-long");
    /* Session ioctls: E2BIG comes before the operation's own errors. */
    memset(&a, 0, sizeof(a));
    a.preserve.size = sizeof(a.preserve) + 8;
    a.preserve.fd = -1;
    a.b[sizeof(a.preserve) + 3] = 1;
    ERR(ioctl(s1, LIVEUPDATE_SESSION_PRESERVE_FD, &a), E2BIG);
    memset(&a, 0, sizeof(a));
    a.get_name.size = sizeof(a.get_name) + 1;
    a.b[sizeof(a.get_name)] = 1;
    ERR(ioctl(s1, LIVEUPDATE_SESSION_GET_NAME, &a), E2BIG);
    a.b[sizeof(a.get_name)] = 0;
    OK(ioctl(s1, LIVEUPDATE_SESSION_GET_NAME, &a));
    CHECK(strcmp((char*)a.get_name.name, "e2big") == 0);
    OK(close(s1));
    OK(close(s2));
    OK(close(ctl));
}

static void case_errno_session_type(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "outgoing");
    CHECK(s >= 0);
    static union argbuf a;
    /* FINISH and RETRIEVE_FD need an incoming session; the type check
     * comes before the size check. */
    __u32 sizes[] = {0, 4, 8, 16, 100};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        memset(&a, 0, sizeof(a));
        a.finish.size = sizes[i];
        ERR(ioctl(s, LIVEUPDATE_SESSION_FINISH, &a), EINVAL);
        a.retrieve.size = sizes[i];
        a.retrieve.token = 1;
        ERR(ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &a), EINVAL);
    }
    /* ... but after reading the size. */
    ERR(ioctl(s, LIVEUPDATE_SESSION_FINISH, (void*)1), EFAULT);
    ERR(ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, NULL), EFAULT);
    /* GET_NAME works on both types. */
    NAME_IS(s, "outgoing");
    OK(close(s));
    OK(close(ctl));
}

static void case_errno_efault(void) {
    int ctl = dev_open();
    const unsigned long create_iowr =
        _IOWR(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION, struct liveupdate_ioctl_create_session);
    /* get_user(size) faults. */
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, (void*)1), EFAULT);
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, NULL), EFAULT);
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, (void*)1), EFAULT);
    ERR(ioctl(ctl, create_iowr, (void*)1), EFAULT); /* before the command check */

    /* The size is readable, the struct is not. */
    unsigned char* p = before_guard(8);
    __u32 size = sizeof(struct liveupdate_ioctl_create_session);
    memcpy(p, &size, sizeof(size));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), EFAULT);
    ERR(ioctl(ctl, create_iowr, p), ENOTTY); /* the command check comes first */
    size = 8;
    memcpy(p, &size, sizeof(size));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), EINVAL); /* so does the size check */

    /* The tail check reads in address order: a fault first is EFAULT, a
     * non-zero byte first is E2BIG. */
    struct liveupdate_ioctl_create_session c = {.size = sizeof(c) + 200};
    set_name(c.name, "efault-tail");
    p = before_guard(sizeof(c) + 8);
    memset(p, 0, sizeof(c) + 8);
    memcpy(p, &c, sizeof(c));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), EFAULT);
    p[sizeof(c) + 5] = 1;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), E2BIG);
    /* The same past the first kilobyte. */
    c.size = 3000;
    p = before_guard(2048);
    memset(p, 0, 2048);
    memcpy(p, &c, sizeof(c));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), EFAULT);
    p[1500] = 1;
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, p), E2BIG);

    /* The reply cannot be written: CREATE_SESSION fails with EFAULT and the
     * session does not exist. */
    c.size = sizeof(c);
    c.fd = -1;
    memset(c.name, 0, sizeof(c.name));
    set_name(c.name, "efault-ro");
    void* ro = read_only_copy(&c, sizeof(c));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, ro), EFAULT);
    int s = create_session(ctl, "efault-ro");
    CHECK(s >= 0); /* not EEXIST */

    /* Session ioctls. */
    ERR(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, (void*)1), EFAULT);
    ERR(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, NULL), EFAULT);
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    void* ro_g = read_only_copy(&g, sizeof(g));
    ERR(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, ro_g), EFAULT);
    /* PRESERVE_FD whose reply cannot be written: EFAULT, but preserved. */
    int m = memfd_str("preserved despite EFAULT");
    struct liveupdate_session_preserve_fd pf = {.size = sizeof(pf), .fd = m, .token = 9};
    void* ro_pf = read_only_copy(&pf, sizeof(pf));
    ERR(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, ro_pf), EFAULT);
    ERR(preserve(s, m, 9), EEXIST);
    ERR(preserve(s, m, 10), EBUSY);
    OK(close(m));
    OK(close(s));
    OK(close(ctl));
}

static void case_get_name_reserved(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "reserved");
    CHECK(s >= 0);
    struct liveupdate_session_get_name g = {.size = sizeof(g), .reserved = 1};
    ERR(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
    g.reserved = 0x80000000u;
    ERR(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
    g.reserved = 0;
    OK(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g));
    CHECK(strcmp((char*)g.name, "reserved") == 0);
    OK(close(s));
    OK(close(ctl));
}

static void case_fd_writeback(void) {
    int ctl = open(DEV, O_RDWR); /* without O_CLOEXEC */
    CHECK(ctl >= 0 && !cloexec(ctl));
    struct liveupdate_ioctl_create_session c = {.size = sizeof(c), .fd = 12345};
    set_name(c.name, "writeback");
    OK(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &c));
    CHECK(c.fd >= 0 && c.fd != 12345);
    CHECK(cloexec(c.fd)); /* always, whatever the control fd has */
    CHECK(c.size == sizeof(c));
    CHECK(strcmp((char*)c.name, "writeback") == 0);
    NAME_IS(c.fd, "writeback");
    /* A failure writes nothing back. */
    struct liveupdate_ioctl_create_session dup_c = {.size = sizeof(dup_c), .fd = 777};
    set_name(dup_c.name, "writeback");
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_CREATE_SESSION, &dup_c), EEXIST);
    CHECK(dup_c.fd == 777);
    /* PRESERVE_FD writes its struct back unchanged. */
    int m = memfd_str("wb");
    struct liveupdate_session_preserve_fd pf = {.size = sizeof(pf), .fd = m, .token = 0x1122334455667788ull};
    OK(ioctl(c.fd, LIVEUPDATE_SESSION_PRESERVE_FD, &pf));
    CHECK(pf.size == sizeof(pf) && pf.fd == m && pf.token == 0x1122334455667788ull);
    OK(close(m));
    OK(close(c.fd));
    OK(close(ctl));
}

static void case_dup_fork(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "dupfork");
    CHECK(s >= 0);
    int d = dup(s);
    CHECK(d >= 0);
    OK(close(s));
    NAME_IS(d, "dupfork");
    int d2 = fcntl(d, F_DUPFD, 100);
    int d3 = fcntl(d, F_DUPFD_CLOEXEC, 200);
    CHECK(d2 >= 100 && d3 >= 200);
    NAME_IS(d2, "dupfork");
    NAME_IS(d3, "dupfork");
    int m = memfd_str("preserved by the child");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (preserve(d2, m, 1) != 0) _exit(2);
        if (strcmp(get_name(d3), "dupfork") != 0) _exit(3);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
    if (WEXITSTATUS(st) != 0) FAIL("child exited %d", WEXITSTATUS(st));
    /* The child's preserve is in the shared session, which outlived it. */
    ERR(preserve(d, m, 1), EEXIST);
    NAME_IS(d, "dupfork");
    OK(close(d));
    OK(close(d2));
    ERR(create_session(ctl, "dupfork"), EEXIST); /* d3 still holds it */
    OK(close(d3));
    int again = create_session(ctl, "dupfork");
    CHECK(again >= 0);
    OK(close(again));
    OK(close(m));
    OK(close(ctl));
}

static void case_exec(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "exec-session");
    CHECK(s >= 0);
    CHECK(fcntl(s, F_SETFD, 0) == 0); /* inherit it across exec */
    char fdstr[16];
    snprintf(fdstr, sizeof(fdstr), "%d", s);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "luo_agent", "exec_child", fdstr, "exec-session", (char*)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
    if (WEXITSTATUS(st) != 0) FAIL("exec'd child exited %d", WEXITSTATUS(st));
    int m = memfd_str("other");
    ERR(preserve(s, m, 77), EEXIST); /* the exec'd child preserved token 77 */
    OK(close(m));
    OK(close(s));
    OK(close(ctl));
}

static int exec_child(int fd, const char* name) {
    NAME_IS(fd, name);
    int m = memfd_str("preserved after exec");
    OK(preserve(fd, m, 77));
    return 0;
}

/* Several threads on one session, through one fd and a dup of it. */
#define THREADS 4
#define ROUNDS 300
static int thread_fds[2];

static void* thread_main(void* arg) {
    long t = (long)arg;
    int fd = thread_fds[t % 2];
    for (int i = 0; i < ROUNDS; i++) {
        if (t < 2) {
            if (strcmp(get_name(fd), "threads") != 0) return (void*)"GET_NAME gave another answer";
        } else {
            int m = memfd_str("t");
            int r = preserve(fd, m, (__u64)(t * 100000 + i));
            close(m);
            if (r != 0) return (void*)"PRESERVE_FD failed";
        }
    }
    return NULL;
}

static void case_threads(void) {
    int ctl = dev_open();
    thread_fds[0] = create_session(ctl, "threads");
    CHECK(thread_fds[0] >= 0);
    thread_fds[1] = dup(thread_fds[0]);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++) CHECK(pthread_create(&th[t], NULL, thread_main, (void*)t) == 0);
    for (int t = 0; t < THREADS; t++) {
        void* r;
        CHECK(pthread_join(th[t], &r) == 0);
        if (r) FAIL("thread %d: %s", t, (const char*)r);
    }
    int m = memfd_str("t");
    ERR(preserve(thread_fds[0], m, 2 * 100000 + ROUNDS - 1), EEXIST);
    ERR(preserve(thread_fds[0], m, 3 * 100000 + 0), EEXIST);
    OK(close(m));
    OK(close(thread_fds[0]));
    OK(close(thread_fds[1]));
    OK(close(ctl));
}

/* LUO ioctl numbers on other files are those files' business. */
static void case_passthrough(void) {
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    int m = memfd_str("not a session");
    ERR(ioctl(m, LIVEUPDATE_SESSION_GET_NAME, &g), ENOTTY);
    ERR(ioctl(-1, LIVEUPDATE_SESSION_GET_NAME, &g), EBADF);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    ERR(ioctl(sv[0], LIVEUPDATE_SESSION_GET_NAME, &g), ENOTTY);
    /* Other ioctls work as ever. */
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    CHECK(write(p[1], "abc", 3) == 3);
    int n = -1;
    OK(ioctl(p[0], FIONREAD, &n));
    CHECK(n == 3);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    close(m);
}

/* ============ kernel releases (docs/kernel-differences.md) ============ */

/* Where v7.1 and v7.2 differ; case_release_7_1 and case_release_7_2 hold
 * the same points, each with its release's answers. */

#define V71_SESSIONS 819 /* LUO_SESSION_MAX */
#define V71_FILES 128    /* LUO_FILE_MAX */

static void fill_files(int s, int n) {
    for (int i = 0; i < n; i++) {
        int m = memfd_str("f");
        if (preserve(s, m, (__u64)i) < 0) FAIL("preserve %d: %s", i, strerror(errno));
        OK(close(m));
    }
}

/* Creates sessions "lim-N" until *n sessions are open; their fds in fds. */
static void fill_sessions(int ctl, int* fds, int* n, int want) {
    char name[32];
    for (; *n < want; (*n)++) {
        snprintf(name, sizeof(name), "lim-%d", *n);
        fds[*n] = create_session(ctl, name);
        if (fds[*n] < 0) FAIL("create %s: %s", name, strerror(errno));
    }
}

static void case_release_7_1(void) {
    int ctl = dev_open();
    static int fds[V71_SESSIONS + 1];
    int n = 0;
    /* luo_session_create: no name check; strscpy keeps 63 bytes. */
    fds[n++] = create_session(ctl, "");
    CHECK(fds[0] >= 0);
    ERR(create_session(ctl, ""), EEXIST);
    char longname[LIVEUPDATE_SESSION_NAME_LENGTH + 1];
    memset(longname, 'y', LIVEUPDATE_SESSION_NAME_LENGTH);
    longname[LIVEUPDATE_SESSION_NAME_LENGTH] = '\0';
    int l = fds[n++] = create_session(ctl, longname); /* 64 bytes, no NUL */
    CHECK(l >= 0);
    longname[LIVEUPDATE_SESSION_NAME_LENGTH - 1] = '\0';
    ERR(create_session(ctl, longname), EEXIST); /* the same 63 bytes */
    /* No GET_NAME: 0x43 is past luo_session_ioctl's table. */
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    ERR(ioctl(l, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
    /* No session-type check: the size and the copy come first... */
    static union argbuf a;
    memset(&a, 0, sizeof(a));
    a.finish.size = sizeof(a.finish) + 8;
    a.b[sizeof(a.finish) + 1] = 1;
    ERR(ioctl(l, LIVEUPDATE_SESSION_FINISH, &a), E2BIG);
    memset(&a, 0, sizeof(a));
    a.retrieve.size = 0;
    ERR(ioctl(l, LIVEUPDATE_SESSION_RETRIEVE_FD, &a), EINVAL);
    /* ... then the operation: no such token, nothing to finish. */
    ERR(retrieve_fd(l, 1), ENOENT);
    OK(finish(l));
    /* LUO_FILE_MAX files per session, then ENOSPC (after EEXIST). */
    int s = fds[n++] = create_session(ctl, "files");
    CHECK(s >= 0);
    fill_files(s, V71_FILES);
    int m = memfd_str("one more");
    ERR(preserve(s, m, 0), EEXIST);
    ERR(preserve(s, m, V71_FILES), ENOSPC);
    OK(close(m));
    /* LUO_SESSION_MAX sessions, then ENOMEM, before EEXIST. */
    fill_sessions(ctl, fds, &n, V71_SESSIONS);
    ERR(create_session(ctl, "one too many"), ENOMEM);
    ERR(create_session(ctl, "files"), ENOMEM);
    for (int i = 0; i < n; i++) OK(close(fds[i]));
    OK(close(ctl));
}

static void case_release_7_2(void) {
    int ctl = dev_open();
    static int fds[V71_SESSIONS + 1];
    int n = 0;
    ERR(create_session(ctl, ""), EINVAL);
    char longname[LIVEUPDATE_SESSION_NAME_LENGTH + 1];
    memset(longname, 'y', LIVEUPDATE_SESSION_NAME_LENGTH);
    longname[LIVEUPDATE_SESSION_NAME_LENGTH] = '\0';
    ERR(create_session(ctl, longname), EINVAL);
    longname[LIVEUPDATE_SESSION_NAME_LENGTH - 1] = '\0';
    int l = fds[n++] = create_session(ctl, longname);
    CHECK(l >= 0);
    NAME_IS(l, longname);
    /* The type check comes before the size and the copy. */
    static union argbuf a;
    memset(&a, 0, sizeof(a));
    a.finish.size = sizeof(a.finish) + 8;
    a.b[sizeof(a.finish) + 1] = 1;
    ERR(ioctl(l, LIVEUPDATE_SESSION_FINISH, &a), EINVAL);
    ERR(retrieve_fd(l, 1), EINVAL);
    ERR(finish(l), EINVAL);
    /* More than 128 files, more than 819 sessions. */
    int s = fds[n++] = create_session(ctl, "files");
    CHECK(s >= 0);
    fill_files(s, V71_FILES + 1);
    fill_sessions(ctl, fds, &n, V71_SESSIONS + 1);
    for (int i = 0; i < n; i++) OK(close(fds[i]));
    OK(close(ctl));
}

/* Under --strict only the memfd handler exists: a socket is a file no
 * handler takes, ENOENT, as on the kernel. */
static void case_socket_enoent(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "sockets");
    CHECK(s >= 0);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    OK(bind(l, (struct sockaddr*)&sa, sizeof(sa)));
    OK(listen(l, 4));
    ERR(preserve(s, l, 1), ENOENT);
    int d = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(d >= 0);
    ERR(preserve(s, d, 2), ENOENT);
    int m = memfd_str("memfds are the kernel's");
    OK(preserve(s, m, 3));
    OK(close(m));
    OK(close(d));
    OK(close(l));
    OK(close(s));
    OK(close(ctl));
}

/* ============ error paths on demand (--agent-faults) ============ */

/* The driver armed "freeze fails at file 1" (ff-b's first file). The
 * reboot fails; luo_session_serialize unfroze everything; the sessions are
 * as they were. */
static void case_freeze_fails(void) {
    const char* reboot = getenv("LU_REBOOT");
    CHECK(reboot);
    int ctl = dev_open();
    int a = create_session(ctl, "ff-a");
    int b = create_session(ctl, "ff-b");
    CHECK(a >= 0 && b >= 0);
    int m1 = memfd_str("a1"), m2 = memfd_str("b1"), m3 = memfd_str("b2");
    OK(preserve(a, m1, 1));
    OK(preserve(b, m2, 1));
    OK(preserve(b, m3, 2));
    int rc = system(reboot);
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) != 0);
    NAME_IS(a, "ff-a");
    NAME_IS(b, "ff-b");
    ERR(preserve(b, m3, 2), EEXIST);
    ERR(preserve(a, m2, 9), EBUSY); /* still preserved, in ff-b */
    int m4 = memfd_str("a2");
    OK(preserve(a, m4, 2));
    ERR(create_session(ctl, "ff-a"), EEXIST);
    OK(close(b)); /* unpreserves its files: m2 is free again */
    OK(preserve(a, m2, 3));
    OK(close(m1));
    OK(close(m2));
    OK(close(m3));
    OK(close(m4));
    OK(close(a));
    OK(close(ctl));
}

/* The daemon is upgraded under the agent ($LU_UPGRADE: liveupdatectl
 * upgrade): its control fd, session fds and files go on as if nothing
 * happened, and an incoming session is still retrievable once. */
static void case_across_upgrade(void) {
    const char* upgrade = getenv("LU_UPGRADE");
    CHECK(upgrade);
    int ctl = dev_open();
    int a = create_session(ctl, "up-a");
    CHECK(a >= 0);
    int m1 = memfd_str("before the upgrade");
    OK(preserve(a, m1, 1));
    int rc = system(upgrade);
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    NAME_IS(a, "up-a");
    ERR(preserve(a, m1, 2), EBUSY);
    int m2 = memfd_str("after the upgrade");
    ERR(preserve(a, m2, 1), EEXIST);
    OK(preserve(a, m2, 2));
    ERR(open(DEV, O_RDWR | O_CLOEXEC), EBUSY); /* still exclusive: the same control connection */
    int b = create_session(ctl, "up-b");
    CHECK(b >= 0);
    ERR(create_session(ctl, "up-a"), EEXIST);
    ERR(retrieve_fd(a, 1), EINVAL); /* still outgoing */
    rc = system(upgrade); /* and once more, with two sessions */
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    NAME_IS(b, "up-b");
    OK(close(b));
    OK(close(m1));
    OK(close(m2));
    OK(close(a));
    OK(close(ctl));
}

/* One traced EEXIST: the driver finds it in `liveupdatectl trace`. */
static void case_preserve_eexist(void) {
    printf("PID %d\n", (int)getpid());
    fflush(stdout);
    int ctl = dev_open();
    int s = create_session(ctl, "traced");
    CHECK(s >= 0);
    int m = memfd_str("x");
    OK(preserve(s, m, 7));
    ERR(preserve(s, m, 7), EEXIST);
    OK(close(m));
    OK(close(s));
    OK(close(ctl));
}

/* Commands of another type on LUO fds reach luo_ioctl and
 * luo_session_ioctl, which decode the number first: out of range is EINVAL,
 * whatever the type byte. The VFS's own commands never get there. */
static void case_foreign_types(void) {
    int ctl = dev_open();
    char buf[128];
    memset(buf, 0, sizeof(buf));
    ERR(ioctl(ctl, _IO('T', 0x7f), buf), EINVAL);
    ERR(ioctl(ctl, _IOWR(0x42, 0x99, struct liveupdate_ioctl_create_session), buf), EINVAL);
    ERR(ioctl(ctl, FIONREAD, buf), EINVAL); /* nr 0x1b: a socket would answer it */
    int s = create_session(ctl, "foreign");
    CHECK(s >= 0);
    ERR(ioctl(s, TCGETS, buf), EINVAL); /* nr 1: below the session base */
    ERR(ioctl(s, _IO('T', 0x7f), buf), EINVAL);
    ERR(ioctl(s, FIONREAD, buf), EINVAL);
    /* In range, another type: the size is read, then the command differs. */
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    ERR(ioctl(s, _IOWR('T', LIVEUPDATE_CMD_SESSION_GET_NAME, struct liveupdate_session_get_name), &g),
        ENOTTY);
    /* The VFS's own: close-on-exec and non-blocking work as on any file. */
    OK(ioctl(s, FIONCLEX));
    CHECK(!cloexec(s));
    OK(ioctl(s, FIOCLEX));
    CHECK(cloexec(s));
    NAME_IS(s, "foreign");
    OK(close(s));
    OK(close(ctl));
}

/* A program's own AF_UNIX SOCK_SEQPACKET sockets are not LUO's: LUO
 * numbers on them are ENOTTY (the socket's answer), and their own ioctls
 * work. */
static void case_own_seqpacket(void) {
    int ctl = dev_open(); /* a daemon is there: still not its business */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    struct liveupdate_session_get_name g = {.size = sizeof(g)};
    ERR(ioctl(sv[0], LIVEUPDATE_SESSION_GET_NAME, &g), ENOTTY);
    struct liveupdate_ioctl_create_session c = {.size = sizeof(c), .fd = -1};
    set_name(c.name, "not-through-my-socket");
    ERR(ioctl(sv[1], LIVEUPDATE_IOCTL_CREATE_SESSION, &c), ENOTTY);
    ERR(ioctl(sv[1], _IO(LIVEUPDATE_IOCTL_TYPE, 0x7f), &c), ENOTTY);
    CHECK(send(sv[1], "abc", 3, 0) == 3);
    int n = -1;
    OK(ioctl(sv[0], FIONREAD, &n));
    CHECK(n == 3);
    /* Nothing reached the daemon: the name is free. */
    int s = create_session(ctl, "not-through-my-socket");
    CHECK(s >= 0);
    OK(close(s));
    OK(close(sv[0]));
    OK(close(sv[1]));
    OK(close(ctl));
}

/* LUO fds are known for what they are after dup, fork and SCM_RIGHTS (exec:
 * case_exec): the LUO answer (EINVAL for an out-of-range number) on each. */
static void case_luo_fd_travels(void) {
    int ctl = dev_open();
    int s = create_session(ctl, "travels");
    CHECK(s >= 0);
    char buf[64] = {0};
    int d = dup(s), dctl = fcntl(ctl, F_DUPFD_CLOEXEC, 50);
    CHECK(d >= 0 && dctl >= 50);
    NAME_IS(d, "travels");
    ERR(ioctl(d, _IO('T', 0x7f), buf), EINVAL);
    ERR(ioctl(dctl, _IO('T', 0x7f), buf), EINVAL);
    /* Through a socket, to ourselves. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) == 0);
    char cbuf[CMSG_SPACE(2 * sizeof(int))];
    memset(cbuf, 0, sizeof(cbuf));
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    struct cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int sent[2] = {s, ctl};
    memcpy(CMSG_DATA(cm), sent, sizeof(sent));
    CHECK(sendmsg(sv[0], &msg, 0) == 1);
    memset(cbuf, 0, sizeof(cbuf));
    msg.msg_controllen = sizeof(cbuf);
    CHECK(recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC) == 1);
    cm = CMSG_FIRSTHDR(&msg);
    CHECK(cm && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(2 * sizeof(int)));
    int got[2];
    memcpy(got, CMSG_DATA(cm), sizeof(got));
    NAME_IS(got[0], "travels");
    ERR(ioctl(got[0], _IO('T', 0x7f), buf), EINVAL);
    ERR(ioctl(got[1], _IO('T', 0x7f), buf), EINVAL);
    /* And in a child. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (strcmp(get_name(d), "travels") != 0) _exit(2);
        if (ioctl(got[0], _IO('T', 0x7f), buf) != -1 || errno != EINVAL) _exit(3);
        if (ioctl(dctl, _IO('T', 0x7f), buf) != -1 || errno != EINVAL) _exit(4);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
    if (WEXITSTATUS(st) != 0) FAIL("child exited %d", WEXITSTATUS(st));
    OK(close(got[0]));
    OK(close(got[1]));
    OK(close(sv[0]));
    OK(close(sv[1]));
    OK(close(d));
    OK(close(dctl));
    OK(close(s));
    OK(close(ctl));
}

/* ======================= two stages ======================= */

/* Stage 1 ends here: a child keeps the session fds, as an agent's
 * long-lived process (or an fd store) would, and this process exits. The
 * driver kills the holder after stage 2. */
static void hand_to_holder(int ctl) {
    OK(close(ctl)); /* sessions do not depend on it */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        alarm(600); /* never outlive a forgotten test for long */
        for (;;) pause();
    }
    printf("HOLDER %d\n", (int)pid);
    fflush(stdout);
    exit(0);
}

static void write_state(const char* path, const char* text) {
    FILE* f = fopen(path, "w");
    CHECK(f);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

static void read_state(const char* path, char* buf, size_t n) {
    FILE* f = fopen(path, "r");
    CHECK(f);
    CHECK(fgets(buf, (int)n, f));
    fclose(f);
}

/* Retrieves a session and checks what every retrieved session must be. */
static int retrieve_checked(int ctl, const char* name) {
    struct liveupdate_ioctl_retrieve_session a = {.size = sizeof(a), .fd = -1};
    set_name(a.name, name);
    if (ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a) < 0)
        FAIL("RETRIEVE_SESSION %s: %s", name, strerror(errno));
    CHECK(a.fd >= 0 && cloexec(a.fd));
    NAME_IS(a.fd, name);
    return a.fd;
}

static int retrieve_fd_checked(int s, __u64 token) {
    int fd = retrieve_fd(s, token);
    if (fd < 0) FAIL("RETRIEVE_FD %llu: %s", (unsigned long long)token, strerror(errno));
    CHECK(cloexec(fd));
    return fd;
}

/* -- one_memfd: one session, one memfd, and every incoming-side rule -- */

static void one_memfd_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "compat-one");
    CHECK(s >= 0);
    int m = memfd_str("hello from stage 1");
    OK(preserve(s, m, 42));
    OK(close(m));
    int e = create_session(ctl, "compat-efault");
    CHECK(e >= 0);
    m = memfd_str("destroyed by EFAULT");
    OK(preserve(e, m, 1));
    OK(close(m));
    hand_to_holder(ctl);
}

static void one_memfd_2(const char* state) {
    (void)state;
    int ctl = open(DEV, O_RDWR);
    CHECK(ctl >= 0 && !cloexec(ctl));
    /* An incoming name may be reused for an outgoing session. */
    int out = create_session(ctl, "compat-one");
    CHECK(out >= 0);
    OK(close(out));

    int s = retrieve_checked(ctl, "compat-one");
    ERR(retrieve_session(ctl, "compat-one"), EINVAL); /* retrieved already */
    /* Session-type checks on an incoming session. */
    int m = memfd_str("new");
    ERR(preserve(s, m, 1), EINVAL);
    struct liveupdate_session_preserve_fd pf = {.size = 0, .fd = m, .token = 1};
    ERR(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &pf), EINVAL); /* type before size */
    OK(close(m));
    struct liveupdate_session_finish f = {.size = 4};
    ERR(ioctl(s, LIVEUPDATE_SESSION_FINISH, &f), EINVAL);
    ERR(ioctl(s, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x42, struct liveupdate_session_finish), &f), ENOTTY);
    ERR(ioctl(s, LIVEUPDATE_SESSION_FINISH, (void*)1), EFAULT);

    /* RETRIEVE_FD: fd field written back, FD_CLOEXEC, the content. */
    struct liveupdate_session_retrieve_fd r = {.size = sizeof(r), .fd = -1, .token = 42};
    OK(ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &r));
    CHECK(r.fd >= 0 && cloexec(r.fd) && r.token == 42 && r.size == sizeof(r));
    CONTENT_IS(r.fd, "hello from stage 1");
    /* A second retrieve gives the same file (one offset). */
    int again = retrieve_fd_checked(s, 42);
    CHECK(lseek(r.fd, 5, SEEK_SET) == 5);
    CHECK(lseek(again, 0, SEEK_CUR) == 5);
    OK(close(again));
    /* EFAULT on the reply drops only that reference; a retry works. */
    struct liveupdate_session_retrieve_fd rr = {.size = sizeof(rr), .fd = -1, .token = 42};
    void* ro = read_only_copy(&rr, sizeof(rr));
    ERR(ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, ro), EFAULT);
    again = retrieve_fd_checked(s, 42);
    CHECK(lseek(again, 0, SEEK_CUR) == 5);
    OK(close(again));
    ERR(retrieve_fd(s, 43), ENOENT);

    /* FINISH: `reserved` is not checked; idempotent; then ENOENT. */
    f.size = sizeof(f);
    f.reserved = 0xdead;
    OK(ioctl(s, LIVEUPDATE_SESSION_FINISH, &f));
    OK(finish(s));
    ERR(retrieve_fd(s, 42), ENOENT);
    NAME_IS(s, "compat-one");
    CONTENT_IS(r.fd, "hello from stage 1"); /* ours to keep */
    OK(close(r.fd));
    OK(close(s));
    ERR(retrieve_session(ctl, "compat-one"), ENOENT); /* closed: gone */

    /* RETRIEVE_SESSION whose reply cannot be written: the new file is
     * released, which finishes the session: it is gone. */
    struct liveupdate_ioctl_retrieve_session rs = {.size = sizeof(rs), .fd = -1};
    set_name(rs.name, "compat-efault");
    ro = read_only_copy(&rs, sizeof(rs));
    ERR(ioctl(ctl, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, ro), EFAULT);
    ERR(retrieve_session(ctl, "compat-efault"), ENOENT);
    OK(close(ctl));
}

/* -- several: sessions with files and empty ones -- */

static const char* const several_names[] = {"sev-empty-1", "sev-a", "sev-empty-2", "sev-b",
                                            "sev-empty-3"};

static void several_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s[5];
    for (int i = 0; i < 5; i++) {
        s[i] = create_session(ctl, several_names[i]);
        CHECK(s[i] >= 0);
    }
    int m = memfd_str("a-1");
    OK(preserve(s[1], m, 1));
    close(m);
    m = memfd_str("a-2");
    OK(preserve(s[1], m, 2));
    close(m);
    m = memfd_str("b-7");
    OK(preserve(s[3], m, 7));
    close(m);
    m = make_memfd(NULL, 0);
    OK(preserve(s[3], m, 8));
    close(m);
    hand_to_holder(ctl);
}

static void several_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    const int order[] = {3, 0, 4, 1, 2}; /* not the creation order */
    for (int k = 0; k < 5; k++) {
        int i = order[k];
        int s = retrieve_checked(ctl, several_names[i]);
        if (i == 1) {
            int f = retrieve_fd_checked(s, 2);
            CONTENT_IS(f, "a-2");
            close(f);
            f = retrieve_fd_checked(s, 1);
            CONTENT_IS(f, "a-1");
            close(f);
        } else if (i == 3) {
            int f = retrieve_fd_checked(s, 7);
            CONTENT_IS(f, "b-7");
            close(f);
            f = retrieve_fd_checked(s, 8);
            CONTENT_IS(f, "");
            close(f);
        } else {
            ERR(retrieve_fd(s, 0), ENOENT);
        }
        OK(finish(s));
        OK(close(s));
    }
    for (int i = 0; i < 5; i++) ERR(retrieve_session(ctl, several_names[i]), ENOENT);
    OK(close(ctl));
}

/* -- many_sessions: 2,000 empty sessions -- */

static void many_sessions_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    char name[32];
    for (int i = 0; i < MANY_SESSIONS; i++) {
        snprintf(name, sizeof(name), "many-%04d", i);
        if (create_session(ctl, name) < 0) FAIL("create %s: %s", name, strerror(errno));
    }
    hand_to_holder(ctl);
}

static void many_sessions_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    char name[32];
    for (int i = MANY_SESSIONS - 1; i >= 0; i--) {
        snprintf(name, sizeof(name), "many-%04d", i);
        int s = retrieve_session(ctl, name);
        if (s < 0) FAIL("retrieve %s: %s", name, strerror(errno));
        OK(finish(s));
        OK(close(s));
    }
    ERR(retrieve_session(ctl, "many-0000"), ENOENT);
    OK(close(ctl));
}

/* -- many_files: 500 files with distinct content in one session -- */

static void file_content(int i, char* buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "file %03d:", i);
    for (int k = 0; k < i % 13 && len + 8 < n; k++) len += (size_t)snprintf(buf + len, n - len, " %d", i * k);
}

static void many_files_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "files-500");
    CHECK(s >= 0);
    for (int i = 0; i < MANY_FILES; i++) {
        char buf[256];
        file_content(i, buf, sizeof(buf));
        int m = memfd_str(buf);
        if (preserve(s, m, 1000 + (__u64)i) < 0) FAIL("preserve %d: %s", i, strerror(errno));
        close(m);
    }
    hand_to_holder(ctl);
}

static void many_files_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "files-500");
    for (int i = MANY_FILES - 1; i >= 0; i--) {
        char buf[256];
        file_content(i, buf, sizeof(buf));
        int f = retrieve_fd_checked(s, 1000 + (__u64)i);
        CONTENT_IS(f, buf);
        close(f);
    }
    ERR(retrieve_fd(s, 1000 + MANY_FILES), ENOENT);
    OK(finish(s));
    OK(close(s));
    OK(close(ctl));
}

/* -- big_random: 1 MiB of random bytes, checksum recorded in stage 1 -- */

#define BIG (1u << 20)

static void big_random_1(const char* state) {
    unsigned char* b = malloc(BIG);
    CHECK(b);
    for (size_t got = 0; got < BIG;) {
        ssize_t r = getrandom(b + got, BIG - got, 0);
        CHECK(r > 0);
        got += (size_t)r;
    }
    char text[64];
    snprintf(text, sizeof(text), "%016llx %u\n", (unsigned long long)fnv1a(b, BIG), BIG);
    write_state(state, text);
    int ctl = dev_open();
    int s = create_session(ctl, "big-random");
    CHECK(s >= 0);
    int m = make_memfd(b, BIG);
    free(b);
    OK(preserve(s, m, 1));
    close(m);
    hand_to_holder(ctl);
}

static void big_random_2(const char* state) {
    char want[64];
    read_state(state, want, sizeof(want));
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "big-random");
    int f = retrieve_fd_checked(s, 1);
    size_t n;
    char* b = contents(f, &n);
    char got[64];
    snprintf(got, sizeof(got), "%016llx %zu\n", (unsigned long long)fnv1a((unsigned char*)b, n), n);
    if (strcmp(got, want) != 0) FAIL("checksum and size: want %s got %s", want, got);
    free(b);
    OK(close(f));
    OK(finish(s));
    OK(close(s));
    OK(close(ctl));
}

/* -- empty_memfd -- */

static void empty_memfd_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "empty-memfd");
    CHECK(s >= 0);
    int m = make_memfd(NULL, 0);
    OK(preserve(s, m, 5));
    close(m);
    hand_to_holder(ctl);
}

static void empty_memfd_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "empty-memfd");
    int f = retrieve_fd_checked(s, 5);
    struct stat st;
    CHECK(fstat(f, &st) == 0 && st.st_size == 0);
    char c;
    CHECK(read(f, &c, 1) == 0);
    OK(close(f));
    OK(finish(s));
    OK(close(s));
    OK(close(ctl));
}

/* -- write_after_preserve: the data at reboot is what counts -- */

#define WAP_SIZE 8192
static const char wap_text[] = "written after preserve";

static void write_after_preserve_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "write-after");
    CHECK(s >= 0);
    char* b = malloc(WAP_SIZE);
    CHECK(b);
    memset(b, 'a', WAP_SIZE);
    int m = make_memfd(b, WAP_SIZE);
    free(b);
    OK(preserve(s, m, 3));
    write_all(m, wap_text, sizeof(wap_text) - 1, 4000); /* within the size */
    close(m);
    hand_to_holder(ctl);
}

static void write_after_preserve_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "write-after");
    int f = retrieve_fd_checked(s, 3);
    size_t n;
    char* b = contents(f, &n);
    CHECK(n == WAP_SIZE);
    CHECK(memcmp(b + 4000, wap_text, sizeof(wap_text) - 1) == 0);
    for (size_t i = 0; i < n; i++)
        if (i < 4000 || i >= 4000 + sizeof(wap_text) - 1) CHECK(b[i] == 'a');
    free(b);
    OK(close(f));
    OK(finish(s));
    OK(close(s));
    OK(close(ctl));
}

/* -- file_position: the position at reboot is kept -- */

static void file_position_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "position");
    CHECK(s >= 0);
    char b[10000];
    for (size_t i = 0; i < sizeof(b); i++) b[i] = (char)('A' + i % 26);
    int m = make_memfd(b, sizeof(b));
    CHECK(lseek(m, 100, SEEK_SET) == 100);
    OK(preserve(s, m, 4));
    CHECK(lseek(m, 1234, SEEK_SET) == 1234); /* moved after preserve */
    close(m);
    hand_to_holder(ctl);
}

static void file_position_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "position");
    int f = retrieve_fd_checked(s, 4);
    off_t pos = lseek(f, 0, SEEK_CUR);
    if (pos != 1234) FAIL("position: want 1234, got %lld", (long long)pos);
    char c;
    CHECK(read(f, &c, 1) == 1 && c == (char)('A' + 1234 % 26));
    OK(close(f));
    OK(finish(s));
    OK(close(s));
    OK(close(ctl));
}

/* -- error paths on demand: the driver arms each fault between the stages -- */

static void one_file_1(const char* session, __u64 token, const char* text) {
    int ctl = dev_open();
    int s = create_session(ctl, session);
    CHECK(s >= 0);
    int m = memfd_str(text);
    OK(preserve(s, m, token));
    OK(close(m));
    hand_to_holder(ctl);
}

/* Deserialization failed: every open is EIO, for the rest of the boot. */
static void deserialize_fails_1(const char* state) {
    (void)state;
    one_file_1("df", 1, "lost");
}

static void deserialize_fails_2(const char* state) {
    (void)state;
    ERR(open(DEV, O_RDWR), EIO);
    ERR(open(DEV, O_RDWR | O_CLOEXEC), EIO);
}

/* RETRIEVE_FD of token 1 fails (EIO), for good; token 2 is unaffected. */
static void retrieve_fails_1(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = create_session(ctl, "rf");
    CHECK(s >= 0);
    int m1 = memfd_str("one"), m2 = memfd_str("two");
    OK(preserve(s, m1, 1));
    OK(preserve(s, m2, 2));
    OK(close(m1));
    OK(close(m2));
    hand_to_holder(ctl);
}

static void retrieve_fails_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "rf");
    ERR(retrieve_fd(s, 1), EIO);
    ERR(retrieve_fd(s, 1), EIO); /* the same errno, every time */
    int two = retrieve_fd_checked(s, 2);
    CONTENT_IS(two, "two");
    OK(finish(s)); /* finish releases the failed file too */
    ERR(retrieve_fd(s, 1), ENOENT);
    OK(close(two));
    OK(close(s));
    OK(close(ctl));
}

/* FINISH refused once (can_finish: EBUSY), nothing changed; a retry works. */
static void finish_refused_1(const char* state) {
    (void)state;
    one_file_1("fr", 5, "five");
}

static void finish_refused_2(const char* state) {
    (void)state;
    int ctl = dev_open();
    int s = retrieve_checked(ctl, "fr");
    int f = retrieve_fd_checked(s, 5);
    ERR(finish(s), EBUSY);
    int again = retrieve_fd_checked(s, 5); /* still there: the same file */
    CHECK(lseek(f, 2, SEEK_SET) == 2 && lseek(again, 0, SEEK_CUR) == 2);
    OK(finish(s));
    ERR(retrieve_fd(s, 5), ENOENT);
    OK(finish(s));
    CONTENT_IS(f, "five");
    OK(close(again));
    OK(close(f));
    OK(close(s));
    OK(close(ctl));
}

/* Fds of the previous instance, held across the live update: a holder keeps
 * the control and a session fd, and once told (SIGUSR1, after the reboot)
 * uses them and writes the errnos to `state`. Each is still known for a LUO
 * fd (its peer's name outlives the daemon), so each answer is ESTALE, even
 * for a foreign type byte. */
static void stale_fds_1(const char* state) {
    int ctl = dev_open();
    int s = create_session(ctl, "stale");
    CHECK(s >= 0);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    CHECK(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        alarm(600); /* never outlive a forgotten test for long */
        int sig;
        if (sigwait(&usr1, &sig) != 0) _exit(1);
        struct liveupdate_session_get_name g = {.size = sizeof(g)};
        int e[4];
        e[0] = ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g) < 0 ? errno : 0;
        e[1] = create_session(ctl, "stale-again") < 0 ? errno : 0;
        e[2] = ioctl(s, _IO('T', 0x7f), &g) < 0 ? errno : 0;
        e[3] = ioctl(ctl, _IO('T', 0x7f), &g) < 0 ? errno : 0;
        char tmp[4096], text[64];
        snprintf(tmp, sizeof(tmp), "%s.tmp", state);
        snprintf(text, sizeof(text), "%d %d %d %d\n", e[0], e[1], e[2], e[3]);
        FILE* f = fopen(tmp, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, state) != 0) _exit(1);
        _exit(0);
    }
    printf("HOLDER %d\n", (int)pid);
    fflush(stdout);
    exit(0);
}

static void stale_fds_2(const char* state) {
    for (int i = 0; i < 1000 && access(state, F_OK) != 0; i++) usleep(10000);
    char buf[64];
    read_state(state, buf, sizeof(buf));
    int e[4];
    CHECK(sscanf(buf, "%d %d %d %d", &e[0], &e[1], &e[2], &e[3]) == 4);
    const char* what[4] = {"GET_NAME on the session", "CREATE_SESSION on the control fd",
                           "a foreign type on the session", "a foreign type on the control fd"};
    for (int i = 0; i < 4; i++)
        if (e[i] != ESTALE)
            FAIL("%s of the previous instance: want ESTALE, got %s", what[i],
                 e[i] ? strerror(e[i]) : "success");
}

/* ======================= main ======================= */

struct single_case {
    const char* name;
    void (*fn)(void);
};

static const struct single_case single_cases[] = {
    {"open_close", case_open_close},
    {"across_upgrade", case_across_upgrade},
    {"open_variants", case_open_variants},
    {"exclusive", case_exclusive},
    {"no_daemon", case_no_daemon},
    {"session_names", case_session_names},
    {"preserve_memfds", case_preserve_memfds},
    {"preserve_unsupported", case_preserve_unsupported},
    {"double_preserve", case_double_preserve},
    {"many_sessions", case_many_sessions},
    {"many_files", case_many_files},
    {"errno_range", case_errno_range},
    {"errno_enotty", case_errno_enotty},
    {"errno_size", case_errno_size},
    {"errno_e2big", case_errno_e2big},
    {"errno_session_type", case_errno_session_type},
    {"errno_efault", case_errno_efault},
    {"get_name_reserved", case_get_name_reserved},
    {"fd_writeback", case_fd_writeback},
    {"dup_fork", case_dup_fork},
    {"exec", case_exec},
    {"threads", case_threads},
    {"passthrough", case_passthrough},
    {"release_7_1", case_release_7_1},
    {"release_7_2", case_release_7_2},
    {"socket_enoent", case_socket_enoent},
    {"freeze_fails", case_freeze_fails},
    {"preserve_eexist", case_preserve_eexist},
    {"foreign_types", case_foreign_types},
    {"own_seqpacket", case_own_seqpacket},
    {"luo_fd_travels", case_luo_fd_travels},
};

struct two_stage {
    const char* name;
    void (*stage1)(const char* state);
    void (*stage2)(const char* state);
};

static const struct two_stage two_stages[] = {
    {"one_memfd", one_memfd_1, one_memfd_2},
    {"stale_fds", stale_fds_1, stale_fds_2},
    {"several", several_1, several_2},
    {"many_sessions", many_sessions_1, many_sessions_2},
    {"many_files", many_files_1, many_files_2},
    {"big_random", big_random_1, big_random_2},
    {"empty_memfd", empty_memfd_1, empty_memfd_2},
    {"write_after_preserve", write_after_preserve_1, write_after_preserve_2},
    {"file_position", file_position_1, file_position_2},
    {"deserialize_fails", deserialize_fails_1, deserialize_fails_2},
    {"retrieve_fails", retrieve_fails_1, retrieve_fails_2},
    {"finish_refused", finish_refused_1, finish_refused_2},
};

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "single") == 0) {
        for (size_t i = 0; i < sizeof(single_cases) / sizeof(single_cases[0]); i++) {
            if (strcmp(argv[2], single_cases[i].name) == 0) {
                single_cases[i].fn();
                return 0;
            }
        }
    } else if (argc == 4 && (strcmp(argv[1], "stage1") == 0 || strcmp(argv[1], "stage2") == 0)) {
        for (size_t i = 0; i < sizeof(two_stages) / sizeof(two_stages[0]); i++) {
            if (strcmp(argv[2], two_stages[i].name) == 0) {
                (argv[1][5] == '1' ? two_stages[i].stage1 : two_stages[i].stage2)(argv[3]);
                return 0;
            }
        }
    } else if (argc == 4 && strcmp(argv[1], "exec_child") == 0) {
        return exec_child(atoi(argv[2]), argv[3]);
    }
    fprintf(stderr, "usage: %s single CASE | stage1|stage2 SCENARIO STATEFILE\n", argv[0]);
    return 2;
}
