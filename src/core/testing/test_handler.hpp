// SPDX-License-Identifier: Apache-2.0
// A handler for tests, like the kernel's in-kernel LUO test: it accepts
// pipes and FIFOs (which no real handler takes), records every callback in
// order, and fails on request; tests link it to a TestFlb. It lives in the
// lu_test_handler library, not in lu_core: the engine's tests and benchmark
// use it, and liveupdated only when built with LU_FAULT_INJECTION, for its
// --test-handler switch; a production daemon cannot register it.
#pragma once

#include <cerrno>
#include <string>
#include <vector>

#include "file_handler.hpp"

namespace lu {

class TestHandler : public FileHandler {
public:
    std::string_view compatible() const override { return "test-v1"; }
    bool can_preserve(int fd) override;
    int preserve(FileOpArgs& args) override;
    void unpreserve(FileOpArgs& args) override;
    int freeze(FileOpArgs& args) override;
    void unfreeze(FileOpArgs& args) override;
    int retrieve(FileOpArgs& args) override;
    bool can_finish(FileOpArgs& args) override;
    void finish(FileOpArgs& args) override;
    int get_id(int fd, const FdSlot& slot, FileId* id) override;

    // Every callback as "op:id", where id numbers preserves from 0 (it is the
    // file's serialized_data, so it survives a handover).
    std::vector<std::string> log;
    int fail_preserve = 0;          // -errno from the next preserves
    int fail_freeze_at = -1;        // the N-th freeze call (from 0) fails...
    int fail_freeze_errno = -EIO;   // ...with this
    int fail_retrieve = 0;          // -errno from retrieve
    bool refuse_finish = false;     // can_finish answers false
    int retrieve_calls = 0;
    int freeze_calls = 0;
    // Last-seen retrieve_status per finish, in call order.
    std::vector<int> finish_status;

private:
    int next_id_ = 0;
};

}  // namespace lu
