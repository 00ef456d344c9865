// SPDX-License-Identifier: Apache-2.0
// The handover blob: an FDT root (libfdt), as KHO has, whose "LUO" node
// points at the LUO blob, checksummed with xxhash. docs/handover-format.md
// describes the bytes.
//
// decode() validates *everything before it walks anything*: magic,
// compatible strings and version, sizes, every offset and count in bounds,
// extents that do not overlap, strings terminated, names valid, tokens unique
// per session, fd slots referenced once each. It never trusts a count or an
// offset it has not checked, and never crashes on any input.
//
// handover_writer.cpp encodes, handover_root.cpp writes and checks the FDT
// root, handover_reader.cpp decodes the LUO blob, handover_fds.cpp checks
// the fds; handover_layout.hpp holds the records they share.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "handover_image.hpp"

namespace lu {

inline constexpr char kHandoverRootCompatible[] = "liveupdate,kho-v1";
inline constexpr char kLuoCompatible[] = "luo-lu1";  // the LUO ABI of this release
inline constexpr uint32_t kHandoverFormatVersion = 1;
// The largest blob either side accepts (encode throws std::length_error past it).
inline constexpr size_t kMaxHandoverSize = size_t{1} << 30;

// Throws std::invalid_argument for a string it cannot represent and
// std::length_error past kMaxHandoverSize.
std::vector<uint8_t> encode_handover(const HandoverImage& image);

// 0 or -errno (-EINVAL for a malformed blob, -EPROTONOSUPPORT for a
// well-formed blob of another format version). On failure *out is untouched
// and *why (if given) says what was wrong.
int decode_handover(std::span<const uint8_t> blob, HandoverImage* out, std::string* why = nullptr);

// Every slot's fd is present and of the recorded kind (fstat type, device,
// inode). fds[i] is the fd received for slot i.
int check_handover_fds(const HandoverImage& image, std::span<const int> fds,
                       std::string* why = nullptr);

}  // namespace lu
