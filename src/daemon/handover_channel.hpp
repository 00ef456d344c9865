// The messages between an instance and the next one during a live update.
#pragma once

#include <cstdint>
#include <vector>

#include "handover_image.hpp"
#include "unique_fd.hpp"

namespace lu {

enum class ChannelType : uint32_t { Hello = 1, Fds, Ready, Fail, Commit, Abort, Serving };

struct ChannelMsg {
    uint32_t magic = 0x4c55484f;  // "LUHO"
    ChannelType type{};
    int32_t err = 0;
    uint32_t nr_fds = 0;      // Hello: preserved fds that follow in Fds batches
    uint64_t t0_ns = 0;       // Hello: CLOCK_MONOTONIC when the gate closed
    uint64_t value = 0;       // Serving: the blackout in microseconds
    char text[240] = {};      // Fail: why
};

// What the next instance received and accepted.
struct Incoming {
    HandoverImage image;
    std::vector<UniqueFd> fds;  // fds[i] is slot i
    UniqueFd control_listener, admin_listener;
    uint64_t t0_ns = 0;
    uint64_t received_ns = 0;  // the last fd batch arrived (CLOCK_MONOTONIC)
    uint64_t ready_ns = 0;     // READY sent
};

uint64_t monotonic_ns();

// send_message_retrying of one message. 0 or -errno.
int send_on_channel(int channel, const ChannelMsg& m);

}  // namespace lu
