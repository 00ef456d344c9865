// SPDX-License-Identifier: Apache-2.0
// Reading what another process handed us, bounded: a whole file whose size
// is taken from the file itself (a live update's blob, a crash journal),
// and one message within a time limit (a live update's channel, a keeper's
// link). Both refuse before they allocate or wait without end.
#pragma once

#include <cstdint>
#include <vector>

#include "socket_io.hpp"

namespace lu {

// The whole of the regular file `fd`, at most max_size bytes. 0, -EINVAL
// (not a regular file, or larger), -EIO (a read failed or came up short).
int read_whole_file(int fd, uint64_t max_size, std::vector<uint8_t>* out);

// recv_message on `sock`, waiting up to timeout_ms for one to arrive (each
// wait afresh, a transient shortage of buffers retried after 1 ms).
// recv_message's results, or -ETIMEDOUT.
int recv_message_within(int sock, size_t max_bytes, size_t max_fds, int timeout_ms, Message* out);

}  // namespace lu
