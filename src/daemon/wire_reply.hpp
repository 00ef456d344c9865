// SPDX-License-Identifier: Apache-2.0
// Replies on the wire (src/wire/wire.h): what the kernel's ioctl returns,
// its errno, and the struct copy_to_user would write back.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "socket_io.hpp"
#include "wire.h"

namespace lu {

// A reply: `err` (positive errno, 0 for success), the bytes written back
// (none on failure: the kernel writes nothing back then) and whether an fd
// is attached.
inline std::vector<uint8_t> wire_reply(int err, const std::vector<uint8_t>& arg = {},
                                       bool with_fd = false) {
    const size_t len = err ? 0 : arg.size();
    lu_wire_reply r{LU_WIRE_MAGIC, err, static_cast<uint32_t>(len), with_fd && !err ? 1u : 0u};
    std::vector<uint8_t> bytes(sizeof r + len);
    memcpy(bytes.data(), &r, sizeof r);
    if (len) memcpy(bytes.data() + sizeof r, arg.data(), len);
    return bytes;
}

inline std::vector<uint8_t> errno_reply(int err) { return wire_reply(err); }

// The one way an errno alone is sent: refusals, hellos. 0 or -errno.
inline int send_errno_reply(int sock, int err) { return send_message(sock, errno_reply(err)); }

}  // namespace lu
