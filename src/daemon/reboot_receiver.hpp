// SPDX-License-Identifier: Apache-2.0
// The next side of `liveupdatectl reboot`: the instance started by the old
// one, which connects to it for the state (handover_channel.hpp). In order: receive the
// state, validate it, report READY, wait for the verdict, deserialize, and
// serve. reboot_sender.cpp is the other side; docs/live-update.md the
// sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "daemon_config.hpp"

namespace lu {

class Daemon;

// How the next side ended.
struct NextSideOutcome {
    enum class Kind {
        Serve,      // committed (or the old instance is gone): run `daemon`
        Validated,  // --validate-only: the state would be accepted
        Aborted,    // the old instance sent ABORT
        Refused,    // the state was refused (FAIL sent): the old one rolls back
        Failed,     // the channel failed: the old one rolls back (or did)
    };
    Kind kind;
    std::unique_ptr<Daemon> daemon;  // Kind::Serve

    int exit_code() const { return kind == Kind::Validated || kind == Kind::Aborted ? 0 : 1; }
};

// `socket` is the name the old instance passed (--handover-socket).
// `started_ns` is when main() began (CLOCK_MONOTONIC): the end of the
// update's spawn phase, as this instance measures it.
NextSideOutcome run_next_side(const std::string& socket, const DaemonConfig& config, const std::string& fault,
                              bool validate_only, uint64_t started_ns);

// The faults of this side (--fault), each tested at its step.
bool receiver_fault(const std::string& fault);

}  // namespace lu
