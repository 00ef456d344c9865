// SPDX-License-Identifier: Apache-2.0
// What journal_fuzz checks on one input, shared with its regression test
// (tests/core/fuzz_regression_test.cpp). An input is one byte, nr_fds % 64,
// then the journal's bytes. parse_journal must never crash; what it accepts
// must account for every fd exactly once, come out sorted, and write back
// (with the journal writers) to a journal that parses to the same sessions.
//
// Random bytes rarely get past the crc, so each input is parsed twice: as
// it is, and with every record's crc recomputed, so that the mutations
// reach the checks behind the crc.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "journal_format.hpp"

namespace journal_fuzz {

using Bytes = std::vector<uint8_t>;

// Recomputes the crc of each record whose length field is plausible, up to
// the first one whose is not.
inline void reseal(Bytes& j) {
    size_t at = 0;
    while (j.size() - at >= lu::kJournalHeaderSize) {
        uint32_t len;
        std::memcpy(&len, j.data() + at, 4);
        if (len < lu::kJournalHeaderSize || len % 8 || len > lu::kMaxJournalRecord ||
            len > j.size() - at)
            break;
        const uint32_t crc =
            static_cast<uint32_t>(crc32(crc32(0, nullptr, 0), j.data() + at + 8, len - 8));
        std::memcpy(j.data() + at + 4, &crc, 4);
        at += len;
    }
}

// The accepted state written back in ascending id order, as the keeper
// hands it over, and the number of fds that go with it.
inline Bytes rewrite(const lu::JournalState& st, size_t* nr_fds) {
    struct Rec {
        uint64_t id;
        Bytes bytes;
        bool file;
    };
    std::vector<Rec> recs;
    for (const lu::JournalSession& s : st.sessions) {
        recs.push_back({s.id, lu::journal_session_record(s.id, s.incoming, s.name), false});
        for (const lu::JournalFile& f : s.files)
            recs.push_back({f.id, lu::journal_file_record(f.id, s.id, f.token), true});
    }
    std::sort(recs.begin(), recs.end(), [](const Rec& a, const Rec& b) { return a.id < b.id; });
    Bytes out = lu::journal_epoch_record(st.liveupdate_num, st.crashes, st.last_crash_ns);
    *nr_fds = 0;
    for (const Rec& r : recs) {
        out.insert(out.end(), r.bytes.begin(), r.bytes.end());
        *nr_fds += r.file;
    }
    return out;
}

// The sessions without their fd indexes, for comparing a state with its rewrite.
inline std::string shape(const lu::JournalState& st) {
    std::string s = std::to_string(st.liveupdate_num) + "/" + std::to_string(st.crashes) + "/" +
                    std::to_string(st.last_crash_ns);
    for (const lu::JournalSession& x : st.sessions) {
        s += " [" + std::to_string(x.id) + (x.incoming ? " in " : " out ") + x.name;
        for (const lu::JournalFile& f : x.files)
            s += " " + std::to_string(f.id) + ":" + std::to_string(f.token);
        s += "]";
    }
    return s;
}

// "" if an accepted state keeps the invariants, else the first one it breaks.
inline std::string check_state(const lu::JournalState& st, size_t size, size_t nr_fds) {
    std::vector<int> owners(nr_fds);
    size_t kept = 0;
    for (size_t i = 0; i < st.sessions.size(); i++) {
        const lu::JournalSession& s = st.sessions[i];
        if (i && st.sessions[i - 1].id >= s.id) return "sessions not sorted by id";
        if (s.id == 0) return "session id 0";
        if (s.name.size() > 63 || s.name.find('\0') != std::string::npos)
            return "bad session name";
        for (size_t k = 0; k < s.files.size(); k++) {
            if (k && s.files[k - 1].id >= s.files[k].id) return "files not sorted by id";
            if (s.files[k].fd_index >= nr_fds) return "fd index out of range";
            owners[s.files[k].fd_index]++;
            kept++;
        }
    }
    for (size_t i = 0; i < st.unused_fds.size(); i++) {
        if (i && st.unused_fds[i - 1] >= st.unused_fds[i]) return "unused fds not sorted";
        if (st.unused_fds[i] >= nr_fds) return "unused fd out of range";
        owners[st.unused_fds[i]]++;
    }
    std::vector<std::string> names;
    for (const lu::JournalSession& s : st.sessions) names.push_back(s.name);
    std::sort(names.begin(), names.end());
    if (std::adjacent_find(names.begin(), names.end()) != names.end())
        return "two kept sessions of one name";
    for (int n : owners)
        if (n != 1) return "an fd kept twice, or neither kept nor unused";
    if (st.records == 0 || st.torn_bytes >= size ||
        st.records > (size - st.torn_bytes) / lu::kJournalHeaderSize)
        return "record count or torn bytes inconsistent with the size";
    if (kept + st.orphan_files > nr_fds) return "more files than fds";

    size_t again_fds = 0;
    const Bytes again = rewrite(st, &again_fds);
    lu::JournalState st2;
    std::string why;
    if (lu::parse_journal(again, again_fds, &st2, &why) != 0) return "rewrite refused: " + why;
    if (shape(st2) != shape(st) || st2.torn_bytes || st2.orphan_files || st2.shadowed_sessions ||
        !st2.unused_fds.empty() || st2.records != 1 + st.sessions.size() + kept)
        return "rewrite parses to another state";
    return "";
}

// One parse: "" if it kept every promise.
inline std::string check_journal(std::span<const uint8_t> j, size_t nr_fds, bool* accepted) {
    lu::JournalState st;
    std::string why;
    const int r = lu::parse_journal(j, nr_fds, &st, &why);
    *accepted = r == 0;
    if (r == 0) return check_state(st, j.size(), nr_fds);
    if (r != -EBADMSG) return "returned " + std::to_string(r);
    if (why.empty()) return "refused without a reason";
    return "";
}

// The whole input, as is and resealed. *accepted: how many of the two parsed.
inline std::string check_input(std::span<const uint8_t> in, int* accepted = nullptr) {
    if (accepted) *accepted = 0;
    if (in.empty()) return "";
    const size_t nr_fds = in[0] % 64;
    Bytes j(in.begin() + 1, in.end());
    bool ok = false;
    std::string err = check_journal(j, nr_fds, &ok);
    if (accepted) *accepted += ok;
    if (!err.empty()) return err;
    reseal(j);
    err = check_journal(j, nr_fds, &ok);
    if (accepted) *accepted += ok;
    return err.empty() ? "" : "resealed: " + err;
}

}  // namespace journal_fuzz
