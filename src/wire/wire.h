/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire protocol between liveupdated and its clients (libliveupdate, the
 * compat library, liveupdatectl). It is the kernel uAPI carried over
 * SOCK_SEQPACKET Unix sockets: one request message is the ioctl
 * command number plus the uAPI struct bytes exactly as the caller filled
 * them; one reply message carries the errno, the struct bytes to write back
 * (what the kernel's copy_to_user would write) and, for commands that hand
 * out a file, that fd as SCM_RIGHTS. The daemon applies the kernel's checks
 * in the kernel's order, so clients translate and never judge.
 *
 * Sockets, in the runtime directory ($LIVEUPDATE_RUNTIME_DIR, else
 * /run/liveupdate for root, else $XDG_RUNTIME_DIR/liveupdate):
 *   control  plays /dev/liveupdate. On connect the daemon sends a hello reply
 *            (cmd 0): err 0, EBUSY (another control connection is open) or
 *            EIO (the incoming handover failed to deserialize).
 *   admin    status and reboot, as JSON (below).
 * A session is a socket the daemon hands out (CREATE/RETRIEVE_SESSION); it
 * takes the session ioctls. EOF on any of them after a live update commits
 * means the instance that served it is gone: clients report ESTALE.
 */
#ifndef LIVEUPDATE_WIRE_H
#define LIVEUPDATE_WIRE_H

#include <stdint.h>

#define LU_WIRE_MAGIC 0x4c555731u /* "LUW1" */

/* The most struct bytes a request carries. A caller's size may be larger;
 * the client then checks the bytes past this itself (they must be zero,
 * like copy_struct_from_user's tail) and reports the result in flags. */
#define LU_WIRE_MAX_ARG 1024u

/* Request flags: what the client could not read from the caller's memory,
 * so the daemon answers EFAULT at the kernel's step. */
#define LU_WIRE_FAULT_SIZE 0x1u   /* get_user(size) faulted */
#define LU_WIRE_FAULT_ARG 0x2u    /* copy_struct_from_user faulted */
#define LU_WIRE_TAIL_NONZERO 0x4u /* a non-zero byte lies past the bytes sent */
#define LU_WIRE_FLAGS_ALL 0x7u

struct lu_wire_request {
	uint32_t magic;
	uint32_t cmd;     /* the full ioctl command value */
	uint32_t flags;   /* LU_WIRE_* above */
	uint32_t arg_len; /* bytes of struct that follow: min(size, LU_WIRE_MAX_ARG) */
	/* uint8_t arg[arg_len]; for PRESERVE_FD, the fd rides as SCM_RIGHTS */
};

struct lu_wire_reply {
	uint32_t magic;
	int32_t err;      /* 0 or a positive errno */
	uint32_t arg_len; /* bytes to write back over the caller's struct */
	uint32_t nr_fds;  /* fds attached (0 or 1) */
	/* uint8_t arg[arg_len]; the fd field of the struct is filled by the
	 * client with the number the received fd got in its process */
};

/* How a client tells a LUO fd from its own sockets, with one getpeername
 * (the peer's name survives dup, fork, exec, SCM_RIGHTS and the daemon's
 * exit): the daemon binds its end of every session socket to an abstract
 * name that starts with LU_WIRE_SESSION_PEER_PREFIX (after the leading
 * NUL), and its control socket by the name LU_WIRE_CONTROL_PEER_NAME,
 * relative to the runtime directory, which is what a control connection's
 * client end shows as its peer. */
#define LU_WIRE_SESSION_PEER_PREFIX "liveupdate/"
#define LU_WIRE_CONTROL_PEER_NAME "control"

/* Admin socket: the request is a JSON object of at most
 * LU_WIRE_MAX_ADMIN bytes, e.g. {"op":"status"} or
 * {"op":"reboot","exec":"/path","timeout":30,"dry_run":false}. The reply is
 * a struct lu_wire_reply (arg_len 0, err 0) with one fd attached: a sealed
 * memfd holding the JSON answer, so a status of any size fits. When the
 * daemon cannot make the memfd (EMFILE, ENOMEM), an answer of at most
 * LU_WIRE_MAX_ADMIN bytes comes inline instead: arg_len bytes, no fd. */
#define LU_WIRE_MAX_ADMIN 4096u

#endif /* LIVEUPDATE_WIRE_H */
