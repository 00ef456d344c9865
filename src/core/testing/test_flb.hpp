// SPDX-License-Identifier: Apache-2.0
// An FLB for tests, linked to the TestHandler: counts every callback, fails
// on request, and tracks the objects it has handed out so a test can see
// that each one is released exactly once. Test-only, like the handler.
#pragma once

#include "flb.hpp"

namespace lu {

class TestFlb : public Flb {
public:
    std::string_view compatible() const override { return "test-flb-v1"; }
    int preserve(FlbOpArgs& args) override;
    void unpreserve(FlbOpArgs& args) override;
    int retrieve(FlbOpArgs& args) override;
    void finish(FlbOpArgs& args) override;

    int preserve_calls = 0, unpreserve_calls = 0, retrieve_calls = 0, finish_calls = 0;
    int fail_preserve = 0;  // -errno to return from preserve, 0 for success
    int fail_retrieve = 0;
    int live_objects = 0;  // objects handed out and not yet released

private:
    // The objects themselves live here: an engine torn down without a
    // release (an instance that ends) must not leak them.
    int outgoing_obj_ = 1;
    int incoming_obj_ = 2;
};

}  // namespace lu
