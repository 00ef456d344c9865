// SPDX-License-Identifier: Apache-2.0
// Every update measured, by phase: the last few updates with their outcome
// and the time of each phase, and counters over the daemon's whole life
// (every instance since the cold start: the history moves with a reboot).
// docs/benchmarks.md says what each phase covers.
//
// The phases follow the update's steps; each is the time from the end of the
// previous one (CLOCK_MONOTONIC, shared by both instances, so the next
// instance's marks and the old one's subtract):
//   gate      the request accepted -> the gate closed (clients paused)
//   freeze    -> every session frozen, files in preservation order
//   encode    -> the handover written and sealed
//   spawn     -> the next instance started
//   transfer  -> every preserved fd sent
//   validate  -> the next instance validated everything and said ready
//   commit    -> the next instance deserialized and serves
//   first_request -> the next instance answered its first client request
// The blackout (clients paused) runs from the gate closing to serving, so it
// is freeze + encode + spawn + transfer + validate + commit.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json_fwd.hpp>

namespace lu {

enum class Phase { Gate, Freeze, Encode, Spawn, Transfer, Validate, Commit, FirstRequest };
inline constexpr size_t kPhaseCount = 8;
const char* phase_name(Phase p);

struct UpdateRecord {
    std::string kind = "reboot";  // reboot, upgrade (handoff to come)
    std::string outcome;          // committed, rolled_back, dry_run
    int64_t started_unix_ms = 0;  // wall clock, for people
    uint64_t epoch = 0;           // the epoch the update started from
    std::optional<uint64_t> blackout_us;
    std::array<std::optional<uint64_t>, kPhaseCount> phase_us{};  // unset: not reached
    std::string error;            // why it rolled back
};

// The bounds of the blackout histogram, in seconds (OpenMetrics "le").
inline constexpr std::array<double, 10> kBlackoutBuckets = {
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5};

// The clock of one update: the end of each phase as it happens (CLOCK_MONOTONIC
// ns). The old instance keeps one; it hands its marks to the next instance,
// which adds its own (it sees when it started, received, said ready, served).
class UpdateMeter {
public:
    void start(uint64_t epoch, const std::string& kind);  // the request is accepted
    void mark(Phase p);             // phase p ends now
    void mark_at(Phase p, uint64_t mono_ns);
    bool started() const { return start_ns_ != 0; }
    uint64_t epoch() const { return epoch_; }  // the epoch the update started from
    uint64_t end_of(Phase p) const { return ends_[static_cast<size_t>(p)]; }
    // The record so far: each phase whose start and end are both marked.
    UpdateRecord record(const std::string& outcome, const std::string& error = {}) const;

    nlohmann::json to_json() const;
    static std::optional<UpdateMeter> from_json(const nlohmann::json& j);

private:
    std::string kind_ = "reboot";  // UpdateRecord::kind
    uint64_t start_ns_ = 0;
    int64_t started_unix_ms_ = 0;
    uint64_t epoch_ = 0;
    std::array<uint64_t, kPhaseCount> ends_{};  // 0: not reached
};

// The stable key=value part of an update's log line, for journal readers:
// "kind=reboot outcome=committed pid=N epoch=E blackout_us=B" (the blackout
// only when there was one). Nothing a client sent appears in it.
std::string log_fields(const UpdateRecord& r, int next_pid);

class UpdateHistory {
public:
    static constexpr size_t kKept = 16;  // records kept; counters are for ever

    // Adds a finished update: kept (the oldest dropped past kKept), counted,
    // and its blackout put in the histogram.
    void add(UpdateRecord r);
    // Completes record i (first_request is measured after it was added, by
    // the instance that serves).
    void set_first_request(size_t i, uint64_t us) {
        if (i < records_.size()) records_[i].phase_us[static_cast<size_t>(Phase::FirstRequest)] = us;
    }
    void count_crash_recovered() { crashes_recovered_++; }

    const std::deque<UpdateRecord>& records() const { return records_; }
    const std::map<std::pair<std::string, std::string>, uint64_t>& counts() const { return counts_; }
    const std::array<uint64_t, kBlackoutBuckets.size() + 1>& buckets() const { return buckets_; }
    uint64_t blackout_sum_us() const { return blackout_sum_us_; }
    uint64_t blackout_count() const { return blackout_count_; }
    uint64_t crashes_recovered() const { return crashes_recovered_; }

    // To and from JSON: status --json shows it, and the next instance gets
    // it in the handover. The parse checks every field (it comes from
    // another process) and refuses the whole on any error.
    nlohmann::json to_json() const;
    static std::optional<UpdateHistory> from_json(const nlohmann::json& j);

private:
    std::deque<UpdateRecord> records_;                                // last kKept, oldest first
    std::map<std::pair<std::string, std::string>, uint64_t> counts_;  // (kind, outcome) -> n
    std::array<uint64_t, kBlackoutBuckets.size() + 1> buckets_{};      // last one: +Inf
    uint64_t blackout_sum_us_ = 0;
    uint64_t blackout_count_ = 0;
    uint64_t crashes_recovered_ = 0;
};

}  // namespace lu
