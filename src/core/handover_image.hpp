// SPDX-License-Identifier: Apache-2.0
// The handover as plain data: what one instance hands the next (the
// userspace twin of the kernel's struct luo_ser and its blocks).
// The engine builds it at reboot and consumes it in the next instance;
// handover_writer.cpp turns it into the blob, handover_reader.cpp back,
// validating everything.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lu {

inline constexpr size_t kSessionNameLength = 64;  // LIVEUPDATE_SESSION_NAME_LENGTH
inline constexpr size_t kCompatibleLength = 48;   // compatible[48], NUL included

// What the fd in one slot of the fd table must be: checked with fstat()
// against the fd actually received before anything is walked.
struct FdSlot {
    uint32_t type = 0;  // st_mode & S_IFMT
    uint64_t dev = 0;
    uint64_t ino = 0;
    bool operator==(const FdSlot&) const = default;
};

struct FileImage {
    std::string compatible;  // 1..47 bytes
    uint64_t token = 0;
    std::vector<uint8_t> data;  // the handler's serialized_data
    uint32_t fd_slot = 0;       // index into HandoverImage::fd_slots
    bool operator==(const FileImage&) const = default;
};

struct SessionImage {
    std::string name;  // 1..63 bytes, no NUL inside
    std::vector<FileImage> files;  // preservation order
    bool operator==(const SessionImage&) const = default;
};

struct FlbImage {
    std::string compatible;  // 1..47 bytes
    std::vector<uint8_t> data;
    uint64_t count = 0;  // files that depended on it in the previous instance
    bool operator==(const FlbImage&) const = default;
};

struct HandoverImage {
    uint64_t liveupdate_num = 0;  // the epoch the next instance runs
    std::vector<SessionImage> sessions;  // creation order
    std::vector<FlbImage> flbs;
    std::vector<FdSlot> fd_slots;  // one per preserved file, in walk order
    bool operator==(const HandoverImage&) const = default;
};

FdSlot fd_slot_of(const struct stat& st);

}  // namespace lu
