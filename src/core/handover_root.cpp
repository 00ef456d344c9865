// SPDX-License-Identifier: Apache-2.0
// The handover's FDT root, as KHO has one: a flattened device tree whose
// "LUO" node says where the LUO blob is, how long, and its checksum. Written
// by the encoder, checked byte by byte before libfdt reads it.
// docs/handover-format.md describes the bytes.
#include <libfdt.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "handover_layout.hpp"

namespace lu::handover_layout {
namespace {

// Refused before anything is parsed, so a hostile size costs nothing.
// The FDT root is copied to an aligned buffer (libfdt requires 8-byte
// alignment); like KHO's, it fits in one page.
constexpr size_t kMaxFdtSize = 4096;
// What every libfdt writes with fdt_create(): v1 accepts nothing else.
constexpr uint32_t kFdtVersion = 17;
constexpr uint32_t kFdtLastCompVersion = 16;

constexpr char kLuoNode[] = "LUO";
constexpr char kPropCompatible[] = "compatible";
constexpr char kPropVersion[] = "version";
constexpr char kPropOffset[] = "preserved-data";
constexpr char kPropSize[] = "blob-size";
constexpr char kPropChecksum[] = "checksum";

uint32_t load_be32(const uint8_t* p) {
    return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

// a: a power of two.
uint64_t align_up(uint64_t n, uint64_t a) {
    return (n + a - 1) & ~(a - 1);
}

int fdt_must(int r) {
    // Only reachable if kMaxFdtSize were too small for our fixed set of nodes.
    if (r < 0) throw std::logic_error(std::string("handover FDT: ") + fdt_strerror(r));
    return r;
}

// Builds the FDT root. Its size does not depend on the three LUO values.
size_t build_root(std::array<uint8_t, kMaxFdtSize>& buf, uint64_t luo_off, uint64_t luo_size,
                  uint64_t checksum, const RootKind& kind) {
    void* fdt = buf.data();
    fdt_must(fdt_create_empty_tree(fdt, static_cast<int>(buf.size())));
    fdt_must(fdt_setprop_string(fdt, 0, kPropCompatible, kind.compatible));
    fdt_must(fdt_setprop_u32(fdt, 0, kPropVersion, kind.version));
    int node = fdt_must(fdt_add_subnode(fdt, 0, kLuoNode));
    fdt_must(fdt_setprop_u64(fdt, node, kPropOffset, luo_off));
    fdt_must(fdt_setprop_u64(fdt, node, kPropSize, luo_size));
    fdt_must(fdt_setprop_u64(fdt, node, kPropChecksum, checksum));
    fdt_must(fdt_pack(fdt));
    return fdt_totalsize(fdt);
}

}  // namespace

uint64_t luo_offset(const RootKind& kind) {
    alignas(8) std::array<uint8_t, kMaxFdtSize> buf{};
    return align_up(build_root(buf, 0, 0, 0, kind), 8);
}

void write_root(uint8_t* out, uint64_t luo_size, uint64_t checksum, const RootKind& kind) {
    alignas(8) std::array<uint8_t, kMaxFdtSize> buf{};
    const size_t size = build_root(buf, luo_offset(kind), luo_size, checksum, kind);
    std::memcpy(out, buf.data(), size);
}

namespace {

// The node's properties are exactly `names`, each once: v1 writes nothing else.
int check_prop_names(const void* fdt, int node, std::initializer_list<std::string_view> names,
                     const std::string& where, std::string* why) {
    uint32_t seen = 0;
    int prop;
    fdt_for_each_property_offset(prop, fdt, node) {
        const char* name = nullptr;
        int len = 0;
        if (!fdt_getprop_by_offset(fdt, prop, &name, &len))
            return fail(why, where + ": " + fdt_strerror(len));
        auto it = std::find(names.begin(), names.end(), std::string_view(name));
        if (it == names.end()) return fail(why, where + ": unexpected property " + name);
        uint32_t bit = 1u << (it - names.begin());
        if (seen & bit) return fail(why, where + ": duplicate property " + name);
        seen |= bit;
    }
    if (prop != -FDT_ERR_NOTFOUND) return fail(why, where + ": " + fdt_strerror(prop));
    if (seen != (1u << names.size()) - 1) return fail(why, where + ": missing property");
    return 0;
}

int get_u64_prop(const void* fdt, int node, const char* name, uint64_t* v, std::string* why) {
    int len = 0;
    const void* p = fdt_getprop(fdt, node, name, &len);
    if (!p || len != 8) return fail(why, std::string("LUO node: ") + name + " is not a u64");
    *v = fdt64_ld(static_cast<const fdt64_t*>(p));
    return 0;
}

bool all_zero(const uint8_t* p, size_t n) {
    return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// The FDT header exactly as fdt_pack() writes ours: version 17, an empty
// reservation map right after the header, then the structure and strings
// blocks, no gaps. Checked on the raw bytes before any libfdt call: libfdt
// 1.6.1 crashes on some headers it accepts (fdt_check_full() on a version-14
// tree, found by fuzz/handover_fuzz.cpp; unaligned blocks are known UB), so
// libfdt only ever sees headers of this one shape.
int check_fdt_header(std::span<const uint8_t> blob, std::string* why) {
    if (blob.size() < sizeof(fdt_header)) return fail(why, "blob shorter than an FDT header");
    auto field = [&blob](size_t off) { return uint64_t{load_be32(blob.data() + off)}; };
    if (field(offsetof(fdt_header, magic)) != FDT_MAGIC) return fail(why, "FDT: bad magic");
    const uint64_t total = field(offsetof(fdt_header, totalsize));
    if (total > kMaxFdtSize || total > blob.size())
        return fail(why, "FDT: total size " + std::to_string(total) + " out of bounds");
    const uint64_t rsv = field(offsetof(fdt_header, off_mem_rsvmap));
    const uint64_t st = field(offsetof(fdt_header, off_dt_struct));
    const uint64_t strings = field(offsetof(fdt_header, off_dt_strings));
    if (field(offsetof(fdt_header, version)) != kFdtVersion ||
        field(offsetof(fdt_header, last_comp_version)) != kFdtLastCompVersion ||
        field(offsetof(fdt_header, boot_cpuid_phys)) != 0 || rsv != sizeof(fdt_header) ||
        st != rsv + sizeof(fdt_reserve_entry) ||
        strings != st + field(offsetof(fdt_header, size_dt_struct)) ||
        total != strings + field(offsetof(fdt_header, size_dt_strings)) ||
        !all_zero(blob.data() + rsv, sizeof(fdt_reserve_entry)))
        return fail(why, "FDT: non-canonical header");
    return 0;
}

// Walks the structure block on the raw bytes, before libfdt does: every tag
// in bounds and every length unable to wrap (libfdt 1.6.1 loops forever in
// fdt_check_full() on a property length of 0xfffffff4, which takes its
// cursor back to the tag itself), no NOPs, zero padding (as fdt_setprop()
// leaves it in the encoder's zeroed buffer), FDT_END last. The checksum
// covers only the LUO blob; with this and the header check, no byte of the
// root is without meaning.
int check_fdt_struct(std::span<const uint8_t> blob, std::string* why) {
    const uint64_t end = uint64_t{load_be32(blob.data() + offsetof(fdt_header, off_dt_struct))} +
                         load_be32(blob.data() + offsetof(fdt_header, size_dt_struct));
    uint64_t p = load_be32(blob.data() + offsetof(fdt_header, off_dt_struct));
    // Skips to the next tag: what follows `used` up to it must be zero.
    auto skip_to_tag = [&](uint64_t used) {
        const uint64_t next = align_up(used, sizeof(fdt32_t));
        if (next > end || !all_zero(blob.data() + used, next - used)) return false;
        p = next;
        return true;
    };
    while (end - p >= sizeof(fdt32_t)) {
        const uint32_t tag = load_be32(blob.data() + p);
        p += sizeof(fdt32_t);
        switch (tag) {
            case FDT_BEGIN_NODE: {
                const void* nul = std::memchr(blob.data() + p, 0, end - p);
                if (!nul || !skip_to_tag(static_cast<const uint8_t*>(nul) - blob.data() + 1))
                    return fail(why, "FDT: bad node name");
                break;
            }
            case FDT_PROP: {
                if (end - p < 2 * sizeof(fdt32_t)) return fail(why, "FDT: truncated property");
                const uint32_t len = load_be32(blob.data() + p);
                p += 2 * sizeof(fdt32_t);  // len, nameoff
                if (len > end - p || !skip_to_tag(p + len))
                    return fail(why, "FDT: bad property length");
                break;
            }
            case FDT_END_NODE:
                break;
            case FDT_END:
                if (p != end) return fail(why, "FDT: bytes after FDT_END");
                return 0;
            default:
                return fail(why, "FDT: unexpected tag " + std::to_string(tag));
        }
    }
    return fail(why, "FDT: no FDT_END");
}

// The root's one subnode, LUO: where the LUO blob is, checked against the
// buffer, and its checksum.
int check_luo_node(const void* fdt, uint32_t fdt_size, std::span<const uint8_t> blob,
                   std::span<const uint8_t>* luo, uint64_t min_size, std::string* why) {
    int node = -1, n = 0, sub;
    fdt_for_each_subnode(sub, fdt, 0) {
        node = sub;
        n++;
    }
    if (sub != -FDT_ERR_NOTFOUND) return fail(why, std::string("FDT: ") + fdt_strerror(sub));
    const char* name = n == 1 ? fdt_get_name(fdt, node, nullptr) : nullptr;
    if (!name || std::strcmp(name, kLuoNode) != 0)
        return fail(why, "root must have exactly one subnode, LUO");
    if (fdt_first_subnode(fdt, node) != -FDT_ERR_NOTFOUND)
        return fail(why, "LUO node has a subnode");
    if (int r =
            check_prop_names(fdt, node, {kPropOffset, kPropSize, kPropChecksum}, "LUO node", why))
        return r;

    uint64_t off, size, checksum;
    if (int r = get_u64_prop(fdt, node, kPropOffset, &off, why)) return r;
    if (int r = get_u64_prop(fdt, node, kPropSize, &size, why)) return r;
    if (int r = get_u64_prop(fdt, node, kPropChecksum, &checksum, why)) return r;
    // The LUO blob starts at the first 8-byte boundary after the FDT (zero
    // padding between) and ends the buffer.
    if (off != align_up(fdt_size, 8) || off > blob.size() || size != blob.size() - off)
        return fail(why, "LUO blob extent does not follow the FDT to the end of the buffer");
    if (!all_zero(blob.data() + fdt_size, off - fdt_size))
        return fail(why, "non-zero padding after the FDT");
    if (size < min_size) return fail(why, "LUO blob shorter than its header");
    *luo = blob.subspan(off, size);
    if (XXH3_64bits(luo->data(), luo->size()) != checksum)
        return fail(why, "LUO checksum mismatch");
    return 0;
}

}  // namespace

// The FDT root: checks it and returns the LUO blob it points at.
int check_root(std::span<const uint8_t> blob, std::span<const uint8_t>* luo, std::string* why,
               const RootKind& kind) {
    if (blob.size() > kMaxHandoverSize) return fail(why, "blob larger than 1 GiB");
    if (int r = check_fdt_header(blob, why)) return r;
    if (int r = check_fdt_struct(blob, why)) return r;
    const uint32_t fdt_size = load_be32(blob.data() + offsetof(fdt_header, totalsize));

    alignas(8) std::array<uint8_t, kMaxFdtSize> buf;
    std::memcpy(buf.data(), blob.data(), fdt_size);
    const void* fdt = buf.data();
    if (int r = fdt_check_full(fdt, fdt_size))
        return fail(why, std::string("FDT: ") + fdt_strerror(r));

    int len = 0;
    const void* p = fdt_getprop(fdt, 0, kPropCompatible, &len);
    const size_t want = std::strlen(kind.compatible) + 1;
    if (!p || static_cast<size_t>(len) != want || std::memcmp(p, kind.compatible, want) != 0)
        return fail(why, "root compatible is not " + std::string(kind.compatible));
    p = fdt_getprop(fdt, 0, kPropVersion, &len);
    if (!p || len != 4) return fail(why, "root version is missing or not a u32");
    // Checked before any other structure: a later version may lay out
    // everything below differently, and must be refused as such.
    if (uint32_t v = fdt32_ld(static_cast<const fdt32_t*>(p)); v != kind.version)
        return fail(why,
                    "format version " + std::to_string(v) + ", this build reads only " +
                        std::to_string(kind.version),
                    -EPROTONOSUPPORT);

    if (int r = check_prop_names(fdt, 0, {kPropCompatible, kPropVersion}, "root", why)) return r;
    return check_luo_node(fdt, fdt_size, blob, luo, kind.min_payload, why);
}

}  // namespace lu::handover_layout
