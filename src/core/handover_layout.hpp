// SPDX-License-Identifier: Apache-2.0
// What the handover's writer, reader and root share: the LUO blob's records
// and the FDT root's interface. Private to src/core; docs/handover-format.md
// describes the same bytes, keep them in step.
#pragma once

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "handover_format.hpp"

namespace lu::handover_layout {

// The LUO blob is read and written with memcpy of these records: native
// endian, which must be little so that the documented format is the real one.
static_assert(std::endian::native == std::endian::little, "the LUO blob is little-endian");

// A table: `count` records at `off`; for the data area, `count` is bytes.
// Offsets are relative to the start of the LUO blob.
struct Extent {
    uint64_t off;
    uint64_t count;
};

struct LuoHeader {
    char compatible[8];  // kLuoCompatible, NUL-padded
    uint32_t version;    // kHandoverFormatVersion
    uint32_t pad;        // zero
    uint64_t liveupdate_num;
    Extent sessions;  // SessionRec
    Extent files;     // FileRec, grouped by session in session order
    Extent flbs;      // FlbRec
    Extent fd_slots;  // FdSlotRec
    Extent data;      // bytes; FileRec/FlbRec data_off is relative to data.off
};

struct SessionRec {
    char name[kSessionNameLength];
    uint64_t first_file;  // index into the file table
    uint64_t nr_files;
};

struct FileRec {
    char compatible[kCompatibleLength];
    uint64_t token;
    uint64_t data_off;
    uint64_t data_len;
    uint32_t fd_slot;
    uint32_t pad;
};

struct FlbRec {
    char compatible[kCompatibleLength];
    uint64_t data_off;
    uint64_t data_len;
    uint64_t count;
};

struct FdSlotRec {
    uint32_t type;
    uint32_t pad;
    uint64_t dev;
    uint64_t ino;
};

// The sizes are the format: a change here is a new format version.
static_assert(sizeof(LuoHeader) == 104 && sizeof(SessionRec) == 80 && sizeof(FileRec) == 80 &&
              sizeof(FlbRec) == 72 && sizeof(FdSlotRec) == 24);
static_assert(std::is_trivially_copyable_v<LuoHeader> && std::is_trivially_copyable_v<SessionRec> &&
              std::is_trivially_copyable_v<FileRec> && std::is_trivially_copyable_v<FlbRec> &&
              std::is_trivially_copyable_v<FdSlotRec>);

template <class T>
inline T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <class T>
inline void store(uint8_t* p, const T& v) {
    std::memcpy(p, &v, sizeof v);
}

inline int fail(std::string* why, std::string msg, int err = -EINVAL) {
    if (why) *why = std::move(msg);
    return err;
}

// ---- the FDT root (handover_root.cpp) ----

// Which blob a root introduces: a reboot's handover, or an upgrade's
// (upgrade_format.cpp), each with its own compatible and version, so that a
// build reading one refuses the other at the root.
struct RootKind {
    const char* compatible;
    uint32_t version;
    uint64_t min_payload;  // the payload's header size
};
inline constexpr RootKind kRebootRoot{kHandoverRootCompatible, kHandoverFormatVersion,
                                      sizeof(LuoHeader)};

// Where the LUO blob starts: the first 8-byte boundary after the FDT root,
// whose size does not depend on the values its LUO node holds.
uint64_t luo_offset(const RootKind& kind = kRebootRoot);

// Writes the FDT root at `out` (luo_offset() bytes are reserved for it), its
// LUO node pointing at the LUO blob that follows.
void write_root(uint8_t* out, uint64_t luo_size, uint64_t checksum,
                const RootKind& kind = kRebootRoot);

// Checks the FDT root at the start of `blob` and returns the LUO blob it
// points at, its checksum verified. 0 or -errno, and *why.
int check_root(std::span<const uint8_t> blob, std::span<const uint8_t>* luo, std::string* why,
               const RootKind& kind = kRebootRoot);

}  // namespace lu::handover_layout
