// SPDX-License-Identifier: Apache-2.0
// The handover's writer: the image laid out as the LUO blob (header, tables,
// data area), after the FDT root that points at it. docs/handover-format.md
// describes the bytes.
//
// Encoding is the one path in src/core that throws: an image with a string
// the format cannot hold is a programming error (the engine never builds
// one), and an image past kMaxHandoverSize has no errno the engine could
// act on; the daemon catches both where it starts the live update.
#include <xxhash.h>

#include <cstring>
#include <stdexcept>

#include "handover_layout.hpp"

namespace lu {

using namespace handover_layout;

namespace {

template <size_t N>
void put_string(char (&dst)[N], const std::string& s, const char* what) {
    if (s.empty() || s.size() >= N || s.find('\0') != std::string::npos)
        throw std::invalid_argument(std::string("handover: unrepresentable ") + what + " \"" + s +
                                    "\"");
    std::memset(dst, 0, N);
    std::memcpy(dst, s.data(), s.size());
}

// The header, with every table placed: the header, then the tables in this
// order, then the data area. *luo_size is where the data area ends.
LuoHeader plan_layout(const HandoverImage& image, uint64_t* luo_size) {
    uint64_t nr_files = 0, data_size = 0;
    for (const SessionImage& s : image.sessions) {
        nr_files += s.files.size();
        for (const FileImage& f : s.files) data_size += f.data.size();
    }
    for (const FlbImage& b : image.flbs) data_size += b.data.size();

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
    *luo_size = off;
    return h;
}

// Fills the tables `h` placed in a zeroed LUO blob; the data area in the
// order of the records that point into it.
class LuoWriter {
  public:
    LuoWriter(uint8_t* luo, const LuoHeader& h) : luo_(luo), h_(h) {}

    void sessions(const std::vector<SessionImage>& sessions) {
        uint64_t file_index = 0;
        for (size_t i = 0; i < sessions.size(); i++) {
            const SessionImage& s = sessions[i];
            SessionRec sr{};
            put_string(sr.name, s.name, "session name");
            sr.first_file = file_index;
            sr.nr_files = s.files.size();
            store(luo_ + h_.sessions.off + i * sizeof(SessionRec), sr);
            for (const FileImage& f : s.files) {
                FileRec fr{};
                put_string(fr.compatible, f.compatible, "file compatible");
                fr.token = f.token;
                fr.data_off = put_data(f.data);
                fr.data_len = f.data.size();
                fr.fd_slot = f.fd_slot;
                store(luo_ + h_.files.off + file_index++ * sizeof(FileRec), fr);
            }
        }
    }

    void flbs(const std::vector<FlbImage>& flbs) {
        for (size_t i = 0; i < flbs.size(); i++) {
            const FlbImage& b = flbs[i];
            FlbRec br{};
            put_string(br.compatible, b.compatible, "FLB compatible");
            br.data_off = put_data(b.data);
            br.data_len = b.data.size();
            br.count = b.count;
            store(luo_ + h_.flbs.off + i * sizeof(FlbRec), br);
        }
    }

    void fd_slots(const std::vector<FdSlot>& slots) {
        for (size_t i = 0; i < slots.size(); i++) {
            const FdSlot& s = slots[i];
            const FdSlotRec rec{s.type, 0, s.dev, s.ino};
            store(luo_ + h_.fd_slots.off + i * sizeof(FdSlotRec), rec);
        }
    }

  private:
    // Appends d to the data area; returns its offset there.
    uint64_t put_data(const std::vector<uint8_t>& d) {
        const uint64_t off = data_off_;
        if (!d.empty()) std::memcpy(luo_ + h_.data.off + off, d.data(), d.size());
        data_off_ += d.size();
        return off;
    }

    uint8_t* luo_;
    const LuoHeader& h_;
    uint64_t data_off_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_handover(const HandoverImage& image) {
    uint64_t luo_size = 0;
    const LuoHeader h = plan_layout(image, &luo_size);
    const uint64_t luo_off = luo_offset();
    if (luo_size > kMaxHandoverSize - luo_off)
        throw std::length_error("handover: image larger than the 1 GiB limit");

    std::vector<uint8_t> out(luo_off + luo_size);  // zeroed: padding is canonical zero
    uint8_t* luo = out.data() + luo_off;
    store(luo, h);
    LuoWriter writer(luo, h);
    writer.sessions(image.sessions);
    writer.flbs(image.flbs);
    writer.fd_slots(image.fd_slots);
    write_root(out.data(), luo_size, XXH3_64bits(luo, luo_size));
    return out;
}

}  // namespace lu
