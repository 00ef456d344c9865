// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the handover decoder: it must never crash, and what
// it accepts must re-encode to a blob that decodes to the same image.
//
// Random bytes rarely get past the checksum, so an input refused only for
// its checksum is decoded again with the checksum fixed up: that way the
// mutations reach the structural checks behind it.
//
// Built by fuzz/CMakeLists.txt (fuzz/README.md, scripts/fuzz.sh); by hand:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I src/core -I include \
//       fuzz/handover_fuzz.cpp src/core/handover_*.cpp -lfdt -lxxhash -o handover_fuzz
#include <libfdt.h>
#include <xxhash.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "handover_format.hpp"

namespace {

// Returns why decode refused the blob ("" if it accepted it).
std::string round_trip(std::span<const uint8_t> blob) {
    lu::HandoverImage image;
    std::string why;
    if (lu::decode_handover(blob, &image, &why) != 0) return why;
    lu::HandoverImage again;
    if (lu::decode_handover(lu::encode_handover(image), &again) != 0 || !(again == image)) abort();
    return "";
}

// Recomputes the LUO node's checksum. Only called on a blob whose root the
// decoder has validated (it got as far as the checksum): libfdt itself is not
// safe on arbitrary headers.
void reseal(std::vector<uint8_t>& b) {
    void* fdt = b.data();  // vector storage is 8-byte aligned, as libfdt wants
    const int node = fdt_subnode_offset(fdt, 0, "LUO");
    const auto* off =
        static_cast<const fdt64_t*>(fdt_getprop(fdt, node, "preserved-data", nullptr));
    const uint64_t o = fdt64_ld(off);
    if (fdt_setprop_inplace_u64(fdt, node, "checksum", XXH3_64bits(b.data() + o, b.size() - o)))
        abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (round_trip({data, size}) == "LUO checksum mismatch") {
        std::vector<uint8_t> copy(data, data + size);
        reseal(copy);
        round_trip(copy);
    }
    return 0;
}
