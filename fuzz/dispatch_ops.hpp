// SPDX-License-Identifier: Apache-2.0
// The input encoding of dispatch_fuzz, shared with corpus_gen.cpp.
//
// An input is a sequence of records [u8 op][u8 arg][u16 len, little-endian]
// [len bytes of payload] (a short last record takes what is left), at most
// kMaxOps of them. arg bits 0..4 pick the fds attached to a send (Attach),
// bits 5..7 a held session (index modulo the number held; sessions are the
// fds of CREATE/RETRIEVE_SESSION replies and their dups, at most kMaxSessions).
#pragma once

#include <cstdint>
#include <vector>

#include "liveupdate/uapi.h"

namespace dispatch_fuzz {

enum Op : uint8_t {
    kControlRaw,     // payload as-is on the control connection (opened if none)
    kSessionRaw,     // payload as-is on the session
    kControlReq,     // a request built from the payload (below) on the control connection
    kSessionReq,     // same, on the session
    kAdmin,          // payload as the JSON request of a fresh admin connection
    kCloseSession,   // close the session fd
    kDupSession,     // dup the session fd (one more copy of the same session)
    kCloseControl,   // close the control connection (the next control op reopens it)
    kBurst,          // the request built from the payload, 1 + (arg & 31) * 32 times, to the
                     // session (or control if none) before any reply is read: backpressure
    kSendThenClose,  // the request built from the payload, then its connection closed before
                     // the daemon reads it: the session, or control if selector bit 7 is set
    kShutdown,       // shutdown() the session fd (control if none or arg bit 2): arg & 3 is
                     // SHUT_RD, SHUT_WR, SHUT_RDWR (3 too)
    kNumOps,         // op bytes are taken modulo this
};

enum Attach : uint8_t {
    kMemfd = 1 << 0,
    kPipe = 1 << 1,
    kDevNull = 1 << 2,
    kTcpListener = 1 << 3,
    kSessionSelf = 1 << 4,  // the selected session's own fd
};
inline constexpr unsigned kSessionShift = 5;

inline constexpr size_t kMaxOps = 64;
inline constexpr size_t kMaxSessions = 8;

// kControlReq / kSessionReq payload: [u8 selector] then the uAPI struct bytes
// (size first, as the caller fills them). selector bits 0..2 index kCmds,
// bits 3..5 are the wire flags (LU_WIRE_*), bit 7 is kSendThenClose's target.
// The harness adds the wire header with a valid magic and arg_len.
inline constexpr uint32_t kCmds[8] = {
    LIVEUPDATE_IOCTL_CREATE_SESSION,
    LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
    LIVEUPDATE_SESSION_PRESERVE_FD,
    LIVEUPDATE_SESSION_RETRIEVE_FD,
    LIVEUPDATE_SESSION_FINISH,
    LIVEUPDATE_SESSION_GET_NAME,
    _IOW(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION, int),  // right nr, wrong cmd
    _IO(LIVEUPDATE_IOCTL_TYPE, 0x44),                                 // past the session range
};

inline void append_record(std::vector<uint8_t>& in, Op op, uint8_t arg,
                          const std::vector<uint8_t>& payload) {
    in.push_back(op);
    in.push_back(arg);
    in.push_back(static_cast<uint8_t>(payload.size()));
    in.push_back(static_cast<uint8_t>(payload.size() >> 8));
    in.insert(in.end(), payload.begin(), payload.end());
}

}  // namespace dispatch_fuzz
