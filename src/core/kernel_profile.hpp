// SPDX-License-Identifier: Apache-2.0
// The kernel releases whose uAPI behaviour this engine models, and what
// differs between them. Each field is consulted at the one check that
// differs, named after the kernel function it comes from; everything not
// here is the same in every modelled release. The list, with its sources,
// is in docs/kernel-differences.md ("Kernel releases").
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace lu {

struct KernelProfile {
    std::string_view release;  // "7.2"
    // luo_session_create (v7.2): an empty name, or one with no NUL in its
    // 64 bytes, is EINVAL. Before: accepted, strscpy'd (truncated to 63
    // bytes; an empty name is a name).
    bool session_name_checked;
    // luo_session_ioctl (v7.2): FINISH and RETRIEVE_FD need an incoming
    // session, PRESERVE_FD an outgoing one, checked (EINVAL) before the
    // size. Before: no such check.
    bool session_type_checked;
    // luo_session_ioctl's table: 4 ioctls from v7.2 (GET_NAME, 0x43), 3
    // before (0x43 is then out of range: EINVAL).
    unsigned session_ioctls;
    // luo_session_insert: the outgoing session limit and its errno. v7.2:
    // the block chain, ~510,000, ENOSPC; before: LUO_SESSION_MAX, 819
    // (16 pages of 80-byte entries after an 8-byte header), ENOMEM.
    size_t max_sessions;
    int sessions_errno;  // positive
    // luo_preserve_file: files per session (ENOSPC in both). v7.2: the
    // block chain, ~630,000; before: LUO_FILE_MAX, 128.
    size_t max_files_per_session;
};

// Every modelled release, oldest first; the last is the default.
std::span<const KernelProfile> kernel_profiles();
const KernelProfile& newest_kernel_profile();
// nullptr if the release is not modelled.
const KernelProfile* find_kernel_profile(std::string_view release);

}  // namespace lu
