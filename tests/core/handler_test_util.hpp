// SPDX-License-Identifier: Apache-2.0
// Drives one FileHandler the way the engine does, without the engine: the
// outgoing preserve, and the next instance's retrieve of what crossed.
#pragma once

#include <fcntl.h>

#include <vector>

#include "file_handler.hpp"
#include "unique_fd.hpp"

namespace lu::testing {

// The outgoing side: the engine preserves its own dup of the caller's fd.
struct Outgoing {
    UniqueFd fd;
    FileOpArgs args;
};

inline int preserve(FileHandler& h, int caller_fd, Outgoing& out) {
    out.fd.reset(fcntl(caller_fd, F_DUPFD_CLOEXEC, 0));
    out.args.handler = &h;
    out.args.file = out.fd.get();
    return h.preserve(out.args);
}

// The next instance: `preserved` is what crossed the handover.
struct Incoming {
    UniqueFd preserved;
    UniqueFd file;
    FileOpArgs args;
};

inline int retrieve(FileHandler& h, int engine_fd, std::vector<uint8_t> data, Incoming& in) {
    in.preserved.reset(fcntl(engine_fd, F_DUPFD_CLOEXEC, 0));
    in.args.handler = &h;
    in.args.preserved = in.preserved.get();
    in.args.serialized_data = std::move(data);
    const int r = h.retrieve(in.args);
    in.args.retrieve_status = r == 0 ? 1 : r;
    if (r == 0) in.file.reset(in.args.file);
    return r;
}

}  // namespace lu::testing
