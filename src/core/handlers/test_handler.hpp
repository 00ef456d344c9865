// A handler for tests, like the kernel's in-kernel LUO test: it accepts
// pipes and FIFOs (which no real handler takes), records every callback in
// order, and fails on request. Linked to a TestFlb. Never registered by a
// release daemon; tests and the daemon's test-only fault switch use it.
#pragma once

#include <string>
#include <vector>

#include "file_handler.hpp"
#include "flb.hpp"

namespace lu {

class Engine;

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
    int get_id(int fd, FileId* id) override;

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
