// SPDX-License-Identifier: Apache-2.0
// The uAPI as the kernel dispatches it: a table of ops per file (the control
// device, a session), each with its command number, its struct's size and
// minimum size (offsetofend of the last field the first version had), and
// its handler, feeding one generic path (uapi_dispatch.cpp), as luo_ioctl
// and luo_session_ioctl do with luo_ioctl_ops and luo_session_ioctl_ops.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "engine.hpp"
#include "unique_fd.hpp"

namespace lu {

struct Conn;
class Server;

// What the kernel's ioctl returns: an errno, the bytes copy_to_user writes
// back (none on failure), and a new fd for the caller.
struct UapiReply {
    int err = 0;               // positive errno, 0 on success
    std::vector<uint8_t> arg;  // filled by the generic path from Ucmd::k
    UniqueFd owned_fd;         // a new session socket's client end
    int fd = -1;               // the fd sent (owned_fd's, or one the engine keeps)
    bool deferred = false;     // answered later (Server::send_deferred): a hand-off's wait

    static UapiReply error(int negative_errno) { return {-negative_errno, {}, {}, -1}; }
};

// The kernel's luo_ucmd: one request as its handler sees it.
struct Ucmd {
    Server& server;
    Conn& conn;
    std::vector<uint8_t> k;  // the struct, as copy_struct_from_user leaves it
    uint32_t user_size = 0;  // the caller's size field
    std::vector<UniqueFd>& fds;  // sent with the request (PRESERVE_FD's file)
};

struct UapiOp {
    uint32_t ioctl_num;
    uint32_t size;      // sizeof(struct)
    uint32_t min_size;  // offsetofend(struct, last field)
    // Session ops: the session type they act on (luo_session_ioctl's check);
    // none on the control device.
    std::optional<Direction> direction;
    UapiReply (*execute)(Ucmd& u);
};

#define LU_OFFSETOFEND(type, member) (offsetof(type, member) + sizeof(((type*)nullptr)->member))

// The op of command number `nr` on the control device or on a session, or
// null if the number is out of range. The session extensions (from
// LU_CMD_SESSION_EXT_BASE, the hand-off) exist unless `strict`.
const UapiOp* find_uapi_op(bool control, unsigned nr, bool strict = false);

}  // namespace lu
