/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libliveupdate: the C API of the liveupdate client library.
 *
 * liveupdated plays the kernel's Live Update Orchestrator; this library plays
 * /dev/liveupdate and its ioctls. Every call returns 0 (or a non-negative fd)
 * on success and a negative errno on failure; errno itself is not the result.
 * The errnos are the kernel's (docs/client.md), plus:
 *   -ENOENT  no daemon (the kernel's answer when /dev/liveupdate is absent);
 *   -ESTALE  this fd belongs to an epoch that ended: a reboot moved its
 *            session to the next instance (retrieve it there), or a
 *            hand-off moved it to the next owner. Answered by a live daemon,
 *            for as long as the fd is kept;
 *   -EOWNERDEAD  the daemon instance that served this fd died (a crash, a
 *            kill) without handing anything over: never the answer of a
 *            completed reboot, upgrade or hand-off;
 *   -EPROTO  the daemon's reply is malformed;
 *   -EPERM   (lu_open, lu_admin_request) the process listening on the
 *            runtime directory is not a daemon this client trusts: it runs
 *            neither as root, nor as the caller's uid, nor as the owner root
 *            gave the runtime directory (docs/security.md).
 * Every fd returned has FD_CLOEXEC, as the kernel's do.
 *
 * Bounds: no call waits forever. Every blocking step (connect, the hello of
 * lu_open, a request's send and its reply) counts against one deadline per
 * call, 30 s by default (lu_set_timeout_ms); past it the call returns
 * -ETIMEDOUT. After a request timed out, its fd answers -ENOTCONN to every
 * later call (the daemon's late reply must not answer the next request):
 * close it. lu_handoff_wait and the admin calls that wait for a new daemon
 * instance or an outcome get their own wait plus a margin instead.
 *
 * Threads: one request/reply is in flight per fd. Calls on *different* fds
 * may run concurrently; calls on the *same* fd (or a dup of it) from several
 * threads must be serialized by the caller, as replies are not tagged.
 */
#ifndef LIVEUPDATE_CLIENT_H
#define LIVEUPDATE_CLIENT_H

#include <liveupdate/uapi.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LU_API __attribute__((visibility("default")))

/*
 * The runtime directory, used by every client and the daemon:
 * $LIVEUPDATE_RUNTIME_DIR if set and non-empty; else /run/liveupdate when
 * geteuid() == 0; else $XDG_RUNTIME_DIR/liveupdate; else -ENOENT.
 * -ENAMETOOLONG if the path does not fit buf, or if <dir>/control would not
 * fit a sockaddr_un. -EFAULT if buf is NULL. (secure_getenv: a setuid
 * program ignores the environment.)
 */
LU_API int lu_runtime_dir(char* buf, size_t len);

/* Opens the control connection (the /dev/liveupdate of this world).
 * Returns the fd, or -ENOENT (no daemon), -EACCES, -EBUSY (another control
 * connection is open), -EIO (the incoming handover failed to deserialize),
 * -ETIMEDOUT (the daemon did not answer within the bound). */
LU_API int lu_open(void);

/*
 * lu_open, retried while it answers -EBUSY (another process holds the
 * exclusive control connection, usually for milliseconds) with a backoff
 * of 1 ms doubling to 50 ms, until timeout_ms has passed: then -EBUSY.
 * 0 tries once. Any other answer is returned at once: -ENOENT means no
 * daemon, which waiting does not fix. Use it instead of a loop of your own;
 * a program that wants the kernel's EBUSY at once (the compat library's
 * open of /dev/liveupdate) calls lu_open.
 */
LU_API int lu_open_wait(unsigned timeout_ms);

/*
 * Sets the bound of every later call of this process, in ms (0: none), and
 * returns the one in force before (capped at INT_MAX). Until it is called,
 * $LIVEUPDATE_TIMEOUT_MS decides, read at each call: decimal digits, 0 for
 * none; a malformed value is ignored and the default, 30000, kept.
 * Thread-safe; a call already waiting keeps the deadline it started with.
 */
LU_API int lu_set_timeout_ms(unsigned ms);

/*
 * The generic ioctl translator: sends the uAPI struct at arg (its first u32
 * is its size) as the request for cmd, and writes the daemon's answer back
 * over it, as the kernel's copy_to_user would. For commands that return a
 * file, the struct's fd field is set to the received fd. For
 * LIVEUPDATE_SESSION_PRESERVE_FD, the fd in the struct is passed along.
 * arg == NULL gives the kernel's -EFAULT, at the kernel's step. Returns 0 or
 * -errno. Any other bad pointer is the caller's bug, as with read(2).
 */
LU_API int lu_ioctl(int fd, unsigned long cmd, void* arg);

/*
 * The transport under lu_ioctl, for a caller that reads and writes the
 * ioctl argument itself (the compat library does, fault-safely). Sends one
 * request for cmd with the first arg_len bytes of arg (at most 1024,
 * LU_WIRE_MAX_ARG) and the request flags of src/wire/wire.h (what could not
 * be read: LU_WIRE_FAULT_SIZE, LU_WIRE_FAULT_ARG, LU_WIRE_TAIL_NONZERO), so
 * the daemon answers EFAULT/E2BIG at the kernel's step. For
 * LIVEUPDATE_SESSION_PRESERVE_FD the fd at offset 4 of arg is passed along.
 * The reply's bytes overwrite arg; *reply_len (if not NULL) gets their
 * number (0 on failure, never more than arg_len). *new_fd (if not NULL) gets
 * the fd the reply carried (FD_CLOEXEC), or -1; the struct's fd field is
 * left as the daemon wrote it. Returns 0 or -errno.
 */
LU_API int lu_ioctl_wire(int fd, unsigned long cmd, uint32_t flags, void* arg, uint32_t arg_len,
                         uint32_t* reply_len, int* new_fd);

/* One wrapper per ioctl. Names are C strings of 1..63 bytes; a longer name
 * is sent unterminated, so the daemon answers -EINVAL as the kernel does.
 * NULL pointers give -EFAULT. */
LU_API int lu_create_session(int ctl, const char* name);   /* session fd */
LU_API int lu_retrieve_session(int ctl, const char* name); /* session fd */
LU_API int lu_preserve_fd(int session, int fd, uint64_t token);
LU_API int lu_retrieve_fd(int session, uint64_t token); /* fd */
LU_API int lu_finish(int session);
LU_API int lu_get_name(int session, char name[LIVEUPDATE_SESSION_NAME_LENGTH]);

/*
 * The hand-off of a service's session to its next version, inside the
 * running daemon (docs/handoff.md): no reboot, every other session
 * untouched. Extensions of this daemon, outside the kernel's command
 * numbers (a kernel, or liveupdated --strict, answers -EINVAL as for any
 * unknown session command).
 */
enum {
	LU_CMD_SESSION_EXT_BASE = 0x80,
	LU_CMD_SESSION_HANDOFF = 0x80,
	LU_CMD_SESSION_HANDOFF_WAIT = 0x81,
	LU_CMD_SESSION_HANDOFF_ABORT = 0x82,
};

#define LU_HANDOFF_DRY_RUN 0x1u /* the next version validates, then aborts */

struct lu_session_handoff {
	__u32 size;
	__u32 flags;      /* LU_HANDOFF_* */
	__s32 next_pid;   /* the next version's pid, watched (0: none) */
	__u32 timeout_ms; /* to commit by; 0: 30 s; at most 3600 s */
};

enum lu_handoff_outcome {
	LU_HANDOFF_COMMITTED = 0,   /* the next version has it: this fd is ESTALE */
	LU_HANDOFF_ROLLED_BACK = 1, /* it is yours again, every file as it was */
	LU_HANDOFF_VALIDATED = 2,   /* a dry run passed: nothing moved */
};

struct lu_session_handoff_wait {
	__u32 size;
	__u32 outcome;  /* out: enum lu_handoff_outcome */
	__s32 reason;   /* out: why it rolled back, an errno (0 if committed) */
	__u32 reserved; /* must be 0 */
};

struct lu_session_handoff_abort {
	__u32 size;
	__u32 reserved; /* must be 0 */
};

#define LU_SESSION_HANDOFF _IO(LIVEUPDATE_IOCTL_TYPE, LU_CMD_SESSION_HANDOFF)
#define LU_SESSION_HANDOFF_WAIT _IO(LIVEUPDATE_IOCTL_TYPE, LU_CMD_SESSION_HANDOFF_WAIT)
#define LU_SESSION_HANDOFF_ABORT _IO(LIVEUPDATE_IOCTL_TYPE, LU_CMD_SESSION_HANDOFF_ABORT)

/*
 * On an outgoing session fd: hands the session to the next version of its
 * owner. It is frozen and becomes retrievable under its name (once, by the
 * owner's uid or root); this fd stays open but PRESERVE_FD answers -EAGAIN
 * until the outcome. The next version's FINISH commits; its exit (next_pid),
 * its close of the session unfinished, an abort or the timeout roll back.
 * Returns 0, or -EBUSY (handed off already, or a reboot runs), -EEXIST (an
 * incoming session has that name), -ESRCH (no process next_pid), -EINVAL,
 * a handler's freeze error.
 */
LU_API int lu_handoff(int session, int32_t next_pid, uint32_t timeout_ms, uint32_t flags);
/*
 * Waits for the outcome of this session's hand-off (at once if it is over):
 * LU_HANDOFF_COMMITTED, LU_HANDOFF_ROLLED_BACK or LU_HANDOFF_VALIDATED, and
 * *reason (if not NULL) the errno that ended it: ECANCELED (aborted),
 * ETIMEDOUT, ECONNRESET (closed unfinished), ESRCH (next_pid exited).
 * -EINVAL if it was never handed off. Bounded by the longest hand-off
 * (3600 s) plus a margin, not by the general bound: the daemon's timer of
 * the hand-off ends the wait.
 */
LU_API int lu_handoff_wait(int session, int* reason);
/* Ends the hand-off without moving anything: from the owner's fd, or from
 * the next version's (a dry run ends validated). -EINVAL if none runs. */
LU_API int lu_handoff_abort(int session);

/*
 * Sends one JSON request to the daemon's admin socket, e.g. {"op":"status"},
 * and returns its JSON reply in *reply_json (malloc'd, NUL-terminated; free
 * it with lu_free). Returns 0 or -errno (-E2BIG: request over 4096 bytes).
 * A failure the daemon reports in JSON ("ok":false) still returns 0.
 * Bounded by the general bound, or, for a request with a "timeout" (in
 * seconds) or one of the ops that wait (reboot, upgrade, update: 30 s
 * without one), by that wait plus a margin.
 */
LU_API int lu_admin_request(const char* json, char** reply_json);
LU_API void lu_free(void* p);

/*
 * Live updates of the daemon itself, as `liveupdatectl upgrade` and
 * `liveupdatectl reboot` run them (the daemon's own user or root only).
 *
 * lu_admin_upgrade replaces the daemon's binary and no client notices: every
 * connection, session and file moves to the new instance, fds unchanged, the
 * epoch too. lu_admin_reboot is the kexec of this world: every outgoing
 * session becomes incoming in the next epoch, every client fd gets ESTALE.
 *
 * exec: the new binary (NULL: the running one); timeout_s: seconds it has
 * to take over (0: 30); flags: LU_UPDATE_DRY_RUN to have it validate the
 * state and nothing more. Returns 0 once the new instance serves (or
 * validated, for a dry run); otherwise -errno, and the running instance
 * still serves. -ETIMEDOUT (no answer within timeout_s plus a margin)
 * leaves the outcome unknown: ask "status". *reply_json, if reply_json is not NULL, gets the daemon's
 * JSON answer either way (free it with lu_free): "error" says what failed.
 *
 *   char* why = NULL;
 *   int rc = lu_admin_upgrade("/usr/sbin/liveupdated", 0, 0, &why);
 *   if (rc < 0) fprintf(stderr, "upgrade failed: %s\n", why ? why : strerror(-rc));
 *   lu_free(why);
 */
#define LU_UPDATE_DRY_RUN 0x1u
LU_API int lu_admin_upgrade(const char* exec, unsigned timeout_s, unsigned flags, char** reply_json);
LU_API int lu_admin_reboot(const char* exec, unsigned timeout_s, unsigned flags, char** reply_json);

#ifdef __cplusplus
}
#endif

#endif /* LIVEUPDATE_CLIENT_H */
