// SPDX-License-Identifier: Apache-2.0
// The modelled kernel releases (kernel_profile.hpp says what each field is).
#include "kernel_profile.hpp"

#include <cerrno>

namespace lu {

namespace {

// 10000 blocks of (4096 - 16) / 80 = 51 sessions, of (4096 - 16) / 64 = 63 files.
constexpr size_t kBlockChainSessions = 10000 * 51;
constexpr size_t kBlockChainFiles = 10000 * 63;

constexpr KernelProfile kProfiles[] = {
    // v7.0 and v7.1 share the uAPI: FLBs, can_finish and the managed-file
    // set arrived in v7.0, nothing the uAPI shows changed in v7.1.
    {"7.1", false, false, 3, (16 * 4096 - 8) / 80, ENOMEM, 128},
    {"7.2", true, true, 4, kBlockChainSessions, ENOSPC, kBlockChainFiles},
};

}  // namespace

std::span<const KernelProfile> kernel_profiles() { return kProfiles; }

const KernelProfile& newest_kernel_profile() { return kProfiles[std::size(kProfiles) - 1]; }

const KernelProfile* find_kernel_profile(std::string_view release) {
    for (const KernelProfile& p : kProfiles)
        if (p.release == release) return &p;
    return nullptr;
}

}  // namespace lu
