// SPDX-License-Identifier: Apache-2.0
// The handover blob: round trips, every truncation and bit flip of a sample,
// hand-made hostile blobs (valid checksum, broken structure), and the fd check.
#include "handover_format.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libfdt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>

#include "unique_fd.hpp"

namespace lu {
namespace {

// ---- the LUO blob layout, written out again from docs/handover-format.md ----

struct Extent {
    uint64_t off, count;
};
struct LuoHeader {
    char compatible[8];
    uint32_t version, pad;
    uint64_t liveupdate_num;
    Extent sessions, files, flbs, fd_slots, data;
};
struct SessionRec {
    char name[64];
    uint64_t first_file, nr_files;
};
struct FileRec {
    char compatible[48];
    uint64_t token, data_off, data_len;
    uint32_t fd_slot, pad;
};
struct FlbRec {
    char compatible[48];
    uint64_t data_off, data_len, count;
};
struct FdSlotRec {
    uint32_t type, pad;
    uint64_t dev, ino;
};
static_assert(sizeof(LuoHeader) == 104 && sizeof(SessionRec) == 80 && sizeof(FileRec) == 80 &&
              sizeof(FlbRec) == 72 && sizeof(FdSlotRec) == 24);

// Edits an encoded blob behind the encoder's back, then reseals it (fixes
// the checksum), so what is tested is the validator's structural checks.
class Hostile {
  public:
    explicit Hostile(const HandoverImage& img) : b_(encode_handover(img)) {
        int node = fdt_subnode_offset(b_.data(), 0, "LUO");
        int len = 0;
        auto* p = static_cast<const fdt64_t*>(fdt_getprop(b_.data(), node, "preserved-data", &len));
        EXPECT_EQ(len, 8);
        luo_ = fdt64_ld(p);
    }

    LuoHeader header() const { return get<LuoHeader>(0); }
    void set_header(const LuoHeader& h) { put(0, h); }

    template <class T>
    T rec(uint64_t i) const {
        return get<T>(table<T>().off + i * sizeof(T));
    }
    template <class T>
    void set_rec(uint64_t i, const T& v) {
        put(table<T>().off + i * sizeof(T), v);
    }

    std::vector<uint8_t>& reseal() {
        int node = fdt_subnode_offset(b_.data(), 0, "LUO");
        EXPECT_EQ(fdt_setprop_inplace_u64(b_.data(), node, "checksum",
                                          XXH3_64bits(b_.data() + luo_, b_.size() - luo_)),
                  0);
        return b_;
    }
    std::vector<uint8_t>& bytes() { return b_; }

  private:
    template <class T>
    Extent table() const {
        const LuoHeader h = header();
        if constexpr (std::is_same_v<T, SessionRec>)
            return h.sessions;
        else if constexpr (std::is_same_v<T, FileRec>)
            return h.files;
        else if constexpr (std::is_same_v<T, FlbRec>)
            return h.flbs;
        else
            return h.fd_slots;
    }
    template <class T>
    T get(uint64_t off) const {
        T v;
        EXPECT_LE(luo_ + off + sizeof v, b_.size());
        std::memcpy(&v, b_.data() + luo_ + off, sizeof v);
        return v;
    }
    template <class T>
    void put(uint64_t off, const T& v) {
        ASSERT_LE(luo_ + off + sizeof v, b_.size());
        std::memcpy(b_.data() + luo_ + off, &v, sizeof v);
    }

    std::vector<uint8_t> b_;
    uint64_t luo_ = 0;
};

std::vector<uint8_t> bytes_of(std::string_view s) {
    return {s.begin(), s.end()};
}

// A few sessions, files and FLBs: a small blob (~1.5 KiB) for exhaustive
// corruption. Session 1 has no files; tokens 1 and 2 repeat across sessions.
HandoverImage sample_image() {
    HandoverImage img;
    img.liveupdate_num = 7;
    img.sessions = {
        {"alpha",
         {{"memfd-v2", 1, bytes_of("first file's data"), 3},
          {"socket-v1", 2, bytes_of("second"), 0}}},
        {"beta", {}},
        {"gamma",
         {{"memfd-v2", 1, bytes_of("g1"), 1},
          {"memfd-v2", 2, {}, 4},
          {"socket-v1", 99, bytes_of("last file"), 2}}},
    };
    img.flbs = {{"memfd-v2", bytes_of("flb state"), 4}, {"socket-v1", {}, 2}};
    img.fd_slots = {{S_IFSOCK, 8, 100},
                    {S_IFREG, 1, 101},
                    {S_IFSOCK, 8, 102},
                    {S_IFREG, 1, 103},
                    {S_IFREG, 1, 104}};
    return img;
}

// Decodes, expecting failure with `err` and `what` in the message, and *out
// left alone.
void expect_refused(std::span<const uint8_t> blob, int err, const std::string& what) {
    HandoverImage out;
    out.liveupdate_num = 12345;  // a sentinel decode must not touch
    std::string why;
    EXPECT_EQ(decode_handover(blob, &out, &why), err) << why;
    EXPECT_NE(why.find(what), std::string::npos) << "why: " << why << "; expected: " << what;
    HandoverImage sentinel;
    sentinel.liveupdate_num = 12345;
    EXPECT_EQ(out, sentinel);
}

HandoverImage decode_ok(std::span<const uint8_t> blob) {
    HandoverImage out;
    std::string why;
    EXPECT_EQ(decode_handover(blob, &out, &why), 0) << why;
    return out;
}

// ---- random images ----

HandoverImage random_image(uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto uniform = [&rng](uint64_t lo, uint64_t hi) {
        return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };
    static const char* const kCompatibles[] = {"memfd-v2", "socket-v1", "x",
                                               "a-compatible-of-exactly-47-bytes-long-aaaaaaaaa"};
    static constexpr uint32_t kTypes[] = {S_IFREG, S_IFSOCK, S_IFIFO, S_IFCHR, S_IFDIR};

    HandoverImage img;
    img.liveupdate_num = rng();
    std::set<std::string> names;
    const uint64_t nr_sessions = uniform(0, 50);
    uint32_t nr_files = 0;
    for (uint64_t i = 0; i < nr_sessions; i++) {
        std::string name;
        do {
            name.resize(uniform(1, 63));
            for (char& c : name) c = static_cast<char>(uniform(1, 255));
        } while (!names.insert(name).second);
        SessionImage s{name, {}};
        std::set<uint64_t> tokens;
        const uint64_t n = uniform(0, 20);
        for (uint64_t j = 0; j < n; j++) {
            uint64_t token;
            // Small tokens half the time, so they repeat across sessions.
            do token = uniform(0, 1) ? uniform(0, 40) : rng();
            while (!tokens.insert(token).second);
            FileImage f{kCompatibles[uniform(0, 3)], token, {}, nr_files++};
            f.data.resize(uniform(0, 300));
            for (uint8_t& b : f.data) b = static_cast<uint8_t>(rng());
            s.files.push_back(std::move(f));
        }
        img.sessions.push_back(std::move(s));
    }
    // fd slots in a random order relative to the files.
    std::vector<uint32_t> perm(nr_files);
    for (uint32_t i = 0; i < nr_files; i++) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (SessionImage& s : img.sessions)
        for (FileImage& f : s.files) f.fd_slot = perm[f.fd_slot];
    for (uint32_t i = 0; i < nr_files; i++)
        img.fd_slots.push_back({kTypes[uniform(0, 4)], rng(), rng()});
    const uint64_t nr_flbs = uniform(0, 4);
    for (uint64_t i = 0; i < nr_flbs; i++) {
        FlbImage b{kCompatibles[i], {}, rng()};
        b.data.resize(uniform(0, 300));
        for (uint8_t& c : b.data) c = static_cast<uint8_t>(rng());
        img.flbs.push_back(std::move(b));
    }
    return img;
}

// ---- round trips ----

TEST(HandoverFormat, RandomImagesRoundTrip) {
    for (uint64_t seed = 1; seed <= 200; seed++) {
        const HandoverImage img = random_image(seed);
        const std::vector<uint8_t> blob = encode_handover(img);
        HandoverImage out;
        std::string why;
        ASSERT_EQ(decode_handover(blob, &out, &why), 0) << "seed " << seed << ": " << why;
        ASSERT_EQ(out, img) << "seed " << seed;
        // Canonical: the decoded image encodes to the same bytes.
        ASSERT_EQ(encode_handover(out), blob) << "seed " << seed;
    }
}

TEST(HandoverFormat, EmptyImageRoundTrips) {
    const HandoverImage empty;
    EXPECT_EQ(decode_ok(encode_handover(empty)), empty);
    HandoverImage epoch_only;
    epoch_only.liveupdate_num = ~uint64_t{0};
    EXPECT_EQ(decode_ok(encode_handover(epoch_only)), epoch_only);
}

TEST(HandoverFormat, SampleRoundTrips) {
    const HandoverImage img = sample_image();
    EXPECT_EQ(decode_ok(encode_handover(img)), img);
    // The test-side writer itself produces a valid blob when it changes nothing.
    Hostile h(img);
    EXPECT_EQ(decode_ok(h.reseal()), img);
}

TEST(HandoverFormat, ScaleHundredThousandSessions) {
    HandoverImage img;
    img.liveupdate_num = 2;
    for (uint32_t i = 0; i < 100'000; i++) {
        img.sessions.push_back({"session-" + std::to_string(i), {{"memfd-v2", i, {}, i}}});
        img.fd_slots.push_back({S_IFREG, 1, i});
    }
    EXPECT_EQ(decode_ok(encode_handover(img)), img);
}

TEST(HandoverFormat, ScaleThousandSessionsOfTenFiles) {
    HandoverImage img;
    uint32_t slot = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        SessionImage s{"s" + std::to_string(i), {}};
        for (uint64_t t = 0; t < 10; t++) s.files.push_back({"socket-v1", t, {1, 2, 3}, slot++});
        img.sessions.push_back(std::move(s));
        for (int t = 0; t < 10; t++) img.fd_slots.push_back({S_IFSOCK, 9, slot});
    }
    EXPECT_EQ(decode_ok(encode_handover(img)), img);
}

TEST(HandoverFormat, EncoderRefusesUnrepresentableStrings) {
    for (const std::string& bad : {std::string(), std::string(64, 'n'), std::string("a\0b", 3)}) {
        HandoverImage img;
        img.sessions.push_back({bad, {}});
        EXPECT_THROW(encode_handover(img), std::invalid_argument);
    }
    HandoverImage img;
    img.sessions.push_back({std::string(63, 'n'), {{std::string(48, 'c'), 1, {}, 0}}});
    img.fd_slots.push_back({S_IFREG, 0, 0});
    EXPECT_THROW(encode_handover(img), std::invalid_argument);
    img.sessions[0].files[0].compatible.resize(47);  // the longest that fits
    EXPECT_EQ(decode_ok(encode_handover(img)), img);
}

// ---- corruption of a sample ----

TEST(HandoverFormat, EveryTruncationIsRefused) {
    const std::vector<uint8_t> blob = encode_handover(sample_image());
    ASSERT_LT(blob.size(), 4096u);
    for (size_t len = 0; len < blob.size(); len++) {
        // An exact-size copy, so that ASan sees any read past the end.
        const std::vector<uint8_t> cut(blob.begin(), blob.begin() + len);
        HandoverImage out;
        EXPECT_EQ(decode_handover(cut, &out), -EINVAL) << "length " << len;
    }
    // And one extra byte at the end is refused as well (the LUO blob ends the buffer).
    std::vector<uint8_t> longer = blob;
    longer.push_back(0);
    expect_refused(longer, -EINVAL, "LUO blob extent");
}

TEST(HandoverFormat, EveryBitFlipIsRefused) {
    // The checksum covers the LUO blob; the root is canonical (exact header
    // fields, exact properties, zero padding), so no flipped byte anywhere is
    // without meaning: every flip must be refused.
    const std::vector<uint8_t> blob = encode_handover(sample_image());
    for (size_t pos = 0; pos < blob.size(); pos++) {
        for (uint8_t mask : {0x01, 0x80, 0xFF}) {
            std::vector<uint8_t> bad = blob;
            bad[pos] ^= mask;
            HandoverImage out;
            std::string why;
            const int r = decode_handover(bad, &out, &why);
            EXPECT_TRUE(r == -EINVAL || r == -EPROTONOSUPPORT)
                << "byte " << pos << " ^ " << int(mask) << " accepted (" << r << ")";
        }
    }
}

// ---- hostile blobs: correct checksum, broken structure ----

TEST(HandoverHostile, CountPastTheEnd) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.files.count = 1000;
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "file table: 1000 entries");
}

TEST(HandoverHostile, CountTimesSizeOverflows) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.files.count = uint64_t{1} << 61;  // * 80 wraps to a small number
    hd.fd_slots.count = uint64_t{1} << 61;
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "exceed the LUO blob");
}

TEST(HandoverHostile, TableOffsetIntoTheHeader) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.flbs.off = 8;
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "overlaps header");
}

TEST(HandoverHostile, TableOffsetBeforeTheBlob) {
    // Offsets are relative to the LUO blob and unsigned: "into the FDT" can
    // only be spelled as a wrap-around, which must not wrap.
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.sessions.off = ~uint64_t{0} - 7;
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "session table");
}

TEST(HandoverHostile, FileTableOverlapsSessionTable) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.files.off = hd.sessions.off;  // the self-reference case
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "overlaps");
}

TEST(HandoverHostile, DataAreaOverlapsATable) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.data.off -= 8;  // into the fd slot table
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "data area overlaps fd slot table");
}

TEST(HandoverHostile, OverlappingFileData) {
    Hostile h(sample_image());
    FileRec f0 = h.rec<FileRec>(0), f1 = h.rec<FileRec>(1);
    f1.data_off = f0.data_off + 1;  // both non-empty
    h.set_rec(1, f1);
    expect_refused(h.reseal(), -EINVAL, "overlaps data");
}

TEST(HandoverHostile, FileDataOutsideTheDataArea) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(0);
    f.data_off = h.header().data.count - 1;
    h.set_rec(0, f);
    expect_refused(h.reseal(), -EINVAL, "file 0: data");
    f.data_off = ~uint64_t{0};  // off + len wraps
    h.set_rec(0, f);
    expect_refused(h.reseal(), -EINVAL, "outside the data area");
}

TEST(HandoverHostile, DuplicateSessionNames) {
    Hostile h(sample_image());
    SessionRec s2 = h.rec<SessionRec>(2);
    std::memcpy(s2.name, h.rec<SessionRec>(0).name, sizeof s2.name);
    h.set_rec(2, s2);
    expect_refused(h.reseal(), -EINVAL, "session 2: duplicate name \"alpha\"");
}

TEST(HandoverHostile, DuplicateTokenInOneSession) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(4);  // gamma's third file
    f.token = 2;                    // gamma's second file's token
    h.set_rec(4, f);
    expect_refused(h.reseal(), -EINVAL, "session 2: duplicate token 2");
}

TEST(HandoverHostile, SameTokenInTwoSessionsIsFine) {
    HandoverImage img = sample_image();
    Hostile h(img);
    FileRec f = h.rec<FileRec>(4);
    f.token = 1;  // alpha has a token 1 too; gamma's own 1 is changed below
    h.set_rec(4, f);
    FileRec g = h.rec<FileRec>(2);
    g.token = 1000;
    h.set_rec(2, g);
    img.sessions[2].files[2].token = 1;
    img.sessions[2].files[0].token = 1000;
    EXPECT_EQ(decode_ok(h.reseal()), img);
}

TEST(HandoverHostile, FdSlotOutOfRange) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(0);
    f.fd_slot = 5;
    h.set_rec(0, f);
    expect_refused(h.reseal(), -EINVAL, "file 0: fd slot 5 out of range");
}

TEST(HandoverHostile, TwoFilesShareAnFdSlot) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(1);
    f.fd_slot = h.rec<FileRec>(0).fd_slot;
    h.set_rec(1, f);
    expect_refused(h.reseal(), -EINVAL, "file 1: fd slot 3 used twice");
}

TEST(HandoverHostile, SlotCountDiffersFromFileCount) {
    Hostile h(sample_image());
    LuoHeader hd = h.header();
    hd.fd_slots.count = 4;
    h.set_header(hd);
    expect_refused(h.reseal(), -EINVAL, "4 fd slots for 5 files");
}

TEST(HandoverHostile, BadSessionNames) {
    struct Case {
        std::string bytes;  // the 64 bytes of the name field (zero-filled past)
        std::string why;
    };
    for (const Case& c : {Case{std::string(64, 'a'), "session 1: name not terminated"},
                          Case{"", "session 1: name empty"},
                          Case{std::string("beta\0x", 6), "session 1: name bytes after the NUL"}}) {
        Hostile h(sample_image());
        SessionRec s = h.rec<SessionRec>(1);
        std::memset(s.name, 0, sizeof s.name);
        std::memcpy(s.name, c.bytes.data(), c.bytes.size());
        h.set_rec(1, s);
        expect_refused(h.reseal(), -EINVAL, c.why);
    }
}

TEST(HandoverHostile, CompatibleWithoutNul) {
    {
        Hostile h(sample_image());
        FileRec f = h.rec<FileRec>(3);
        std::memset(f.compatible, 'c', sizeof f.compatible);
        h.set_rec(3, f);
        expect_refused(h.reseal(), -EINVAL, "file 3: compatible not terminated");
    }
    {
        Hostile h(sample_image());
        FlbRec b = h.rec<FlbRec>(1);
        std::memset(b.compatible, 'c', sizeof b.compatible);
        h.set_rec(1, b);
        expect_refused(h.reseal(), -EINVAL, "FLB 1: compatible not terminated");
    }
}

TEST(HandoverHostile, DuplicateFlbCompatible) {
    Hostile h(sample_image());
    FlbRec b = h.rec<FlbRec>(1);
    std::memcpy(b.compatible, h.rec<FlbRec>(0).compatible, sizeof b.compatible);
    h.set_rec(1, b);
    expect_refused(h.reseal(), -EINVAL, "FLB 1: duplicate compatible");
}

TEST(HandoverHostile, SessionsMustTileTheFileTable) {
    {  // a gap: gamma skips a file
        Hostile h(sample_image());
        SessionRec s = h.rec<SessionRec>(2);
        s.first_file += 1;
        s.nr_files -= 1;
        h.set_rec(2, s);
        expect_refused(h.reseal(), -EINVAL, "session 2: files start at 3, expected 2");
    }
    {  // an overlap: beta claims alpha's second file
        Hostile h(sample_image());
        SessionRec s = h.rec<SessionRec>(1);
        s.first_file = 1;
        s.nr_files = 1;
        h.set_rec(1, s);
        expect_refused(h.reseal(), -EINVAL, "session 1: files start at 1, expected 2");
    }
    {  // files past the table
        Hostile h(sample_image());
        SessionRec s = h.rec<SessionRec>(2);
        s.nr_files = ~uint64_t{0};
        h.set_rec(2, s);
        expect_refused(h.reseal(), -EINVAL, "run past the file table");
    }
    {  // trailing files of no session
        Hostile h(sample_image());
        SessionRec s = h.rec<SessionRec>(2);
        s.nr_files = 2;
        h.set_rec(2, s);
        expect_refused(h.reseal(), -EINVAL, "1 files belong to no session");
    }
}

TEST(HandoverHostile, BadFdSlotType) {
    for (uint32_t type : {0u, 0xFFFFFFFFu, uint32_t{S_IFREG | 0644}}) {
        Hostile h(sample_image());
        FdSlotRec s = h.rec<FdSlotRec>(2);
        s.type = type;
        h.set_rec(2, s);
        expect_refused(h.reseal(), -EINVAL, "fd slot 2: invalid type");
    }
}

TEST(HandoverHostile, NonZeroPadding) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(0);
    f.pad = 1;
    h.set_rec(0, f);
    expect_refused(h.reseal(), -EINVAL, "file 0: non-zero padding");
}

TEST(HandoverHostile, UnknownVersionsAreNotSupported) {
    {  // the root's version: refused before anything below it is read
        Hostile h(sample_image());
        ASSERT_EQ(fdt_setprop_inplace_u32(h.bytes().data(), 0, "version", 2), 0);
        expect_refused(h.bytes(), -EPROTONOSUPPORT, "format version 2");
    }
    {
        Hostile h(sample_image());
        LuoHeader hd = h.header();
        hd.version = 2;
        h.set_header(hd);
        expect_refused(h.reseal(), -EPROTONOSUPPORT, "LUO version 2");
    }
    {
        Hostile h(sample_image());
        LuoHeader hd = h.header();
        std::memcpy(hd.compatible, "luo-lu2", 8);
        h.set_header(hd);
        expect_refused(h.reseal(), -EPROTONOSUPPORT, "LUO compatible is luo-lu2");
    }
    {  // a malformed ABI string is not "another version"
        Hostile h(sample_image());
        LuoHeader hd = h.header();
        std::memcpy(hd.compatible, "luo-lu1x", 8);
        h.set_header(hd);
        expect_refused(h.reseal(), -EINVAL, "LUO compatible: not terminated");
    }
}

TEST(HandoverHostile, OddFdtsNeverReachLibfdt) {
    // libfdt 1.6.1's fdt_check_full() crashes on a version-14 tree and loops
    // forever on a property length of 0xfffffff4 (both found by the fuzzer);
    // unaligned blocks are UB in it. Only our own shape is let in.
    struct Edit {
        size_t field;  // offset of a be32 in the blob
        uint32_t value;
    };
    // The root node's first property: its tag and length (checked below).
    const size_t prop = sizeof(fdt_header) + sizeof(fdt_reserve_entry) + 8;
    const std::vector<Edit> cases[] = {
        {{offsetof(fdt_header, version), 14}, {offsetof(fdt_header, last_comp_version), 0}},
        {{offsetof(fdt_header, version), 16}},
        {{offsetof(fdt_header, off_dt_struct), 58}},
        {{offsetof(fdt_header, off_mem_rsvmap), 41}},
        {{offsetof(fdt_header, boot_cpuid_phys), 1}},
        {{offsetof(fdt_header, totalsize), 0xFFFFFFFF}},
        {{prop + 4, 0xFFFFFFF4}},  // the loop
        {{prop + 4, 0xFFFFFFFF}},
        {{prop, FDT_NOP}},
    };
    for (const auto& edits : cases) {
        std::vector<uint8_t> b = encode_handover(sample_image());
        ASSERT_EQ(fdt32_ld(reinterpret_cast<const fdt32_t*>(b.data() + prop)), uint32_t{FDT_PROP});
        for (const Edit& e : edits) fdt32_st(b.data() + e.field, e.value);
        HandoverImage out;
        std::string why;
        EXPECT_EQ(decode_handover(b, &out, &why), -EINVAL);
        EXPECT_NE(why.find("FDT: "), std::string::npos) << why;
    }
}

TEST(HandoverHostile, WrongRootCompatible) {
    Hostile h(sample_image());
    const char other[] = "liveupdate,xxx-v1";
    static_assert(sizeof other == sizeof kHandoverRootCompatible);
    ASSERT_EQ(fdt_setprop_inplace(h.bytes().data(), 0, "compatible", other, sizeof other), 0);
    expect_refused(h.bytes(), -EINVAL, "root compatible");
}

TEST(HandoverHostile, WrongChecksum) {
    Hostile h(sample_image());
    FileRec f = h.rec<FileRec>(0);
    f.token = 77;  // a change that is structurally fine, not resealed
    h.set_rec(0, f);
    expect_refused(h.bytes(), -EINVAL, "LUO checksum mismatch");
}

TEST(HandoverHostile, ExtraRootProperty) {
    // v1 writes exactly its properties; appending one changes the FDT size,
    // so rebuild the blob around the same LUO bytes.
    const std::vector<uint8_t> blob = encode_handover(sample_image());
    alignas(8) uint8_t fdt[4096];
    ASSERT_EQ(fdt_open_into(blob.data(), fdt, sizeof fdt), 0);
    ASSERT_EQ(fdt_setprop_u32(fdt, 0, "extra", 1), 0);
    ASSERT_EQ(fdt_pack(fdt), 0);
    const int node = fdt_subnode_offset(blob.data(), 0, "LUO");
    int len = 0;
    const uint64_t old_off = fdt64_ld(
        static_cast<const fdt64_t*>(fdt_getprop(blob.data(), node, "preserved-data", &len)));
    const uint64_t new_off = (fdt_totalsize(fdt) + 7) & ~7u;
    ASSERT_EQ(
        fdt_setprop_inplace_u64(fdt, fdt_subnode_offset(fdt, 0, "LUO"), "preserved-data", new_off),
        0);
    std::vector<uint8_t> bad(new_off);
    std::memcpy(bad.data(), fdt, fdt_totalsize(fdt));
    bad.insert(bad.end(), blob.begin() + old_off, blob.end());
    expect_refused(bad, -EINVAL, "root: unexpected property extra");
}

TEST(HandoverHostile, LargerThanTheBoundIsRefusedUnread) {
    const size_t size = (size_t{1} << 30) + 1;
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    expect_refused({static_cast<const uint8_t*>(p), size}, -EINVAL, "larger than 1 GiB");
    munmap(p, size);
}

// ---- check_handover_fds ----

class HandoverFds : public ::testing::Test {
  protected:
    void SetUp() override {
        memfd_.reset(memfd_create("handover-test", MFD_CLOEXEC));
        ASSERT_TRUE(memfd_);
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        pipe_r_.reset(p[0]);
        pipe_w_.reset(p[1]);
        image_.fd_slots = {slot_of(memfd_.get()), slot_of(pipe_r_.get())};
    }
    static FdSlot slot_of(int fd) {
        struct stat st;
        EXPECT_EQ(fstat(fd, &st), 0);
        return fd_slot_of(st);
    }

    UniqueFd memfd_, pipe_r_, pipe_w_;
    HandoverImage image_;
};

TEST_F(HandoverFds, MatchingFdsAreAccepted) {
    EXPECT_EQ(image_.fd_slots[0].type, uint32_t{S_IFREG});
    EXPECT_EQ(image_.fd_slots[1].type, uint32_t{S_IFIFO});
    const int fds[] = {memfd_.get(), pipe_r_.get()};
    std::string why;
    EXPECT_EQ(check_handover_fds(image_, fds, &why), 0) << why;
    // Both ends of a pipe are the same inode.
    const int other_end[] = {memfd_.get(), pipe_w_.get()};
    EXPECT_EQ(check_handover_fds(image_, other_end, &why), 0) << why;
}

TEST_F(HandoverFds, WrongInodeIsRefused) {
    image_.fd_slots[0].ino += 1;
    const int fds[] = {memfd_.get(), pipe_r_.get()};
    std::string why;
    EXPECT_EQ(check_handover_fds(image_, fds, &why), -EINVAL);
    EXPECT_NE(why.find("fd slot 0"), std::string::npos) << why;
}

TEST_F(HandoverFds, WrongTypeIsRefused) {
    const int swapped[] = {pipe_r_.get(), memfd_.get()};
    std::string why;
    EXPECT_EQ(check_handover_fds(image_, swapped, &why), -EINVAL);
    EXPECT_NE(why.find("fd slot 0: type"), std::string::npos) << why;
}

TEST_F(HandoverFds, ClosedFdIsRefused) {
    const int closed = dup(memfd_.get());
    ASSERT_GE(closed, 0);
    ASSERT_EQ(close(closed), 0);
    const int fds[] = {memfd_.get(), closed};
    std::string why;
    EXPECT_EQ(check_handover_fds(image_, fds, &why), -EBADF);
    EXPECT_NE(why.find("fd slot 1"), std::string::npos) << why;
}

TEST_F(HandoverFds, WrongCountIsRefused) {
    const int one[] = {memfd_.get()};
    std::string why;
    EXPECT_EQ(check_handover_fds(image_, one, &why), -EINVAL);
    EXPECT_EQ(why, "1 fds for 2 fd slots");
    const int three[] = {memfd_.get(), pipe_r_.get(), pipe_w_.get()};
    EXPECT_EQ(check_handover_fds(image_, three, &why), -EINVAL);
}

}  // namespace
}  // namespace lu
