// SPDX-License-Identifier: Apache-2.0
// What a daemon instance is told at its start, and what it passes on to the
// next instance so that the next one behaves as this one.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "engine.hpp"

namespace lu {

struct DaemonConfig {
    std::string self_exe;          // the binary this instance runs
    std::string runtime_dir;       // absolute
    std::string group_name;        // --group, or empty
    std::optional<gid_t> group;    // its gid
    bool test_handler = false;     // --test-handler (fault-injection builds)
    bool keeper = true;            // false: --no-keeper (a crash loses the state)
    std::string log_level = "info";  // --log-level (spdlog's names)
    Limits limits;                 // the engine's bounds (the fd budget)
};

}  // namespace lu
