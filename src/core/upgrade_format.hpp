// SPDX-License-Identifier: Apache-2.0
// The upgrade's blob: an FDT root of its own kind ("liveupdate,upgrade-v1")
// whose LUO node points at the upgrade payload: a header, the engine's two
// directions as two embedded reboot handover blobs (each checked as a
// reboot's is), the incoming side's states, the client connections and
// the replies they have not read. docs/handover-format.md describes the
// bytes. As for the reboot's, decode validates everything before anything
// is built, and never crashes on any input.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "upgrade_image.hpp"

namespace lu {

inline constexpr char kUpgradeRootCompatible[] = "liveupdate,upgrade-v1";
inline constexpr char kUpgradeCompatible[] = "luo-upg1";
inline constexpr uint32_t kUpgradeFormatVersion = 1;

// Throws std::invalid_argument for a string it cannot represent and
// std::length_error past kMaxHandoverSize.
std::vector<uint8_t> encode_upgrade(const UpgradeImage& image);

// 0 or -errno (-EINVAL malformed, -EPROTONOSUPPORT another version); on
// failure *out is untouched and *why says what was wrong.
int decode_upgrade(std::span<const uint8_t> blob, UpgradeImage* out, std::string* why = nullptr);

// The number of fds that travel with `image`, in the order upgrade_image.hpp gives.
size_t upgrade_fd_count(const UpgradeImage& image);

// Every fd present and of the kind its place needs: the two images' slots
// as check_handover_fds checks them, connections AF_UNIX SOCK_SEQPACKET
// sockets; held replies' and leaked fds open. fds.size() must be
// upgrade_fd_count(image).
int check_upgrade_fds(const UpgradeImage& image, std::span<const int> fds,
                      std::string* why = nullptr);

}  // namespace lu
