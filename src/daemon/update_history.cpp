// SPDX-License-Identifier: Apache-2.0
#include "update_history.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <nlohmann/json.hpp>

namespace lu {

namespace {

using nlohmann::json;

constexpr const char* kPhaseNames[kPhaseCount] = {"gate",     "freeze",   "encode", "spawn",
                                                  "transfer", "validate", "commit", "first_request"};

bool known(const std::string& s, std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return s == n; });
}
constexpr std::initializer_list<const char*> kKinds = {"reboot", "upgrade", "handoff"};
constexpr std::initializer_list<const char*> kOutcomes = {"committed", "rolled_back", "dry_run"};

// A field of the expected type, or nothing (and *ok false if present but wrong).
template <typename T>
std::optional<T> field(const json& j, const char* key, bool* ok) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    bool right = false;
    if constexpr (std::is_same_v<T, std::string>) right = it->is_string();
    else if constexpr (std::is_same_v<T, int64_t>) right = it->is_number_integer();
    else right = it->is_number_unsigned();
    if (!right) {
        *ok = false;
        return std::nullopt;
    }
    return it->get<T>();
}

}  // namespace

const char* phase_name(Phase p) { return kPhaseNames[static_cast<size_t>(p)]; }

namespace {
uint64_t mono_now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

void UpdateMeter::start(uint64_t epoch, const std::string& kind) {
    *this = UpdateMeter();
    kind_ = kind;
    start_ns_ = mono_now_ns();
    timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    started_unix_ms_ = static_cast<int64_t>(wall.tv_sec) * 1000 + wall.tv_nsec / 1000000;
    epoch_ = epoch;
}

void UpdateMeter::mark(Phase p) { mark_at(p, mono_now_ns()); }

void UpdateMeter::mark_at(Phase p, uint64_t mono_ns) { ends_[static_cast<size_t>(p)] = mono_ns; }

UpdateRecord UpdateMeter::record(const std::string& outcome, const std::string& error) const {
    UpdateRecord r;
    r.kind = kind_;
    r.outcome = outcome;
    r.error = error;
    r.started_unix_ms = started_unix_ms_;
    r.epoch = epoch_;
    // Each phase from the previous mark in time: the next instance is
    // started before the gate closes, so the spawn comes first, whatever
    // the order of the enum (which is the order of ends_ on the wire).
    std::array<size_t, kPhaseCount> order;
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ends_[a] < ends_[b]; });
    uint64_t prev = start_ns_;
    for (size_t i : order) {
        if (!ends_[i]) continue;  // not reached
        if (prev && ends_[i] >= prev) r.phase_us[i] = (ends_[i] - prev) / 1000;
        prev = ends_[i];
    }
    const uint64_t gate = ends_[static_cast<size_t>(Phase::Gate)];
    const uint64_t serving = ends_[static_cast<size_t>(Phase::Commit)];
    if (gate && serving >= gate && outcome == "committed") r.blackout_us = (serving - gate) / 1000;
    return r;
}

json UpdateMeter::to_json() const {
    return json{{"kind", kind_},
                {"start_ns", start_ns_},
                {"started_unix_ms", started_unix_ms_},
                {"epoch", epoch_},
                {"ends_ns", ends_}};
}

std::optional<UpdateMeter> UpdateMeter::from_json(const json& j) {
    if (!j.is_object()) return std::nullopt;
    bool ok = true;
    UpdateMeter m;
    auto start = field<uint64_t>(j, "start_ns", &ok);
    auto wall = field<int64_t>(j, "started_unix_ms", &ok);
    auto epoch = field<uint64_t>(j, "epoch", &ok);
    // Absent from an instance that only knew reboots.
    auto kind = field<std::string>(j, "kind", &ok).value_or("reboot");
    auto ends = j.find("ends_ns");
    if (!ok || !start || !wall || !epoch || ends == j.end() || !ends->is_array() ||
        ends->size() != kPhaseCount || !known(kind, kKinds))
        return std::nullopt;
    m.kind_ = kind;
    m.start_ns_ = *start;
    m.started_unix_ms_ = *wall;
    m.epoch_ = *epoch;
    for (size_t i = 0; i < kPhaseCount; i++) {
        if (!(*ends)[i].is_number_unsigned()) return std::nullopt;
        m.ends_[i] = (*ends)[i].get<uint64_t>();
    }
    return m;
}

std::string log_fields(const UpdateRecord& r, int next_pid) {
    std::string s = "kind=" + r.kind + " outcome=" + r.outcome + " pid=" + std::to_string(next_pid) +
                    " epoch=" + std::to_string(r.epoch);
    if (r.blackout_us) s += " blackout_us=" + std::to_string(*r.blackout_us);
    return s;
}

void UpdateHistory::add(UpdateRecord r) {
    counts_[{r.kind, r.outcome}]++;
    if (r.blackout_us) {
        const double s = static_cast<double>(*r.blackout_us) / 1e6;
        size_t b = 0;
        while (b < kBlackoutBuckets.size() && s > kBlackoutBuckets[b]) b++;
        buckets_[b]++;
        blackout_sum_us_ += *r.blackout_us;
        blackout_count_++;
    }
    records_.push_back(std::move(r));
    while (records_.size() > kKept) records_.pop_front();
}

json UpdateHistory::to_json() const {
    json recs = json::array();
    for (const auto& r : records_) {
        json phases = json::object();
        for (size_t i = 0; i < kPhaseCount; i++)
            if (r.phase_us[i]) phases[kPhaseNames[i]] = *r.phase_us[i];
        json j{{"kind", r.kind},   {"outcome", r.outcome}, {"started_unix_ms", r.started_unix_ms},
               {"epoch", r.epoch}, {"phases_us", phases}};
        if (r.blackout_us) j["blackout_us"] = *r.blackout_us;
        if (!r.error.empty()) j["error"] = r.error;
        recs.push_back(std::move(j));
    }
    json counts = json::array();
    for (const auto& [k, n] : counts_) counts.push_back({{"kind", k.first}, {"outcome", k.second}, {"count", n}});
    return json{{"last", std::move(recs)},
                {"counts", std::move(counts)},
                {"blackout_buckets", buckets_},
                {"blackout_sum_us", blackout_sum_us_},
                {"blackout_count", blackout_count_},
                {"crashes_recovered", crashes_recovered_}};
}

std::optional<UpdateHistory> UpdateHistory::from_json(const json& j) {
    if (!j.is_object()) return std::nullopt;
    UpdateHistory h;
    bool ok = true;
    auto last = j.find("last");
    auto counts = j.find("counts");
    auto buckets = j.find("blackout_buckets");
    if (last == j.end() || !last->is_array() || last->size() > kKept || counts == j.end() ||
        !counts->is_array() || counts->size() > 64 || buckets == j.end() || !buckets->is_array() ||
        buckets->size() != h.buckets_.size())
        return std::nullopt;
    for (const json& r : *last) {
        if (!r.is_object()) return std::nullopt;
        UpdateRecord rec;
        auto kind = field<std::string>(r, "kind", &ok);
        auto outcome = field<std::string>(r, "outcome", &ok);
        if (!kind || !outcome || !known(*kind, kKinds) || !known(*outcome, kOutcomes)) return std::nullopt;
        rec.kind = *kind;
        rec.outcome = *outcome;
        rec.started_unix_ms = field<int64_t>(r, "started_unix_ms", &ok).value_or(0);
        rec.epoch = field<uint64_t>(r, "epoch", &ok).value_or(0);
        rec.blackout_us = field<uint64_t>(r, "blackout_us", &ok);
        rec.error = field<std::string>(r, "error", &ok).value_or("");
        auto phases = r.find("phases_us");
        if (phases == r.end() || !phases->is_object()) return std::nullopt;
        for (size_t i = 0; i < kPhaseCount; i++) rec.phase_us[i] = field<uint64_t>(*phases, kPhaseNames[i], &ok);
        if (!ok || rec.error.size() > 4096) return std::nullopt;
        h.records_.push_back(std::move(rec));
    }
    for (const json& c : *counts) {
        if (!c.is_object()) return std::nullopt;
        auto kind = field<std::string>(c, "kind", &ok);
        auto outcome = field<std::string>(c, "outcome", &ok);
        auto n = field<uint64_t>(c, "count", &ok);
        if (!ok || !kind || !outcome || !n || !known(*kind, kKinds) || !known(*outcome, kOutcomes))
            return std::nullopt;
        h.counts_[{*kind, *outcome}] = *n;
    }
    for (size_t i = 0; i < h.buckets_.size(); i++) {
        if (!(*buckets)[i].is_number_unsigned()) return std::nullopt;
        h.buckets_[i] = (*buckets)[i].get<uint64_t>();
    }
    auto sum = field<uint64_t>(j, "blackout_sum_us", &ok);
    auto count = field<uint64_t>(j, "blackout_count", &ok);
    auto crashes = field<uint64_t>(j, "crashes_recovered", &ok);
    if (!ok || !sum || !count || !crashes) return std::nullopt;
    h.blackout_sum_us_ = *sum;
    h.blackout_count_ = *count;
    h.crashes_recovered_ = *crashes;
    return h;
}

}  // namespace lu
