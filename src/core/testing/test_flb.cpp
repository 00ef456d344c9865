// SPDX-License-Identifier: Apache-2.0
#include "testing/test_flb.hpp"

#include <cerrno>

namespace lu {

int TestFlb::preserve(FlbOpArgs& args) {
    preserve_calls++;
    if (fail_preserve) return fail_preserve;
    args.data = {'f', 'l', 'b'};
    args.obj = &outgoing_obj_;
    live_objects++;
    return 0;
}

void TestFlb::unpreserve(FlbOpArgs&) {
    unpreserve_calls++;
    live_objects--;
}

int TestFlb::retrieve(FlbOpArgs& args) {
    retrieve_calls++;
    if (fail_retrieve) return fail_retrieve;
    if (args.data != std::vector<uint8_t>{'f', 'l', 'b'}) return -EINVAL;
    args.obj = &incoming_obj_;
    live_objects++;
    return 0;
}

void TestFlb::finish(FlbOpArgs&) {
    finish_calls++;
    live_objects--;
}

}  // namespace lu
