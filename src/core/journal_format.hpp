// SPDX-License-Identifier: Apache-2.0
// The crash journal: what a keeper process holds for liveupdated so that a
// SIGKILLed daemon loses nothing. The keeper stores one opaque record per
// object id (and, for a file, its fd); when the daemon dies it hands the
// records, concatenated in ascending id order, and the fds to the daemon
// that recovers. That daemon trusts none of it until parse_journal has
// checked every byte. docs/journal-format.md describes the bytes and rules.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lu {

// Record layout, little-endian, every record a multiple of 8 bytes:
//   u32 len      whole record, header included
//   u32 crc      zlib crc32 of bytes [8, len)
//   u16 type     JournalType
//   u16 version  1
//   u32 reserved 0
//   u64 id       the object's id (unique, nonzero; Epoch's is 0)
//   payload
// Epoch   payload: u64 liveupdate_num, u64 crashes,
//                  u64 last_crash_ns (CLOCK_REALTIME ns, 0 = never)
// Session payload: u8 direction (0 outgoing, 1 incoming), u8 name_len (0..63),
//                  u8[6] zero, name bytes, zero padding to 8
// File    payload: u64 session_id, u64 token   (the record carries exactly one fd)
enum class JournalType : uint16_t { Epoch = 1, Session = 2, File = 3 };
inline constexpr size_t kJournalHeaderSize = 24;
inline constexpr size_t kMaxJournalRecord = 256;  // no valid record is larger
inline constexpr uint64_t kMaxJournalSize = 1ull << 30;

// The writers throw std::invalid_argument when a REQUIRES does not hold:
// such a record would be refused by parse_journal, and with it the journal.
std::vector<uint8_t> journal_epoch_record(uint64_t liveupdate_num, uint64_t crashes,
                                          uint64_t last_crash_ns);
// REQUIRES: id != 0, name.size() <= 63, no NUL in name (empty: kernels before
// v7.2 created sessions with an empty name, and an agent tested against their
// profile may).
std::vector<uint8_t> journal_session_record(uint64_t id, bool incoming, std::string_view name);
// REQUIRES: id != 0, session_id != 0.
std::vector<uint8_t> journal_file_record(uint64_t id, uint64_t session_id, uint64_t token);

// For the keeper, which trusts nothing more than this: the record's id and
// whether it carries an fd (a File record). False if the bytes are not one
// whole record with a known type and a right crc (the keeper then refuses the message).
bool journal_record_peek(std::span<const uint8_t> rec, uint64_t* id, bool* carries_fd);

struct JournalFile {
    uint64_t id = 0;
    uint64_t token = 0;
    size_t fd_index = 0;
};
struct JournalSession {
    uint64_t id = 0;
    bool incoming = false;
    std::string name;
    std::vector<JournalFile> files;  // by ascending id
};
struct JournalState {
    uint64_t liveupdate_num = 0, crashes = 0, last_crash_ns = 0;
    std::vector<JournalSession> sessions;  // by ascending id
    size_t records = 0;                    // whole records walked
    size_t torn_bytes = 0;                 // dropped tail (rolled back to the last whole record)
    // fd indexes no kept file uses (orphans, shadowed, beyond the tail),
    // ascending: the caller closes them.
    std::vector<size_t> unused_fds;
    size_t orphan_files = 0;       // files whose session is gone (a release the crash cut short)
    size_t shadowed_sessions = 0;  // incoming sessions dropped for an outgoing one of the same name
};

// `bytes` is the journal, `nr_fds` the fds that came with it (the i-th File
// record in journal order owns fd index i). 0, or -EBADMSG with *why; on
// failure *out is untouched. journal_format.cpp lists the rules.
int parse_journal(std::span<const uint8_t> bytes, size_t nr_fds, JournalState* out,
                  std::string* why);

}  // namespace lu
