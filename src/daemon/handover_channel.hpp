// SPDX-License-Identifier: Apache-2.0
// The channel between an instance and the next one during a live update: a
// SOCK_SEQPACKET connection the next instance makes to a listener the old
// one opened under an unguessable abstract name (--handover-socket NAME).
// Connected, not inherited: a wrapper script between the two, and any
// child it starts, never holds the channel, so the old instance sees the
// next one's end of file the moment that one dies, and no fd of the
// handover reaches a process that did not ask for it. The old instance
// takes only a peer of its own uid in the process group it started.
// This file is the protocol, both directions; reboot_sender.cpp (the old
// side) and reboot_receiver.cpp (the next side) are its two users.
//
//   old -> next   HELLO (the kind of handover), with fds [blob memfd,
//                 control listener, admin listener, and the next
//                 instance's link to the keeper if there is one]
//   old -> next   FDS batches of at most 253 fds: the preserved ones in slot
//                 order, then (a reboot) the client connections of the epoch
//                 that ends: the next instance answers ESTALE on them, so that
//                 an end of file only ever means a daemon that died
//   next -> old   READY, or FAIL (errno, why)
//   old -> next   COMMIT, or ABORT
//   next -> old   SERVING (the blackout), just before it accepts a client
//
// Every message is one fixed-size ChannelMsg (the fault campaign tells the
// channel's sends from the admin replies by that size).
//
// Beside the channel, the next instance's environment carries kUpdateEnv:
// the update history and this update's clock so far (update_history.hpp),
// as JSON, so that the next instance completes and keeps the measurements.
// The next instance is started before the gate closes (it loads while this
// one still serves): HELLO's text carries the marks made since, the ends
// of the freeze and of the encode, as "FREEZE_NS ENCODE_NS" (an older
// sender leaves it empty, an older receiver ignores it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "handover_image.hpp"
#include "socket_io.hpp"
#include "unique_fd.hpp"

namespace lu {

enum class ChannelType : uint32_t { Hello = 1, Fds, Ready, Fail, Commit, Abort, Serving };

struct ChannelMsg {
    uint32_t magic = 0x4c55484f;  // "LUHO"
    ChannelType type{};
    int32_t err = 0;
    uint32_t nr_fds = 0;      // Hello: preserved fds that follow in Fds batches
    uint64_t t0_ns = 0;       // Hello: CLOCK_MONOTONIC when the gate closed
    uint64_t value = 0;       // Hello: the blob's size; Serving: the blackout in microseconds
    uint32_t kind = 0;        // Hello: what the blob is (HandoverKind)
    uint32_t nr_stale = 0;    // Hello: of nr_fds, the last are old-epoch client connections
    char text[232] = {};      // Fail: why; Hello: the freeze's and the encode's ends
};
static_assert(sizeof(ChannelMsg) == 272);

// What a live update hands over: a reboot's blob (the outgoing sessions,
// docs/handover-format.md) or an upgrade's (the whole state and the
// client connections, upgrade_format.hpp).
enum class HandoverKind : uint32_t { Reboot = 0, Upgrade = 1 };

// What the old instance hands over: the blob, the listeners, the preserved fds.
struct OutgoingState {
    HandoverKind kind = HandoverKind::Reboot;
    int blob_fd = -1;
    int control_listener = -1, admin_listener = -1;
    int keeper_link = -1;  // the next instance's, or -1 (no keeper)
    const std::vector<int>* fds = nullptr;  // slot order, then the stale connections
    size_t nr_stale = 0;  // a reboot: the client connections, answered ESTALE by the next
    uint64_t t0_ns = 0;
    uint64_t freeze_ns = 0, encode_ns = 0;  // the marks HELLO carries (CLOCK_MONOTONIC)
    uint64_t blob_size = 0;
};

// What the next instance received (not yet validated).
struct Incoming {
    HandoverKind kind = HandoverKind::Reboot;
    UniqueFd blob_fd;
    HandoverImage image;        // filled by the receiver once the blob is decoded
    std::vector<UniqueFd> fds;  // fds[i] is slot i
    std::vector<UniqueFd> stale;  // the previous epoch's client connections (a reboot)
    UniqueFd control_listener, admin_listener;
    UniqueFd keeper_link;  // to the keeper (keeper_link.hpp), if the old instance had one
    uint64_t t0_ns = 0;
    uint64_t freeze_ns = 0, encode_ns = 0;  // the old instance's marks, 0 if it sent none
    uint64_t received_ns = 0;  // the last fd batch arrived (CLOCK_MONOTONIC)
    uint64_t ready_ns = 0;     // READY sent
};

// The environment variable with the measurements (see above). The next
// instance reads and removes it; a cold start removes it unread.
inline constexpr const char* kUpdateEnv = "LIVEUPDATE_UPDATE_HISTORY";

// Old side: the listener the next instance connects to, and its name (the
// argument of --handover-socket). 0 or -errno.
int listen_for_next(UniqueFd* listener, std::string* name);
// Old side, when `listener` is readable: the next instance's connection, a
// peer with our uid in process group `pgid` (others are closed unanswered).
// 0, or -EAGAIN (none yet). *peer is the connecting process: the next
// instance, under a wrapper that forked.
int accept_next(int listener, pid_t pgid, UniqueFd* channel, pid_t* peer);
// Next side: connects to the old instance's listener. 0 or -errno.
int connect_to_previous(const std::string& name, UniqueFd* channel);

// CLOCK_MONOTONIC in nanoseconds: the blackout is measured across the two
// processes from the gate's closing.
uint64_t monotonic_ns();

// A message of `type` (and, for Fail, its errno and text).
ChannelMsg channel_msg(ChannelType type, int err = 0, const std::string& text = {});
// True if `bytes` is exactly one well-formed message; fills *m.
bool parse_channel_msg(const std::vector<uint8_t>& bytes, ChannelMsg* m);

// One message, a transient ENOBUFS/ENOMEM retried: failing a live update for
// want of a buffer would be a needless rollback. 0 or -errno.
int send_on_channel(int channel, const ChannelMsg& m, std::span<const int> fds = {});

// Old side: HELLO and the FDS batches. The socket may block (SO_SNDTIMEO
// bounds it). 0 or -errno.
int send_state(int channel, const OutgoingState& state);

// Next side: blocks up to timeout_ms for one message with at most max_fds
// fds. 1, or -errno (-ETIMEDOUT).
int recv_on_channel(int channel, Message* m, size_t max_fds, int timeout_ms);
// Next side: HELLO and the FDS batches into *in (image not decoded). 0, or
// -errno with *why.
int receive_state(int channel, Incoming* in, std::string* why);

}  // namespace lu
