// SPDX-License-Identifier: Apache-2.0
// What an upgrade of the daemon hands the next binary, as plain data: the
// engine's whole state (both directions, as they stand, nothing frozen) and
// the client connections that go with it. upgrade_format.cpp turns it into
// the blob and back, validating everything; docs/handover-format.md
// describes the bytes.
//
// The fds travel beside it, in this order: the outgoing image's fd slots,
// the incoming image's fd slots, one per connection, one per connection
// whose held reply carries an fd, then `leaked_fds` fds.
#pragma once

#include <cstdint>
#include <vector>

#include "handover_image.hpp"

namespace lu {

// An incoming session's state beyond its name and files.
inline constexpr uint32_t kUpgradeSessionRetrieved = 1u << 0;
inline constexpr uint32_t kUpgradeSessionOrphaned = 1u << 1;   // REQUIRES retrieved
inline constexpr uint32_t kUpgradeSessionRefuseFinishOnce = 1u << 2;  // an agent's armed fault
inline constexpr uint32_t kUpgradeSessionFlags = (1u << 3) - 1;

struct IncomingFlbStatus {
    int32_t retrieve_status = 0;  // 0 never, 1 ok, -errno failed for good
    bool finished = false;
    bool operator==(const IncomingFlbStatus&) const = default;
};

// A client connection the next binary serves on: the control connection or
// one session's socket (the daemon's end).
struct ConnImage {
    // Stale: a connection of an epoch a reboot ended, answered ESTALE.
    enum Kind : uint32_t { Control = 1, Session = 2, Stale = 3 };
    uint32_t kind = 0;
    uint32_t uid = 0;  // peer credentials: of the control peer, of a session's maker
    int32_t pid = 0;
    uint32_t incoming = 0;   // Session: 0 outgoing, 1 incoming
    uint64_t session = 0;    // Session: index into that image's sessions
    uint64_t peer_ino = 0;   // Session: the client end's inode
    bool has_pending = false;  // a reply the client has not read yet
    bool pending_fd = false;   // ... with an fd
    std::vector<uint8_t> pending;
    bool operator==(const ConnImage&) const = default;
};

struct UpgradeImage {
    uint64_t liveupdate_num = 0;  // the epoch: an upgrade does not change it
    bool have_incoming = false;   // this epoch began from a handover
    int32_t deserialize_err = 0;  // sticky: control opens answer EIO
    uint64_t upgrades = 0;        // upgrades since the cold start, this one included
    HandoverImage outgoing;       // sessions as a reboot would hand them
    HandoverImage incoming;       // incoming sessions; each file's one fd
    std::vector<uint32_t> incoming_flags;       // per incoming session
    std::vector<uint64_t> incoming_since_ns;    // per incoming session: handed over at (CLOCK_MONOTONIC)
    std::vector<int32_t> incoming_status;       // per incoming file, in walk order
    std::vector<IncomingFlbStatus> incoming_flb_status;  // per incoming.flbs
    std::vector<ConnImage> conns;
    uint64_t leaked_fds = 0;  // kept open after a failed deserialize
    bool operator==(const UpgradeImage&) const = default;
};

}  // namespace lu
