// SPDX-License-Identifier: Apache-2.0
// Error paths on demand, for agents' tests (docs/testing-luo-agents.md):
// each fault makes one of the kernel's own error paths run, the one a
// failing handler would take, so an agent can be tested against it on a
// machine where nothing fails. The daemon arms them only when started with
// --agent-faults; the uAPI cannot.
#include <cassert>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

void Engine::fail_freeze_at(size_t k, int err) {
    assert(err > 0);
    freeze_fault_at_ = static_cast<long>(k);
    freeze_fault_err_ = err;
}

// Called once per file by session_freeze, in freeze order.
int Engine::injected_freeze_error() {
    size_t k = freeze_seq_++;
    return freeze_fault_at_ >= 0 && k == static_cast<size_t>(freeze_fault_at_) ? -freeze_fault_err_ : 0;
}

// As a failed handler retrieve leaves it (engine_file.cpp, retrieve_fd): the
// errno recorded, the handed-over fd kept for finish to release.
int Engine::fail_retrieve(std::string_view session, uint64_t token, int err) {
    assert(err > 0);
    auto it = incoming_by_name_.find(std::string(session));
    if (it == incoming_by_name_.end()) return -ENOENT;
    auto f = it->second->by_token_.find(token);
    if (f == it->second->by_token_.end()) return -ENOENT;
    if (f->second->args.retrieve_status != 0) return -EALREADY;
    f->second->args.retrieve_status = -err;
    return 0;
}

int Engine::refuse_finish_once(std::string_view session) {
    auto it = incoming_by_name_.find(std::string(session));
    if (it == incoming_by_name_.end()) return -ENOENT;
    it->second->refuse_finish_once_ = true;
    return 0;
}

}  // namespace lu
