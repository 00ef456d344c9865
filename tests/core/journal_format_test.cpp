// SPDX-License-Identifier: Apache-2.0
// The crash journal: the writers' bytes, a realistic journal's round trip,
// each of parse_journal's rules with its exact outcome, every truncation and
// every bit flip of a journal, the keeper's peek, and the committed fixture.
#include "journal_format.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <zlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace lu {
namespace {

using Bytes = std::vector<uint8_t>;

void append(Bytes* j, const Bytes& rec) {
    j->insert(j->end(), rec.begin(), rec.end());
}

uint32_t crc_of(const Bytes& rec) {
    return static_cast<uint32_t>(crc32(crc32(0, nullptr, 0), rec.data() + 8, rec.size() - 8));
}

// Recomputes a record's crc after a test changed its bytes: the record is
// then whole, and only its contents can be wrong.
Bytes reseal(Bytes rec) {
    const uint32_t crc = crc_of(rec);
    std::memcpy(rec.data() + 4, &crc, 4);
    return rec;
}

template <class T>
Bytes set(Bytes rec, size_t off, T v) {
    std::memcpy(rec.data() + off, &v, sizeof v);
    return reseal(std::move(rec));
}

// A copy with one bit of byte `at` flipped, crc left as it was.
Bytes flip(Bytes b, size_t at) {
    b[at] ^= 1;
    return b;
}

// Any record, right crc, whatever its header says.
Bytes raw_record(uint16_t type, uint64_t id, const Bytes& payload, uint16_t version = 1,
                 uint32_t reserved = 0) {
    Bytes rec(kJournalHeaderSize + payload.size());
    const uint32_t len = static_cast<uint32_t>(rec.size());
    std::memcpy(rec.data(), &len, 4);
    std::memcpy(rec.data() + 8, &type, 2);
    std::memcpy(rec.data() + 10, &version, 2);
    std::memcpy(rec.data() + 12, &reserved, 4);
    std::memcpy(rec.data() + 16, &id, 8);
    std::copy(payload.begin(), payload.end(), rec.begin() + kJournalHeaderSize);
    return reseal(std::move(rec));
}

Bytes epoch() {
    return journal_epoch_record(3, 0, 0);
}

Bytes journal(std::initializer_list<Bytes> recs) {
    Bytes j;
    for (const Bytes& r : recs) append(&j, r);
    return j;
}

// Everything a state holds, on one line, so a mismatch shows where.
std::string dump(const JournalState& st) {
    std::string s = "epoch " + std::to_string(st.liveupdate_num) + "/" +
                    std::to_string(st.crashes) + "/" + std::to_string(st.last_crash_ns) +
                    " records " + std::to_string(st.records) + " torn " +
                    std::to_string(st.torn_bytes) + " orphans " + std::to_string(st.orphan_files) +
                    " shadowed " + std::to_string(st.shadowed_sessions) + " unused";
    for (size_t i : st.unused_fds) s += " " + std::to_string(i);
    for (const JournalSession& x : st.sessions) {
        s += " | " + std::to_string(x.id) + (x.incoming ? " in " : " out ") + x.name;
        for (const JournalFile& f : x.files)
            s += " " + std::to_string(f.id) + ":" + std::to_string(f.token) + "@" +
                 std::to_string(f.fd_index);
    }
    return s;
}

JournalState parse_ok(const Bytes& j, size_t nr_fds) {
    JournalState st;
    std::string why;
    EXPECT_EQ(parse_journal(j, nr_fds, &st, &why), 0) << why;
    return st;
}

// Refused, *why naming `what` (and the record's offset, when there is one).
void expect_refused(const Bytes& j, size_t nr_fds, const std::string& what) {
    JournalState st;
    st.records = 12345;  // untouched on failure
    std::string why;
    EXPECT_EQ(parse_journal(j, nr_fds, &st, &why), -EBADMSG) << what;
    EXPECT_NE(why.find(what), std::string::npos) << "why: " << why;
    EXPECT_EQ(st.records, 12345u);
}

// A daemon's journal as the keeper hands it over: ascending ids, two
// outgoing sessions (one with the longest name) and an incoming one.
Bytes realistic() {
    return journal({journal_epoch_record(7, 2, 1700000000123456789ull),
                    journal_session_record(1, false, "vm-0"), journal_file_record(2, 1, 10),
                    journal_file_record(3, 1, 11), journal_session_record(4, true, "old-db"),
                    journal_file_record(5, 4, 0), journal_session_record(6, false, "empty"),
                    journal_file_record(7, 1, UINT64_MAX),
                    journal_session_record(8, false, std::string(63, 'n'))});
}
constexpr const char* kRealistic =
    "epoch 7/2/1700000000123456789 records 9 torn 0 orphans 0 shadowed 0 unused"
    " | 1 out vm-0 2:10@0 3:11@1 7:18446744073709551615@3 | 4 in old-db 5:0@2 | 6 out empty"
    " | 8 out nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn";

TEST(JournalFormat, RecordsHaveTheDocumentedBytes) {
    const Bytes e = journal_epoch_record(0x1122, 3, 4);
    ASSERT_EQ(e.size(), 48u);
    const Bytes want_head{48, 0, 0, 0};
    EXPECT_TRUE(std::equal(want_head.begin(), want_head.end(), e.begin()));
    EXPECT_EQ(e[8], 1);   // type Epoch
    EXPECT_EQ(e[10], 1);  // version
    EXPECT_EQ(e[24], 0x22);
    EXPECT_EQ(e[25], 0x11);
    uint32_t crc;
    std::memcpy(&crc, e.data() + 4, 4);
    EXPECT_EQ(crc, crc_of(e));

    const Bytes s = journal_session_record(9, true, "abcdefghi");  // 9 bytes: padded to 16
    ASSERT_EQ(s.size(), 24u + 8 + 16);
    EXPECT_EQ(s[8], 2);
    EXPECT_EQ(s[16], 9);
    EXPECT_EQ(s[24], 1);  // incoming
    EXPECT_EQ(s[25], 9);
    EXPECT_EQ(std::string(s.begin() + 32, s.begin() + 41), "abcdefghi");
    for (size_t i = 41; i < s.size(); i++) EXPECT_EQ(s[i], 0) << i;

    const Bytes f = journal_file_record(5, 9, 0xabcd);
    ASSERT_EQ(f.size(), 40u);
    EXPECT_EQ(f[8], 3);
    EXPECT_EQ(f[24], 9);
    EXPECT_EQ(f[32], 0xcd);
    EXPECT_EQ(f[33], 0xab);
}

TEST(JournalFormat, WritersRefuseWhatTheParserWould) {
    EXPECT_THROW(journal_session_record(0, false, "a"), std::invalid_argument);
    EXPECT_THROW(journal_session_record(1, false, std::string(64, 'a')), std::invalid_argument);
    EXPECT_THROW(journal_session_record(1, false, std::string("a\0b", 3)), std::invalid_argument);
    EXPECT_THROW(journal_file_record(0, 1, 1), std::invalid_argument);
    EXPECT_THROW(journal_file_record(1, 0, 1), std::invalid_argument);
}

TEST(JournalFormat, RealisticJournalRoundTrips) {
    EXPECT_EQ(dump(parse_ok(realistic(), 4)), kRealistic);
}

// Kernels before v7.2 created sessions with an empty name: a crash keeps them too.
TEST(JournalFormat, AnEmptySessionNameRoundTrips) {
    const Bytes j = journal({epoch(), journal_session_record(1, false, ""), journal_file_record(2, 1, 9)});
    JournalState st;
    std::string why;
    ASSERT_EQ(parse_journal(j, 1, &st, &why), 0) << why;
    ASSERT_EQ(st.sessions.size(), 1u);
    EXPECT_EQ(st.sessions[0].name, "");
    ASSERT_EQ(st.sessions[0].files.size(), 1u);
    EXPECT_EQ(st.sessions[0].files[0].token, 9u);
}

TEST(JournalFormat, AnyIdOrderAndAFileBeforeItsSession) {
    // The same records as realistic(), reversed: the fds follow journal order.
    const Bytes fwd = realistic();
    std::vector<Bytes> recs;
    for (size_t at = 0; at < fwd.size();) {
        uint32_t len;
        std::memcpy(&len, fwd.data() + at, 4);
        recs.emplace_back(fwd.begin() + at, fwd.begin() + at + len);
        at += len;
    }
    Bytes rev;
    for (auto it = recs.rbegin(); it != recs.rend(); ++it) append(&rev, *it);
    EXPECT_EQ(dump(parse_ok(rev, 4)),
              "epoch 7/2/1700000000123456789 records 9 torn 0 orphans 0 shadowed 0 unused"
              " | 1 out vm-0 2:10@3 3:11@2 7:18446744073709551615@0 | 4 in old-db 5:0@1"
              " | 6 out empty | 8 out " +
                  std::string(63, 'n'));
}

// Rule 1: each way a record is not whole rolls the journal back to the one before.
TEST(JournalFormat, Rule1TornTailIsRolledBack) {
    const Bytes head =
        journal({epoch(), journal_session_record(1, false, "s"), journal_file_record(2, 1, 5)});
    const Bytes file = journal_file_record(3, 1, 6);
    struct Case {
        const char* what;
        Bytes tail;
        size_t nr_fds;
        bool more;  // a whole record follows the torn one, and is dropped with it
    };
    const Case cases[] = {
        {"shorter than a header", Bytes(file.begin(), file.begin() + 23), 2, false},
        {"len below a header", set<uint32_t>(file, 0, 16), 2, true},
        {"len not a multiple of 8", set<uint32_t>(file, 0, 36), 2, true},
        {"len above the largest record", set<uint32_t>(file, 0, 264), 2, true},
        {"len past the end", Bytes(file.begin(), file.end() - 8), 2, false},
        {"crc mismatch", flip(file, 39), 2, true},
        {"File without its fd", file, 1, true},
    };
    for (const Case& c : cases) {
        Bytes j = head;
        append(&j, c.tail);
        if (c.more) append(&j, journal_session_record(9, false, "after"));
        const size_t torn = j.size() - head.size();
        EXPECT_EQ(dump(parse_ok(j, c.nr_fds)), "epoch 3/0/0 records 3 torn " +
                                                   std::to_string(torn) +
                                                   " orphans 0 shadowed 0 unused" +
                                                   (c.nr_fds == 2 ? " 1" : "") + " | 1 out s 2:5@0")
            << c.what;
    }
}

// Rule 2: a whole record with wrong contents refuses the journal.
TEST(JournalFormat, Rule2WrongContentsRefuseTheJournal) {
    const Bytes e = epoch();  // 48 bytes: the next record is at offset 48
    const Bytes s = journal_session_record(1, false, "abc");
    const Bytes f = journal_file_record(2, 1, 5);
    auto session_payload = [](uint8_t dir, uint8_t len, Bytes name, size_t pad_to) {
        Bytes p{dir, len, 0, 0, 0, 0, 0, 0};
        name.resize(pad_to);
        p.insert(p.end(), name.begin(), name.end());
        return p;
    };
    auto session = [&](uint8_t dir, uint8_t len, Bytes name, size_t pad_to) {
        return raw_record(2, 1, session_payload(dir, len, std::move(name), pad_to));
    };
    struct Case {
        const char* what;
        Bytes j;
        size_t nr_fds;
    };
    const Case cases[] = {
        {"offset 48: version 2", journal({e, raw_record(2, 1, session_payload(0, 1, {'a'}, 8), 2)}),
         0},
        {"offset 48: reserved",
         journal({e, raw_record(2, 1, session_payload(0, 1, {'a'}, 8), 1, 7)}), 0},
        {"offset 48: unknown type 4", journal({e, raw_record(4, 1, {})}), 0},
        {"offset 48: unknown type 0", journal({e, raw_record(0, 1, Bytes(8))}), 0},
        {"offset 0: Epoch record of 56 bytes", raw_record(1, 0, Bytes(32)), 0},
        {"offset 48: Session record of 24 bytes", journal({e, raw_record(2, 1, {})}), 0},
        {"offset 48: Session record of 56 bytes for a name of 3",
         journal({e, session(0, 3, {'a', 'b', 'c'}, 24)}), 0},
        {"offset 88: File record of 48 bytes", journal({e, s, raw_record(3, 2, Bytes(24))}), 1},
        {"offset 48: Session padding not zero", journal({e, set<uint8_t>(s, 31, 1)}), 0},
        {"offset 48: name padding not zero", journal({e, set<uint8_t>(s, 39, 1)}), 0},
        {"offset 48: Session id 0", journal({e, set<uint64_t>(s, 16, 0)}), 0},
        {"offset 88: File id 0", journal({e, s, set<uint64_t>(f, 16, 0)}), 1},
        {"offset 0: Epoch id not 0", set<uint64_t>(e, 16, 5), 0},
        {"offset 88: a second Epoch", journal({e, s, e}), 0},
        {"no Epoch record in 2 records", journal({s, f}), 1},
        {"no Epoch record in 0 records (48 torn bytes)", flip(e, 40), 0},
        {"empty journal", {}, 0},
        {"offset 48: name length 64", journal({e, session(0, 64, Bytes(64, 'a'), 64)}), 0},
        {"offset 48: NUL in the session name", journal({e, session(0, 3, {'a', 0, 'c'}, 8)}), 0},
        {"offset 48: direction 2", journal({e, set<uint8_t>(s, 24, 2)}), 0},
        {"offset 88: id 1 already used at offset 48",
         journal({e, s, journal_session_record(1, false, "other")}), 0},
        {"offset 88: id 1 already used at offset 48", journal({e, s, journal_file_record(1, 1, 5)}),
         1},
        {"offset 88: outgoing session name already used at offset 48",
         journal({e, s, journal_session_record(2, false, "abc")}), 0},
        {"offset 88: incoming session name already used at offset 48",
         journal(
             {e, journal_session_record(1, true, "abc"), journal_session_record(2, true, "abc")}),
         0},
        {"offset 128: token 5 already in the session, at offset 88",
         journal({e, s, f, journal_file_record(3, 1, 5)}), 2},
        {"offset 88: token 5 already in the session, at offset 48",  // orphans' tokens too
         journal({e, journal_file_record(3, 9, 5), journal_file_record(4, 9, 5)}), 2},
        {"offset 88: File session_id 0", journal({e, s, raw_record(3, 2, Bytes(16))}), 1},
        {"offset 88: session_id 1 names a File",
         journal({e, journal_file_record(1, 7, 5), journal_file_record(2, 1, 5)}), 2},
    };
    for (const Case& c : cases) expect_refused(c.j, c.nr_fds, c.what);
}

// Rule 3: a File whose session is gone is dropped, its fd unused.
TEST(JournalFormat, Rule3OrphanFilesAreDropped) {
    const Bytes j =
        journal({epoch(), journal_file_record(2, 1, 7), journal_file_record(3, 1, 8),
                 journal_session_record(4, false, "live"), journal_file_record(5, 4, 7)});
    EXPECT_EQ(dump(parse_ok(j, 3)),
              "epoch 3/0/0 records 5 torn 0 orphans 2 shadowed 0 unused 0 1 | 4 out live 5:7@2");
}

// Rule 4: the outgoing session of a name wins over the incoming one.
TEST(JournalFormat, Rule4IncomingSessionIsShadowedByOutgoing) {
    const Bytes j =
        journal({epoch(), journal_session_record(1, true, "kv"), journal_file_record(2, 1, 1),
                 journal_session_record(3, false, "kv"), journal_file_record(4, 3, 1),
                 journal_session_record(5, true, "other"), journal_file_record(6, 1, 2)});
    EXPECT_EQ(dump(parse_ok(j, 3)),
              "epoch 3/0/0 records 7 torn 0 orphans 0 shadowed 1 unused 0 2"
              " | 3 out kv 4:1@1 | 5 in other");
}

// Rule 5: fds beyond the last File record are unused.
TEST(JournalFormat, Rule5FdsBeyondTheFilesAreUnused) {
    const Bytes j =
        journal({epoch(), journal_session_record(1, false, "s"), journal_file_record(2, 1, 1)});
    EXPECT_EQ(dump(parse_ok(j, 4)),
              "epoch 3/0/0 records 3 torn 0 orphans 0 shadowed 0 unused 1 2 3 | 1 out s 2:1@0");
    EXPECT_EQ(dump(parse_ok(journal({epoch()}), 2)),
              "epoch 3/0/0 records 1 torn 0 orphans 0 shadowed 0 unused 0 1");
}

// A journal past the limit is refused before any byte is read: the mapping
// has no access at all.
TEST(JournalFormat, LargerThanTheLimitIsRefusedUnread) {
    const size_t n = kMaxJournalSize + 8;
    void* p = mmap(nullptr, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    JournalState st;
    std::string why;
    EXPECT_EQ(parse_journal({static_cast<const uint8_t*>(p), n}, 0, &st, &why), -EBADMSG);
    EXPECT_EQ(why, "journal larger than 1 GiB");
    munmap(p, n);
}

TEST(JournalFormat, MoreFdsThanAJournalCanOwnAreRefused) {
    expect_refused(journal({epoch()}), kMaxJournalSize / 40 + 1, "more fds than a journal can own");
}

// Three sessions, each with files; record offsets for the tests below.
Bytes three_sessions(std::vector<size_t>* ends, std::vector<uint64_t>* ids) {
    const std::vector<std::pair<uint64_t, Bytes>> recs = {
        {0, epoch()},
        {1, journal_session_record(1, false, "alpha")},
        {2, journal_file_record(2, 1, 100)},
        {3, journal_session_record(3, true, "beta-incoming")},
        {4, journal_file_record(4, 3, 200)},
        {5, journal_file_record(5, 1, 101)},
        {6, journal_session_record(6, false, "gamma")},
        {7, journal_file_record(7, 6, 300)},
    };
    Bytes j;
    for (const auto& [id, rec] : recs) {
        append(&j, rec);
        ends->push_back(j.size());
        ids->push_back(id);
    }
    return j;
}

bool keeps_id(const JournalState& st, uint64_t id) {
    for (const JournalSession& s : st.sessions) {
        if (s.id == id) return true;
        for (const JournalFile& f : s.files)
            if (f.id == id) return true;
    }
    return false;
}

TEST(JournalFormat, EveryTruncationRollsBackToTheLastWholeRecord) {
    std::vector<size_t> ends;
    std::vector<uint64_t> ids;
    const Bytes full = three_sessions(&ends, &ids);
    for (size_t cut = 0; cut <= full.size(); cut++) {
        const Bytes j(full.begin(), full.begin() + cut);
        size_t whole = 0;
        while (whole < ends.size() && ends[whole] <= cut) whole++;
        JournalState st;
        std::string why;
        const int r = parse_journal(j, 4, &st, &why);
        if (whole == 0) {  // the Epoch itself is cut
            EXPECT_EQ(r, -EBADMSG) << cut;
            continue;
        }
        ASSERT_EQ(r, 0) << cut << ": " << why;
        EXPECT_EQ(st.records, whole) << cut;
        EXPECT_EQ(st.torn_bytes, cut - ends[whole - 1]) << cut;
        for (size_t i = 1; i < ids.size(); i++)
            EXPECT_EQ(keeps_id(st, ids[i]), i < whole) << "cut " << cut << " id " << ids[i];
        size_t kept_fds = 0;
        for (const JournalSession& s : st.sessions) kept_fds += s.files.size();
        EXPECT_EQ(kept_fds + st.unused_fds.size(), 4u) << cut;
    }
}

TEST(JournalFormat, EveryBitFlipIsCaughtByTheCrc) {
    std::vector<size_t> ends;
    std::vector<uint64_t> ids;
    const Bytes full = three_sessions(&ends, &ids);
    for (size_t byte = 0; byte < full.size(); byte++) {
        size_t rec = 0;
        while (ends[rec] <= byte) rec++;
        for (int bit = 0; bit < 8; bit++) {
            Bytes j = full;
            j[byte] ^= uint8_t(1u << bit);
            JournalState st;
            std::string why;
            const int r = parse_journal(j, 4, &st, &why);
            if (rec == 0) {  // the Epoch rolled back: nothing left
                EXPECT_EQ(r, -EBADMSG) << byte << "." << bit;
                continue;
            }
            ASSERT_EQ(r, 0) << byte << "." << bit << ": " << why;
            EXPECT_EQ(st.records, rec) << byte << "." << bit;
            EXPECT_EQ(st.torn_bytes, full.size() - ends[rec - 1]) << byte << "." << bit;
        }
    }
}

TEST(JournalFormat, PeekTrustsOnlyWholeRecordsOfAKnownType) {
    uint64_t id = 99;
    bool fd = true;
    EXPECT_TRUE(journal_record_peek(epoch(), &id, &fd));
    EXPECT_EQ(id, 0u);
    EXPECT_FALSE(fd);
    EXPECT_TRUE(journal_record_peek(journal_session_record(12, true, "x"), &id, &fd));
    EXPECT_EQ(id, 12u);
    EXPECT_FALSE(fd);
    EXPECT_TRUE(journal_record_peek(journal_file_record(13, 12, 1), &id, &fd));
    EXPECT_EQ(id, 13u);
    EXPECT_TRUE(fd);

    const Bytes f = journal_file_record(13, 12, 1);
    Bytes two = f;
    append(&two, f);
    const Bytes bad[] = {
        {},
        Bytes(f.begin(), f.end() - 8),               // shorter than its len
        two,                                         // more than one record
        flip(f, 30),                                 // crc mismatch
        set<uint32_t>(f, 0, 36),                     // len not a multiple of 8
        raw_record(4, 1, {}),                        // unknown type
        raw_record(3, 1, Bytes(kMaxJournalRecord)),  // too large
    };
    for (const Bytes& b : bad) {
        id = 99;
        EXPECT_FALSE(journal_record_peek(b, &id, &fd)) << b.size();
        EXPECT_EQ(id, 99u);
    }
}

// The journal format of release 1, committed: every later build must parse
// it to the same state. Regenerate only with a new format version:
// LU_WRITE_FIXTURE=1 core_tests --gtest_filter='JournalFormat.Fixture*'
TEST(JournalFormat, FixtureOfFormatOneStillParses) {
    const char* path = LU_SOURCE_DIR "/tests/fixtures/journal-v1.bin";
    if (getenv("LU_WRITE_FIXTURE")) {
        const Bytes j = realistic();
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<const char*>(j.data()), static_cast<std::streamsize>(j.size()));
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    const Bytes j((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(j, realistic());  // and this build writes the same bytes
    EXPECT_EQ(dump(parse_ok(j, 4)), kRealistic);
}

}  // namespace
}  // namespace lu
