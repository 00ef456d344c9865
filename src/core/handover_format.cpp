// The handover blob: encode, validate + decode, and the fd check.
// docs/handover-format.md is the byte-level description; keep them in step.
#include "handover_format.hpp"

#include <libfdt.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <unordered_set>

namespace lu {
namespace {

// The LUO blob is read and written with memcpy of these records: native
// endian, which must be little so that the documented format is the real one.
static_assert(std::endian::native == std::endian::little, "the LUO blob is little-endian");

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
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <class T>
void store(uint8_t* p, const T& v) {
    std::memcpy(p, &v, sizeof v);
}

uint32_t load_be32(const uint8_t* p) {
    return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

// a: a power of two.
uint64_t align_up(uint64_t n, uint64_t a) {
    return (n + a - 1) & ~(a - 1);
}

int fail(std::string* why, std::string msg, int err = -EINVAL) {
    if (why) *why = std::move(msg);
    return err;
}

// ---- encode ----

int fdt_must(int r) {
    // Only reachable if kMaxFdtSize were too small for our fixed set of nodes.
    if (r < 0) throw std::logic_error(std::string("handover FDT: ") + fdt_strerror(r));
    return r;
}

template <size_t N>
void put_string(char (&dst)[N], const std::string& s, const char* what) {
    if (s.empty() || s.size() >= N || s.find('\0') != std::string::npos)
        throw std::invalid_argument(std::string("handover: unrepresentable ") + what + " \"" + s +
                                    "\"");
    std::memset(dst, 0, N);
    std::memcpy(dst, s.data(), s.size());
}

// Builds the FDT root with the three LUO values still zero: its size does not
// depend on them, and the LUO offset depends on its size.
size_t build_fdt(std::array<uint8_t, kMaxFdtSize>& buf) {
    void* fdt = buf.data();
    fdt_must(fdt_create_empty_tree(fdt, static_cast<int>(buf.size())));
    fdt_must(fdt_setprop_string(fdt, 0, kPropCompatible, kHandoverRootCompatible));
    fdt_must(fdt_setprop_u32(fdt, 0, kPropVersion, kHandoverFormatVersion));
    int node = fdt_must(fdt_add_subnode(fdt, 0, kLuoNode));
    fdt_must(fdt_setprop_u64(fdt, node, kPropOffset, 0));
    fdt_must(fdt_setprop_u64(fdt, node, kPropSize, 0));
    fdt_must(fdt_setprop_u64(fdt, node, kPropChecksum, 0));
    fdt_must(fdt_pack(fdt));
    return fdt_totalsize(fdt);
}

}  // namespace

std::vector<uint8_t> encode_handover(const HandoverImage& image) {
    uint64_t nr_files = 0, data_size = 0;
    for (const SessionImage& s : image.sessions) {
        nr_files += s.files.size();
        for (const FileImage& f : s.files) data_size += f.data.size();
    }
    for (const FlbImage& b : image.flbs) data_size += b.data.size();

    // Layout: header, then the tables in this order, then the data area.
    LuoHeader h{};
    std::memcpy(h.compatible, kLuoCompatible, sizeof kLuoCompatible);
    h.version = kHandoverFormatVersion;
    h.liveupdate_num = image.liveupdate_num;
    uint64_t off = sizeof(LuoHeader);
    auto place = [&off](Extent& e, uint64_t count, uint64_t size) {
        e = {off, count};
        off += count * size;
    };
    place(h.sessions, image.sessions.size(), sizeof(SessionRec));
    place(h.files, nr_files, sizeof(FileRec));
    place(h.flbs, image.flbs.size(), sizeof(FlbRec));
    place(h.fd_slots, image.fd_slots.size(), sizeof(FdSlotRec));
    place(h.data, data_size, 1);
    const uint64_t luo_size = off;

    alignas(8) std::array<uint8_t, kMaxFdtSize> fdt{};
    const size_t fdt_size = build_fdt(fdt);
    const uint64_t luo_off = align_up(fdt_size, 8);
    if (luo_size > kMaxHandoverSize - luo_off)
        throw std::length_error("handover: image larger than the 1 GiB limit");

    std::vector<uint8_t> out(luo_off + luo_size);  // zeroed: padding is canonical zero
    uint8_t* luo = out.data() + luo_off;
    store(luo, h);

    uint64_t file_index = 0, data_off = 0;
    auto put_data = [&](const std::vector<uint8_t>& d) {
        if (!d.empty()) std::memcpy(luo + h.data.off + data_off, d.data(), d.size());
        data_off += d.size();
    };
    for (size_t i = 0; i < image.sessions.size(); i++) {
        const SessionImage& s = image.sessions[i];
        SessionRec sr{};
        put_string(sr.name, s.name, "session name");
        sr.first_file = file_index;
        sr.nr_files = s.files.size();
        store(luo + h.sessions.off + i * sizeof(SessionRec), sr);
        for (const FileImage& f : s.files) {
            FileRec fr{};
            put_string(fr.compatible, f.compatible, "file compatible");
            fr.token = f.token;
            fr.data_off = data_off;
            fr.data_len = f.data.size();
            fr.fd_slot = f.fd_slot;
            put_data(f.data);
            store(luo + h.files.off + file_index++ * sizeof(FileRec), fr);
        }
    }
    for (size_t i = 0; i < image.flbs.size(); i++) {
        const FlbImage& b = image.flbs[i];
        FlbRec br{};
        put_string(br.compatible, b.compatible, "FLB compatible");
        br.data_off = data_off;
        br.data_len = b.data.size();
        br.count = b.count;
        put_data(b.data);
        store(luo + h.flbs.off + i * sizeof(FlbRec), br);
    }
    for (size_t i = 0; i < image.fd_slots.size(); i++) {
        const FdSlot& s = image.fd_slots[i];
        store(luo + h.fd_slots.off + i * sizeof(FdSlotRec), FdSlotRec{s.type, 0, s.dev, s.ino});
    }

    const uint64_t checksum = XXH3_64bits(luo, luo_size);
    int node = fdt_must(fdt_subnode_offset(fdt.data(), 0, kLuoNode));
    fdt_must(fdt_setprop_inplace_u64(fdt.data(), node, kPropOffset, luo_off));
    fdt_must(fdt_setprop_inplace_u64(fdt.data(), node, kPropSize, luo_size));
    fdt_must(fdt_setprop_inplace_u64(fdt.data(), node, kPropChecksum, checksum));
    std::memcpy(out.data(), fdt.data(), fdt_size);
    return out;
}

// ---- decode ----

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

// The FDT root: checks it and returns the LUO blob it points at.
int check_root(std::span<const uint8_t> blob, std::span<const uint8_t>* luo, std::string* why) {
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
    if (!p || len != sizeof kHandoverRootCompatible ||
        std::memcmp(p, kHandoverRootCompatible, len) != 0)
        return fail(why, "root compatible is not " + std::string(kHandoverRootCompatible));
    p = fdt_getprop(fdt, 0, kPropVersion, &len);
    if (!p || len != 4) return fail(why, "root version is missing or not a u32");
    // Checked before any other structure: a later version may lay out
    // everything below differently, and must be refused as such.
    if (uint32_t v = fdt32_ld(static_cast<const fdt32_t*>(p)); v != kHandoverFormatVersion)
        return fail(why,
                    "format version " + std::to_string(v) + ", this build reads only " +
                        std::to_string(kHandoverFormatVersion),
                    -EPROTONOSUPPORT);

    if (int r = check_prop_names(fdt, 0, {kPropCompatible, kPropVersion}, "root", why)) return r;
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
    if (size < sizeof(LuoHeader)) return fail(why, "LUO blob shorter than its header");
    *luo = blob.subspan(off, size);
    if (XXH3_64bits(luo->data(), luo->size()) != checksum)
        return fail(why, "LUO checksum mismatch");
    return 0;
}

// A canonical fixed-size string: 1..N-1 bytes, a NUL, then only NULs.
// Returns null if valid (with the length in *len), else what is wrong.
const char* check_string(const char* s, size_t n, size_t* len) {
    const size_t l = strnlen(s, n);
    if (l == 0) return "empty";
    if (l == n) return "not terminated";
    if (std::any_of(s + l, s + n, [](char c) { return c != 0; })) return "bytes after the NUL";
    *len = l;
    return nullptr;
}

// Everything in the LUO blob, validated; decode builds the image from it.
class LuoReader {
  public:
    LuoReader(std::span<const uint8_t> luo, std::string* why) : luo_(luo), why_(why) {}

    int check() {
        h_ = load<LuoHeader>(luo_.data());
        if (int r = check_header()) return r;
        if (int r = check_sessions()) return r;
        if (int r = check_files()) return r;
        if (int r = check_flbs()) return r;
        if (int r = check_data_extents()) return r;
        return check_fd_slots();
    }

    HandoverImage build() const {
        HandoverImage img;
        img.liveupdate_num = h_.liveupdate_num;
        img.sessions.resize(h_.sessions.count);
        for (uint64_t i = 0; i < h_.sessions.count; i++) {
            const SessionRec sr = session(i);
            SessionImage& s = img.sessions[i];
            s.name.assign(sr.name, strnlen(sr.name, sizeof sr.name));
            s.files.resize(sr.nr_files);
            for (uint64_t j = 0; j < sr.nr_files; j++) {
                const FileRec fr = file(sr.first_file + j);
                FileImage& f = s.files[j];
                f.compatible.assign(fr.compatible, strnlen(fr.compatible, sizeof fr.compatible));
                f.token = fr.token;
                f.data = bytes(fr.data_off, fr.data_len);
                f.fd_slot = fr.fd_slot;
            }
        }
        img.flbs.resize(h_.flbs.count);
        for (uint64_t i = 0; i < h_.flbs.count; i++) {
            const FlbRec br = flb(i);
            FlbImage& b = img.flbs[i];
            b.compatible.assign(br.compatible, strnlen(br.compatible, sizeof br.compatible));
            b.data = bytes(br.data_off, br.data_len);
            b.count = br.count;
        }
        img.fd_slots.resize(h_.fd_slots.count);
        for (uint64_t i = 0; i < h_.fd_slots.count; i++) {
            const FdSlotRec sr = slot(i);
            img.fd_slots[i] = {sr.type, sr.dev, sr.ino};
        }
        return img;
    }

  private:
    // A table or area, for the overlap check.
    struct Span {
        uint64_t begin, end;
        const char* name;
    };

    int bad(const std::string& msg, int err = -EINVAL) const { return fail(why_, msg, err); }

    template <class T>
    T record(const Extent& table, uint64_t i) const {
        return load<T>(luo_.data() + table.off + i * sizeof(T));
    }
    SessionRec session(uint64_t i) const { return record<SessionRec>(h_.sessions, i); }
    FileRec file(uint64_t i) const { return record<FileRec>(h_.files, i); }
    FlbRec flb(uint64_t i) const { return record<FlbRec>(h_.flbs, i); }
    FdSlotRec slot(uint64_t i) const { return record<FdSlotRec>(h_.fd_slots, i); }
    std::vector<uint8_t> bytes(uint64_t off, uint64_t len) const {
        const uint8_t* p = luo_.data() + h_.data.off + off;
        return {p, p + len};
    }

    // count records of `size` bytes at e.off lie within the blob; the
    // division keeps count * size from overflowing.
    int check_extent(const Extent& e, uint64_t size, const char* name, std::vector<Span>* spans) {
        const uint64_t n = luo_.size();
        if (e.off > n || e.count > (n - e.off) / size)
            return bad(std::string(name) + ": " + std::to_string(e.count) + " entries at offset " +
                       std::to_string(e.off) + " exceed the LUO blob (" + std::to_string(n) +
                       " bytes)");
        if (e.count) spans->push_back({e.off, e.off + e.count * size, name});
        return 0;
    }

    int check_header() {
        size_t len = 0;
        if (const char* err = check_string(h_.compatible, sizeof h_.compatible, &len))
            return bad(std::string("LUO compatible: ") + err);
        if (std::string_view(h_.compatible, len) != kLuoCompatible)
            return bad("LUO compatible is " + std::string(h_.compatible, len) +
                           ", this build reads " + kLuoCompatible,
                       -EPROTONOSUPPORT);
        if (h_.version != kHandoverFormatVersion)
            return bad("LUO version " + std::to_string(h_.version) + ", this build reads only " +
                           std::to_string(kHandoverFormatVersion),
                       -EPROTONOSUPPORT);
        if (h_.pad != 0) return bad("LUO header: non-zero padding");

        std::vector<Span> spans{{0, sizeof(LuoHeader), "header"}};
        if (int r = check_extent(h_.sessions, sizeof(SessionRec), "session table", &spans))
            return r;
        if (int r = check_extent(h_.files, sizeof(FileRec), "file table", &spans)) return r;
        if (int r = check_extent(h_.flbs, sizeof(FlbRec), "FLB table", &spans)) return r;
        if (int r = check_extent(h_.fd_slots, sizeof(FdSlotRec), "fd slot table", &spans)) return r;
        if (int r = check_extent(h_.data, 1, "data area", &spans)) return r;
        std::sort(spans.begin(), spans.end(),
                  [](const Span& a, const Span& b) { return a.begin < b.begin; });
        for (size_t i = 1; i < spans.size(); i++)
            if (spans[i].begin < spans[i - 1].end)
                return bad(std::string(spans[i].name) + " overlaps " + spans[i - 1].name);
        if (h_.fd_slots.count != h_.files.count)
            return bad(std::to_string(h_.fd_slots.count) + " fd slots for " +
                       std::to_string(h_.files.count) + " files");
        return 0;
    }

    // Names valid and unique; file ranges tile the file table in order.
    int check_sessions() {
        std::unordered_set<std::string_view> names;
        names.reserve(h_.sessions.count);
        uint64_t next = 0;
        for (uint64_t i = 0; i < h_.sessions.count; i++) {
            const std::string at = "session " + std::to_string(i);
            // Views into the blob itself, which outlives this check.
            const char* name = reinterpret_cast<const char*>(luo_.data() + h_.sessions.off +
                                                             i * sizeof(SessionRec));
            size_t len = 0;
            if (const char* err = check_string(name, kSessionNameLength, &len))
                return bad(at + ": name " + err);
            if (!names.emplace(name, len).second)
                return bad(at + ": duplicate name \"" + std::string(name, len) + "\"");
            const SessionRec sr = session(i);
            if (sr.first_file != next)
                return bad(at + ": files start at " + std::to_string(sr.first_file) +
                           ", expected " + std::to_string(next));
            if (sr.nr_files > h_.files.count - next)
                return bad(at + ": " + std::to_string(sr.nr_files) +
                           " files run past the file table");
            next += sr.nr_files;
        }
        if (next != h_.files.count)
            return bad(std::to_string(h_.files.count - next) + " files belong to no session");
        return 0;
    }

    // Each file well-formed, its token unique in its session, its fd slot
    // in range and used by no other file.
    int check_files() {
        std::vector<bool> slot_used(h_.fd_slots.count);
        std::vector<uint64_t> tokens;
        for (uint64_t i = 0; i < h_.sessions.count; i++) {
            const SessionRec sr = session(i);
            tokens.clear();
            for (uint64_t j = sr.first_file; j < sr.first_file + sr.nr_files; j++) {
                const std::string at = "file " + std::to_string(j);
                const FileRec fr = file(j);
                size_t len = 0;
                if (const char* err = check_string(fr.compatible, sizeof fr.compatible, &len))
                    return bad(at + ": compatible " + err);
                if (fr.pad != 0) return bad(at + ": non-zero padding");
                if (int r = check_data(fr.data_off, fr.data_len, at)) return r;
                if (fr.fd_slot >= h_.fd_slots.count)
                    return bad(at + ": fd slot " + std::to_string(fr.fd_slot) + " out of range");
                if (slot_used[fr.fd_slot])
                    return bad(at + ": fd slot " + std::to_string(fr.fd_slot) + " used twice");
                slot_used[fr.fd_slot] = true;
                tokens.push_back(fr.token);
            }
            // Sorting keeps this O(n log n) whatever the session sizes.
            std::sort(tokens.begin(), tokens.end());
            if (auto it = std::adjacent_find(tokens.begin(), tokens.end()); it != tokens.end())
                return bad("session " + std::to_string(i) + ": duplicate token " +
                           std::to_string(*it));
        }
        // With as many slots as files, each used at most once: each used once.
        return 0;
    }

    int check_flbs() {
        std::unordered_set<std::string_view> names;
        names.reserve(h_.flbs.count);
        for (uint64_t i = 0; i < h_.flbs.count; i++) {
            const std::string at = "FLB " + std::to_string(i);
            const char* name =
                reinterpret_cast<const char*>(luo_.data() + h_.flbs.off + i * sizeof(FlbRec));
            size_t len = 0;
            if (const char* err = check_string(name, kCompatibleLength, &len))
                return bad(at + ": compatible " + err);
            if (!names.emplace(name, len).second)
                return bad(at + ": duplicate compatible \"" + std::string(name, len) + "\"");
            const FlbRec br = flb(i);
            if (int r = check_data(br.data_off, br.data_len, at)) return r;
        }
        return 0;
    }

    int check_data(uint64_t off, uint64_t len, const std::string& at) {
        if (off > h_.data.count || len > h_.data.count - off)
            return bad(at + ": data [" + std::to_string(off) + ", +" + std::to_string(len) +
                       ") outside the data area");
        return 0;
    }

    // No two data extents (files and FLBs) share a byte: the encoder never
    // writes that, and a handler must not see another's bytes change.
    int check_data_extents() {
        std::vector<Span> spans;
        for (uint64_t i = 0; i < h_.files.count; i++)
            if (const FileRec fr = file(i); fr.data_len)
                spans.push_back({fr.data_off, fr.data_off + fr.data_len, "file"});
        for (uint64_t i = 0; i < h_.flbs.count; i++)
            if (const FlbRec br = flb(i); br.data_len)
                spans.push_back({br.data_off, br.data_off + br.data_len, "FLB"});
        std::sort(spans.begin(), spans.end(),
                  [](const Span& a, const Span& b) { return a.begin < b.begin; });
        for (size_t i = 1; i < spans.size(); i++)
            if (spans[i].begin < spans[i - 1].end)
                return bad(std::string("data of a ") + spans[i].name + " overlaps data of a " +
                           spans[i - 1].name + " at offset " + std::to_string(spans[i].begin));
        return 0;
    }

    int check_fd_slots() {
        for (uint64_t i = 0; i < h_.fd_slots.count; i++) {
            const FdSlotRec sr = slot(i);
            switch (sr.type) {
                case S_IFREG:
                case S_IFDIR:
                case S_IFCHR:
                case S_IFBLK:
                case S_IFIFO:
                case S_IFLNK:
                case S_IFSOCK:
                    break;
                default:
                    return bad("fd slot " + std::to_string(i) + ": invalid type " +
                               std::to_string(sr.type));
            }
            if (sr.pad != 0) return bad("fd slot " + std::to_string(i) + ": non-zero padding");
        }
        return 0;
    }

    std::span<const uint8_t> luo_;
    std::string* why_;
    LuoHeader h_{};
};

}  // namespace

int decode_handover(std::span<const uint8_t> blob, HandoverImage* out, std::string* why) {
    std::span<const uint8_t> luo;
    if (int r = check_root(blob, &luo, why)) return r;
    LuoReader reader(luo, why);
    if (int r = reader.check()) return r;
    *out = reader.build();
    return 0;
}

FdSlot fd_slot_of(const struct stat& st) {
    return {static_cast<uint32_t>(st.st_mode & S_IFMT), static_cast<uint64_t>(st.st_dev),
            static_cast<uint64_t>(st.st_ino)};
}

int check_handover_fds(const HandoverImage& image, std::span<const int> fds, std::string* why) {
    if (fds.size() != image.fd_slots.size())
        return fail(why, std::to_string(fds.size()) + " fds for " +
                             std::to_string(image.fd_slots.size()) + " fd slots");
    for (size_t i = 0; i < fds.size(); i++) {
        const std::string at = "fd slot " + std::to_string(i);
        struct stat st;
        if (fstat(fds[i], &st) != 0) {  // EBADF: the fd is not open
            const int err = errno;
            return fail(why, at + ": fd " + std::to_string(fds[i]) + ": " + std::strerror(err),
                        -err);
        }
        const FdSlot got = fd_slot_of(st);
        const FdSlot& want = image.fd_slots[i];
        if (got.type != want.type)
            return fail(why, at + ": type " + std::to_string(got.type) + ", expected " +
                                 std::to_string(want.type));
        if (got.dev != want.dev || got.ino != want.ino)
            return fail(why, at + ": not the recorded file (dev/inode differ)");
    }
    return 0;
}

}  // namespace lu
