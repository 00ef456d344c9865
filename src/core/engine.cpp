// SPDX-License-Identifier: Apache-2.0
// The engine as an instance: construction, teardown and the file handler
// registry (the kernel's liveupdate_register_file_handler). Sessions, files,
// FLBs, the reboot and the next instance each have their own engine_*.cpp,
// along the seams of the kernel's luo_session.c, luo_file.c, luo_flb.c and
// luo_core.c.
#include <algorithm>
#include <cerrno>

#include "engine.hpp"
#include "engine_internal.hpp"

namespace lu {

namespace {

Limits within(Limits l, const KernelProfile& p) {
    l.sessions = std::min(l.sessions, p.max_sessions);
    l.files_per_session = std::min(l.files_per_session, p.max_files_per_session);
    return l;
}

}  // namespace

Engine::Engine(Limits limits, const KernelProfile& profile)
    : profile_(profile), limits_(within(limits, profile)) {}

// Instance teardown is not a release: sessions still open when the engine
// goes away belong to the next instance (or are lost with this process), so
// no handler callback runs here. Owned fds close with their UniqueFd.
Engine::~Engine() = default;

// docs/kernel-semantics.md#flb-register (handlers): registration order is
// matching priority.
int Engine::register_file_handler(std::unique_ptr<FileHandler> fh) {
    if (!fh || !valid_compatible(fh->compatible())) return -EINVAL;
    for (auto& e : handlers_)
        if (e->ops->compatible() == fh->compatible()) return -EEXIST;
    auto entry = std::make_unique<FileHandlerEntry>();
    entry->ops = std::move(fh);
    handlers_.push_back(std::move(entry));
    return 0;
}

FileHandlerEntry* Engine::find_handler(std::string_view compatible) const {
    for (auto& e : handlers_)
        if (e->ops->compatible() == compatible) return e.get();
    return nullptr;
}

std::string_view Engine::compatible_of(const LuoFile& f) const { return f.fh->ops->compatible(); }

}  // namespace lu
