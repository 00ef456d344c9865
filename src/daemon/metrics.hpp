// SPDX-License-Identifier: Apache-2.0
// The daemon's numbers in the OpenMetrics text format, for Prometheus's
// node-exporter textfile collector or any scraper: `liveupdatectl metrics`.
#pragma once

#include <cstdint>
#include <string>

#include "update_history.hpp"

namespace lu {

// What the daemon holds right now.
struct Gauges {
    uint64_t epoch = 0;
    uint64_t outgoing_sessions = 0;
    uint64_t incoming_sessions = 0;
    uint64_t preserved_files = 0;
    uint64_t preserved_bytes = 0;  // sizes of the regular files among them
    uint64_t fds_in_use = 0;
    uint64_t fds_limit = 0;        // RLIMIT_NOFILE's soft limit
};

// The whole exposition, ending with "# EOF".
std::string render_openmetrics(const UpdateHistory& h, const Gauges& g);

}  // namespace lu
