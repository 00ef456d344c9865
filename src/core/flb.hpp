// SPDX-License-Identifier: Apache-2.0
// File-Lifecycle-Bound data (docs/kernel-semantics.md#flb): global state shared by every
// preserved file of the handlers it is linked to. The engine keeps the
// refcounts; an Flb implements only the four callbacks.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace lu {

class Flb;

// The kernel's struct liveupdate_flb_op_args.
//   preserve:   data, obj out      unpreserve: data, obj in
//   retrieve:   data in, obj out   finish:     obj in
struct FlbOpArgs {
    Flb* flb = nullptr;
    std::vector<uint8_t> data;
    void* obj = nullptr;
};

class Flb {
public:
    virtual ~Flb() = default;
    virtual std::string_view compatible() const = 0;  // at most 47 bytes
    virtual int preserve(FlbOpArgs& args) = 0;
    virtual void unpreserve(FlbOpArgs& args) = 0;
    virtual int retrieve(FlbOpArgs& args) = 0;
    virtual void finish(FlbOpArgs& args) = 0;
};

}  // namespace lu
