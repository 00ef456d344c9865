// SPDX-License-Identifier: Apache-2.0
// The connection-state memfd (token 3) that an old kvcache hands to the
// next: for every client connection it preserved (token 1000+i), the bytes
// it had read but not served (the start of the next request), the reply
// bytes it had not sent yet, and the little protocol state in between.
//
//   StateHeader, then per connection: ConnRecord, in bytes, out bytes,
//   padded to 8.
//
// Native-endian: it never leaves the machine. decode() trusts nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "protocol.hpp"

namespace kvcache {

inline constexpr uint64_t kArenaToken = 1, kListenerToken = 2, kStateToken = 3;
inline constexpr uint64_t kFirstConnToken = 1000;

struct HandedConn {
    uint64_t token = 0;
    Conn conn;  // in/out hold only the unserved and unsent bytes
    bool peer_closed = false;
};

std::string encode_state(const std::vector<HandedConn>& conns);
// "" and *out filled, or why the bytes are not a valid state.
std::string decode_state(const std::string& bytes, std::vector<HandedConn>* out);

}  // namespace kvcache
