// SPDX-License-Identifier: Apache-2.0
// What the engine's translation units share and nobody else sees: the
// per-handler and per-FLB bookkeeping (the kernel keeps the same in the
// private parts of struct liveupdate_file_handler and struct liveupdate_flb).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "file_handler.hpp"
#include "flb.hpp"
#include "handover_image.hpp"

namespace lu {

// One FLB's two lifetimes: the outgoing one counts the preserved files of
// its handlers, the incoming one the references taken on what the previous
// instance handed over.
struct FlbState {
    Flb* flb = nullptr;
    int users = 0;  // handlers linked to it
    struct {
        uint64_t count = 0;  // preserved files of linked handlers, all sessions
        std::vector<uint8_t> data;
        void* obj = nullptr;
    } outgoing;
    struct {
        bool present = false;  // the previous instance handed this FLB over
        // Loaded from the handover up front, not at the first get: see
        // docs/kernel-semantics.md#flb-incoming.
        uint64_t count = 0;
        std::vector<uint8_t> data;
        void* obj = nullptr;
        // 0 never, 1 ok, <0 failed and final: docs/kernel-semantics.md#retrieve-is-final
        int retrieve_status = 0;
        bool finished = false;
    } incoming;
};

// A registered handler and the FLBs linked to it.
struct FileHandlerEntry {
    std::unique_ptr<FileHandler> ops;
    std::vector<FlbState*> flbs;  // link order
};

// A compatible string fits its 48-byte field with the NUL.
inline bool valid_compatible(std::string_view c) {
    return !c.empty() && c.size() < kCompatibleLength && c.find('\0') == std::string_view::npos;
}

}  // namespace lu
