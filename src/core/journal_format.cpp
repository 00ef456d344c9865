// SPDX-License-Identifier: Apache-2.0
// The crash journal's records, written one at a time by the daemon and read
// back all at once by the daemon that recovers after a crash. The keeper
// between them never looks past journal_record_peek, so everything it hands
// over is checked here before any of it is used. docs/journal-format.md
// describes the bytes.
#include "journal_format.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <tuple>

namespace lu {

namespace {

// Records are read and written with memcpy: native endian, which must be
// little so that the documented format is the real one.
static_assert(std::endian::native == std::endian::little, "the journal is little-endian");

struct RecordHeader {
    uint32_t len;  // whole record, header included
    uint32_t crc;  // crc32 of bytes [8, len)
    uint16_t type;
    uint16_t version;
    uint32_t reserved;
    uint64_t id;
};

struct EpochPayload {
    uint64_t liveupdate_num;
    uint64_t crashes;
    uint64_t last_crash_ns;
};

struct SessionPayload {  // followed by the name, zero-padded to 8
    uint8_t direction;
    uint8_t name_len;
    uint8_t zero[6];
};

struct FilePayload {
    uint64_t session_id;
    uint64_t token;
};

// The sizes are the format: a change here is a new version.
static_assert(sizeof(RecordHeader) == kJournalHeaderSize && sizeof(EpochPayload) == 24 &&
              sizeof(SessionPayload) == 8 && sizeof(FilePayload) == 16);

constexpr uint16_t kJournalVersion = 1;
constexpr size_t kMaxNameLen = 63;
constexpr size_t kEpochLen = kJournalHeaderSize + sizeof(EpochPayload);
constexpr size_t kFileLen = kJournalHeaderSize + sizeof(FilePayload);
constexpr size_t kCrcFrom = offsetof(RecordHeader, type);
// Every fd that comes with a journal belongs to a File record the keeper
// held, and no journal holds more File records than this.
constexpr uint64_t kMaxJournalFds = kMaxJournalSize / kFileLen;

static_assert(kJournalHeaderSize + sizeof(SessionPayload) + kMaxNameLen + 1 <= kMaxJournalRecord);

size_t align8(size_t n) {
    return (n + 7) & ~size_t{7};
}

size_t session_len(size_t name_len) {
    return kJournalHeaderSize + sizeof(SessionPayload) + align8(name_len);
}

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

uint32_t record_crc(const uint8_t* rec, size_t len) {
    // len <= kMaxJournalRecord: it fits zlib's uInt.
    const uLong seed = crc32(0, nullptr, 0);
    return static_cast<uint32_t>(crc32(seed, rec + kCrcFrom, static_cast<uInt>(len - kCrcFrom)));
}

// Fills in the header of a record whose payload is already in place.
std::vector<uint8_t> seal(std::vector<uint8_t> rec, JournalType type, uint64_t id) {
    RecordHeader h{};
    h.len = static_cast<uint32_t>(rec.size());
    h.type = static_cast<uint16_t>(type);
    h.version = kJournalVersion;
    h.id = id;
    std::memcpy(rec.data(), &h, sizeof h);
    h.crc = record_crc(rec.data(), rec.size());
    std::memcpy(rec.data(), &h, sizeof h);
    return rec;
}

// The length of the record at the start of `rest` if it is whole (its
// length plausible and its crc right), else 0. Nothing is read past what
// the length field has been checked against.
size_t whole_record(std::span<const uint8_t> rest) {
    if (rest.size() < kJournalHeaderSize) return 0;
    const RecordHeader h = load<RecordHeader>(rest.data());
    if (h.len < kJournalHeaderSize || h.len % 8 || h.len > kMaxJournalRecord || h.len > rest.size())
        return 0;
    return record_crc(rest.data(), h.len) == h.crc ? h.len : 0;
}

bool known_type(uint16_t t) {
    return t == uint16_t(JournalType::Epoch) || t == uint16_t(JournalType::Session) ||
           t == uint16_t(JournalType::File);
}

}  // namespace

// ---- writing ----

std::vector<uint8_t> journal_epoch_record(uint64_t liveupdate_num, uint64_t crashes,
                                          uint64_t last_crash_ns) {
    std::vector<uint8_t> rec(kEpochLen);
    const EpochPayload e{liveupdate_num, crashes, last_crash_ns};
    std::memcpy(rec.data() + kJournalHeaderSize, &e, sizeof e);
    return seal(std::move(rec), JournalType::Epoch, 0);
}

std::vector<uint8_t> journal_session_record(uint64_t id, bool incoming, std::string_view name) {
    if (id == 0) throw std::invalid_argument("journal: session id 0");
    if (name.size() > kMaxNameLen || name.find('\0') != name.npos)
        throw std::invalid_argument("journal: session name not representable");
    std::vector<uint8_t> rec(session_len(name.size()));
    const SessionPayload s{uint8_t(incoming), uint8_t(name.size()), {}};
    std::memcpy(rec.data() + kJournalHeaderSize, &s, sizeof s);
    std::memcpy(rec.data() + kJournalHeaderSize + sizeof s, name.data(), name.size());
    return seal(std::move(rec), JournalType::Session, id);
}

std::vector<uint8_t> journal_file_record(uint64_t id, uint64_t session_id, uint64_t token) {
    if (id == 0 || session_id == 0) throw std::invalid_argument("journal: file or session id 0");
    std::vector<uint8_t> rec(kFileLen);
    const FilePayload f{session_id, token};
    std::memcpy(rec.data() + kJournalHeaderSize, &f, sizeof f);
    return seal(std::move(rec), JournalType::File, id);
}

bool journal_record_peek(std::span<const uint8_t> rec, uint64_t* id, bool* carries_fd) {
    if (rec.empty() || whole_record(rec) != rec.size()) return false;
    const RecordHeader h = load<RecordHeader>(rec.data());
    if (!known_type(h.type)) return false;
    if (id) *id = h.id;
    if (carries_fd) *carries_fd = h.type == uint16_t(JournalType::File);
    return true;
}

// ---- reading ----

/*
 * parse_journal - check a journal handed over after a crash and say what it keeps
 *
 * 1. Torn tail. Records are walked from the start. At the first one that is
 *    not whole (len < kJournalHeaderSize, len not a multiple of 8,
 *    len > kMaxJournalRecord, len past the end, crc mismatch), or at a File
 *    record whose fd index would be >= nr_fds, the walk stops and everything
 *    from there is dropped (torn_bytes): the journal is rolled back to its
 *    last whole record, as the crash may have cut the last write short.
 * 2. A whole record whose contents are wrong refuses the whole journal: the
 *    crc says these bytes are what the daemon wrote, so the writer was wrong
 *    and nothing in it can be trusted. Wrong is: version != 1, reserved != 0,
 *    an unknown type, a payload length wrong for the type, nonzero padding,
 *    id 0 for a Session or File, an Epoch id != 0, a second Epoch, no Epoch
 *    at all (an empty journal too), name_len above 63, a NUL in a name,
 *    direction > 1, an id used twice, two sessions of one name and direction,
 *    two files of one session with one token, a File's session_id 0 or
 *    naming a File record.
 * 3. A File whose session_id names no Session record is an orphan: the
 *    daemon removes a session's record before its files', and the crash cut
 *    that release short. It is dropped and counted; its fd goes to unused_fds.
 * 4. An incoming and an outgoing session of one name: the outgoing one is
 *    kept, the incoming one and its files dropped and counted (a reboot
 *    would have dropped the unretrieved incoming session too); their fds go
 *    to unused_fds.
 * 5. fds beyond the File records walked (the tail's, or extra ones) go to
 *    unused_fds.
 * Records may come in any id order, a File before its Session; sessions and
 * files come out sorted by id. The work is bounded by the journal's size:
 * no length field is used before it is checked against the bytes left.
 *
 * Return:
 * * 0       - *out holds the journal's state; every fd index in [0, nr_fds)
 *             is either one kept file's or in unused_fds.
 * * -EBADMSG - refused (rule 2, a journal larger than kMaxJournalSize, or
 *             more fds than a journal can own); *why names the record's
 *             offset and the fault, *out is untouched.
 */

namespace {

struct RawSession {
    uint64_t id;
    bool incoming;
    std::string name;
    size_t at;  // the record's offset, for *why
};

struct RawFile {
    uint64_t id;
    uint64_t session_id;
    uint64_t token;
    size_t fd_index;
    size_t at;
};

class JournalReader {
  public:
    static int read(std::span<const uint8_t> p, size_t nr_fds, JournalState* out,
                    std::string* why) {
        JournalReader r(p, nr_fds, why);
        if (int e = r.walk()) return e;
        if (int e = r.check_ids()) return e;
        if (int e = r.check_names()) return e;
        if (int e = r.check_tokens()) return e;
        r.resolve();
        *out = std::move(r.st_);
        return 0;
    }

  private:
    JournalReader(std::span<const uint8_t> p, size_t nr_fds, std::string* why)
        : p_(p), nr_fds_(nr_fds), why_(why) {}

    int bad(const std::string& msg) const {
        if (why_) *why_ = msg;
        return -EBADMSG;
    }
    int bad_at(size_t at, const std::string& msg) const {
        return bad("journal record at offset " + std::to_string(at) + ": " + msg);
    }

    // Rules 1 and 2, one record at a time.
    int walk() {
        if (p_.empty()) return bad("empty journal");
        if (p_.size() > kMaxJournalSize) return bad("journal larger than 1 GiB");
        if (nr_fds_ > kMaxJournalFds) return bad("more fds than a journal can own");
        size_t at = 0;
        while (at < p_.size()) {
            const size_t len = whole_record(p_.subspan(at));
            if (!len) break;
            const RecordHeader h = load<RecordHeader>(p_.data() + at);
            if (h.type == uint16_t(JournalType::File) && files_.size() >= nr_fds_) break;
            if (int e = check_record(at, h)) return e;
            st_.records++;
            at += len;
        }
        st_.torn_bytes = p_.size() - at;
        if (!have_epoch_) {
            std::string msg = "no Epoch record in " + std::to_string(st_.records) + " records";
            if (st_.torn_bytes) msg += " (" + std::to_string(st_.torn_bytes) + " torn bytes)";
            return bad(msg);
        }
        return 0;
    }

    int check_record(size_t at, const RecordHeader& h) {
        if (h.version != kJournalVersion)
            return bad_at(at, "version " + std::to_string(h.version) + ", this build reads only " +
                                  std::to_string(kJournalVersion));
        if (h.reserved) return bad_at(at, "reserved field not zero");
        const uint8_t* payload = p_.data() + at + kJournalHeaderSize;
        switch (h.type) {
            case uint16_t(JournalType::Epoch):
                return check_epoch(at, h, payload);
            case uint16_t(JournalType::Session):
                return check_session(at, h, payload);
            case uint16_t(JournalType::File):
                return check_file(at, h, payload);
        }
        return bad_at(at, "unknown type " + std::to_string(h.type));
    }

    int check_epoch(size_t at, const RecordHeader& h, const uint8_t* payload) {
        if (h.len != kEpochLen)
            return bad_at(at, "Epoch record of " + std::to_string(h.len) + " bytes");
        if (h.id != 0) return bad_at(at, "Epoch id not 0");
        if (have_epoch_) return bad_at(at, "a second Epoch");
        const EpochPayload e = load<EpochPayload>(payload);
        st_.liveupdate_num = e.liveupdate_num;
        st_.crashes = e.crashes;
        st_.last_crash_ns = e.last_crash_ns;
        have_epoch_ = true;
        return 0;
    }

    int check_session(size_t at, const RecordHeader& h, const uint8_t* payload) {
        if (h.len < kJournalHeaderSize + sizeof(SessionPayload))
            return bad_at(at, "Session record of " + std::to_string(h.len) + " bytes");
        if (h.id == 0) return bad_at(at, "Session id 0");
        const SessionPayload s = load<SessionPayload>(payload);
        if (s.direction > 1) return bad_at(at, "direction " + std::to_string(s.direction));
        if (s.name_len > kMaxNameLen)
            return bad_at(at, "name length " + std::to_string(s.name_len));
        if (h.len != session_len(s.name_len))
            return bad_at(at, "Session record of " + std::to_string(h.len) +
                                  " bytes for a name of " + std::to_string(s.name_len));
        if (std::any_of(s.zero, s.zero + sizeof s.zero, [](uint8_t b) { return b != 0; }))
            return bad_at(at, "Session padding not zero");
        const uint8_t* name = payload + sizeof s;
        if (std::memchr(name, 0, s.name_len)) return bad_at(at, "NUL in the session name");
        const uint8_t* end = p_.data() + at + h.len;
        if (std::any_of(name + s.name_len, end, [](uint8_t b) { return b != 0; }))
            return bad_at(at, "name padding not zero");
        sessions_.push_back({h.id, s.direction == 1,
                             std::string(reinterpret_cast<const char*>(name), s.name_len), at});
        return 0;
    }

    int check_file(size_t at, const RecordHeader& h, const uint8_t* payload) {
        if (h.len != kFileLen)
            return bad_at(at, "File record of " + std::to_string(h.len) + " bytes");
        if (h.id == 0) return bad_at(at, "File id 0");
        const FilePayload f = load<FilePayload>(payload);
        if (f.session_id == 0) return bad_at(at, "File session_id 0");
        files_.push_back({h.id, f.session_id, f.token, files_.size(), at});
        return 0;
    }

    // One id space for sessions and files: each id once. Sorts both by id.
    int check_ids() {
        auto by_id = [](const auto& a, const auto& b) {
            return std::tie(a.id, a.at) < std::tie(b.id, b.at);
        };
        std::sort(sessions_.begin(), sessions_.end(), by_id);
        std::sort(files_.begin(), files_.end(), by_id);
        std::vector<std::pair<uint64_t, size_t>> ids;  // (id, offset)
        ids.reserve(sessions_.size() + files_.size());
        for (const RawSession& s : sessions_) ids.emplace_back(s.id, s.at);
        for (const RawFile& f : files_) ids.emplace_back(f.id, f.at);
        std::sort(ids.begin(), ids.end());
        for (size_t i = 1; i < ids.size(); i++)
            if (ids[i].first == ids[i - 1].first)
                return bad_at(ids[i].second, "id " + std::to_string(ids[i].first) +
                                                 " already used at offset " +
                                                 std::to_string(ids[i - 1].second));
        return 0;
    }

    int check_names() {
        std::vector<const RawSession*> v;
        v.reserve(sessions_.size());
        for (const RawSession& s : sessions_) v.push_back(&s);
        std::sort(v.begin(), v.end(), [](const RawSession* a, const RawSession* b) {
            return std::tie(a->name, a->incoming, a->at) < std::tie(b->name, b->incoming, b->at);
        });
        for (size_t i = 1; i < v.size(); i++)
            if (v[i]->name == v[i - 1]->name && v[i]->incoming == v[i - 1]->incoming)
                return bad_at(v[i]->at, std::string(v[i]->incoming ? "incoming" : "outgoing") +
                                            " session name already used at offset " +
                                            std::to_string(v[i - 1]->at));
        return 0;
    }

    // A File's session_id names no File, and a session's tokens are unique,
    // orphans' too: ids are never reused, so theirs were once a session's.
    int check_tokens() {
        for (const RawFile& f : files_)
            if (find_file(f.session_id))
                return bad_at(f.at, "session_id " + std::to_string(f.session_id) + " names a File");
        std::vector<const RawFile*> v;
        v.reserve(files_.size());
        for (const RawFile& f : files_) v.push_back(&f);
        std::sort(v.begin(), v.end(), [](const RawFile* a, const RawFile* b) {
            return std::tie(a->session_id, a->token, a->at) <
                   std::tie(b->session_id, b->token, b->at);
        });
        for (size_t i = 1; i < v.size(); i++)
            if (v[i]->session_id == v[i - 1]->session_id && v[i]->token == v[i - 1]->token)
                return bad_at(v[i]->at, "token " + std::to_string(v[i]->token) +
                                            " already in the session, at offset " +
                                            std::to_string(v[i - 1]->at));
        return 0;
    }

    template <class T>
    static const T* find(const std::vector<T>& v, uint64_t id) {
        auto it = std::lower_bound(v.begin(), v.end(), id,
                                   [](const T& x, uint64_t i) { return x.id < i; });
        return it != v.end() && it->id == id ? &*it : nullptr;
    }
    const RawFile* find_file(uint64_t id) const { return find(files_, id); }

    // Rules 3 to 5, on records already checked: nothing here can fail.
    void resolve() {
        std::vector<bool> shadowed(sessions_.size());
        mark_shadowed(&shadowed);
        std::vector<size_t> slot(sessions_.size(), SIZE_MAX);  // index in st_.sessions
        for (size_t i = 0; i < sessions_.size(); i++) {
            if (shadowed[i]) continue;
            slot[i] = st_.sessions.size();
            st_.sessions.push_back({sessions_[i].id, sessions_[i].incoming, sessions_[i].name, {}});
        }
        for (const RawFile& f : files_) {  // by id: each session's files come out sorted
            const RawSession* s = find(sessions_, f.session_id);
            if (!s) st_.orphan_files++;
            const size_t i = s ? static_cast<size_t>(s - sessions_.data()) : 0;
            if (!s || shadowed[i]) {
                st_.unused_fds.push_back(f.fd_index);
                continue;
            }
            st_.sessions[slot[i]].files.push_back({f.id, f.token, f.fd_index});
        }
        for (size_t i = files_.size(); i < nr_fds_; i++) st_.unused_fds.push_back(i);
        std::sort(st_.unused_fds.begin(), st_.unused_fds.end());
    }

    // An incoming session whose name an outgoing one has too.
    void mark_shadowed(std::vector<bool>* shadowed) {
        std::vector<size_t> v(sessions_.size());
        for (size_t i = 0; i < v.size(); i++) v[i] = i;
        std::sort(v.begin(), v.end(),
                  [this](size_t a, size_t b) { return sessions_[a].name < sessions_[b].name; });
        for (size_t i = 1; i < v.size(); i++) {
            const RawSession& a = sessions_[v[i - 1]];
            const RawSession& b = sessions_[v[i]];
            if (a.name != b.name) continue;  // check_names: at most one of each direction
            (*shadowed)[a.incoming ? v[i - 1] : v[i]] = true;
            st_.shadowed_sessions++;
        }
    }

    std::span<const uint8_t> p_;
    size_t nr_fds_;
    std::string* why_;
    JournalState st_;
    bool have_epoch_ = false;
    std::vector<RawSession> sessions_;
    std::vector<RawFile> files_;
};

}  // namespace

int parse_journal(std::span<const uint8_t> bytes, size_t nr_fds, JournalState* out,
                  std::string* why) {
    return JournalReader::read(bytes, nr_fds, out, why);
}

}  // namespace lu
