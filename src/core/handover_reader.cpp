// SPDX-License-Identifier: Apache-2.0
// The handover's reader: the LUO blob validated from end to end before
// anything is built from it; only a blob that passed every check becomes an
// image. docs/handover-format.md describes the bytes.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "handover_layout.hpp"

namespace lu {

using namespace handover_layout;

namespace {

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

// A fixed-size string field, already checked, as the string up to its NUL.
template <size_t N>
std::string field_string(const char (&s)[N]) {
    return std::string(s, strnlen(s, N));
}

// Everything in the LUO blob, validated; read() builds the image from it.
class LuoReader {
  public:
    // 0 with *out the image, or -errno with *why and *out untouched.
    static int read(std::span<const uint8_t> luo, HandoverImage* out, std::string* why) {
        LuoReader reader(luo, why);
        if (int r = reader.check()) return r;
        *out = reader.build();
        return 0;
    }

  private:
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
        img.sessions.reserve(h_.sessions.count);
        for (uint64_t i = 0; i < h_.sessions.count; i++) img.sessions.push_back(session_image(i));
        img.flbs.reserve(h_.flbs.count);
        for (uint64_t i = 0; i < h_.flbs.count; i++) img.flbs.push_back(flb_image(flb(i)));
        img.fd_slots.reserve(h_.fd_slots.count);
        for (uint64_t i = 0; i < h_.fd_slots.count; i++) {
            const FdSlotRec sr = slot(i);
            img.fd_slots.push_back({sr.type, sr.dev, sr.ino});
        }
        return img;
    }

    SessionImage session_image(uint64_t i) const {
        const SessionRec sr = session(i);
        SessionImage s{field_string(sr.name), {}};
        s.files.reserve(sr.nr_files);
        for (uint64_t j = 0; j < sr.nr_files; j++)
            s.files.push_back(file_image(file(sr.first_file + j)));
        return s;
    }

    FileImage file_image(const FileRec& fr) const {
        return {field_string(fr.compatible), fr.token, bytes(fr.data_off, fr.data_len), fr.fd_slot};
    }

    FlbImage flb_image(const FlbRec& br) const {
        return {field_string(br.compatible), bytes(br.data_off, br.data_len), br.count};
    }

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
            // Where, for a message: built only on failure (not once per record).
            auto at = [i] { return "session " + std::to_string(i); };
            const char* name = reinterpret_cast<const char*>(luo_.data() + h_.sessions.off +
                                                             i * sizeof(SessionRec));
            if (int r = check_unique_string(name, kSessionNameLength, at, "name", &names)) return r;
            const SessionRec sr = session(i);
            if (sr.first_file != next)
                return bad(at() + ": files start at " + std::to_string(sr.first_file) +
                           ", expected " + std::to_string(next));
            if (sr.nr_files > h_.files.count - next)
                return bad(at() + ": " + std::to_string(sr.nr_files) +
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
                auto at = [j] { return "file " + std::to_string(j); };
                const FileRec fr = file(j);
                size_t len = 0;
                if (const char* err = check_string(fr.compatible, sizeof fr.compatible, &len))
                    return bad(at() + ": compatible " + err);
                if (fr.pad != 0) return bad(at() + ": non-zero padding");
                if (int r = check_data(fr.data_off, fr.data_len, at)) return r;
                if (fr.fd_slot >= h_.fd_slots.count)
                    return bad(at() + ": fd slot " + std::to_string(fr.fd_slot) + " out of range");
                if (slot_used[fr.fd_slot])
                    return bad(at() + ": fd slot " + std::to_string(fr.fd_slot) + " used twice");
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
            auto at = [i] { return "FLB " + std::to_string(i); };
            const char* name =
                reinterpret_cast<const char*>(luo_.data() + h_.flbs.off + i * sizeof(FlbRec));
            if (int r = check_unique_string(name, kCompatibleLength, at, "compatible", &names))
                return r;
            const FlbRec br = flb(i);
            if (int r = check_data(br.data_off, br.data_len, at)) return r;
        }
        return 0;
    }

    // The `field` string at s, n bytes, canonical and not already in *seen.
    // *seen keeps views into the blob itself, which outlives the check.
    // at() names the record, for a message.
    template <class At>
    int check_unique_string(const char* s, size_t n, const At& at, const char* field,
                            std::unordered_set<std::string_view>* seen) const {
        size_t len = 0;
        if (const char* err = check_string(s, n, &len))
            return bad(at() + ": " + field + " " + err);
        if (!seen->emplace(s, len).second)
            return bad(at() + ": duplicate " + field + " \"" + std::string(s, len) + "\"");
        return 0;
    }

    template <class At>
    int check_data(uint64_t off, uint64_t len, const At& at) {
        if (off > h_.data.count || len > h_.data.count - off)
            return bad(at() + ": data [" + std::to_string(off) + ", +" + std::to_string(len) +
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
    return LuoReader::read(luo, out, why);
}

}  // namespace lu
