// SPDX-License-Identifier: Apache-2.0
#include "metrics.hpp"

#include <cstdio>

namespace lu {

namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
    out += std::string("# TYPE ") + name + " " + type + "\n# HELP " + name + " " + help + "\n";
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
    char num[64];
    std::snprintf(num, sizeof num, "%.9g", v);
    out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + num + "\n";
}

}  // namespace

std::string render_openmetrics(const UpdateHistory& h, const Gauges& g) {
    std::string out;
    family(out, "liveupdate_updates", "counter", "Updates since the cold start, by kind and outcome.");
    for (const char* kind : {"reboot"})
        for (const char* outcome : {"committed", "rolled_back", "dry_run"}) {
            auto it = h.counts().find({kind, outcome});
            sample(out, "liveupdate_updates_total",
                   std::string("kind=\"") + kind + "\",outcome=\"" + outcome + "\"",
                   it == h.counts().end() ? 0 : static_cast<double>(it->second));
        }
    family(out, "liveupdate_blackout_seconds", "histogram",
           "How long clients waited during each committed update.");
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= kBlackoutBuckets.size(); i++) {
        cumulative += h.buckets()[i];
        char le[32];
        if (i < kBlackoutBuckets.size()) std::snprintf(le, sizeof le, "%g", kBlackoutBuckets[i]);
        else std::snprintf(le, sizeof le, "+Inf");
        sample(out, "liveupdate_blackout_seconds_bucket", std::string("le=\"") + le + "\"",
               static_cast<double>(cumulative));
    }
    sample(out, "liveupdate_blackout_seconds_sum", "", static_cast<double>(h.blackout_sum_us()) / 1e6);
    sample(out, "liveupdate_blackout_seconds_count", "", static_cast<double>(h.blackout_count()));
    family(out, "liveupdate_crashes_recovered", "counter", "Daemon crashes recovered from.");
    sample(out, "liveupdate_crashes_recovered_total", "", static_cast<double>(h.crashes_recovered()));
    family(out, "liveupdate_epoch", "gauge", "Reboots since the cold start.");
    sample(out, "liveupdate_epoch", "", static_cast<double>(g.epoch));
    family(out, "liveupdate_sessions", "gauge", "Sessions held, by direction.");
    sample(out, "liveupdate_sessions", "direction=\"outgoing\"", static_cast<double>(g.outgoing_sessions));
    sample(out, "liveupdate_sessions", "direction=\"incoming\"", static_cast<double>(g.incoming_sessions));
    family(out, "liveupdate_preserved_files", "gauge", "Files preserved.");
    sample(out, "liveupdate_preserved_files", "", static_cast<double>(g.preserved_files));
    family(out, "liveupdate_preserved_bytes", "gauge", "Bytes of the regular files preserved.");
    sample(out, "liveupdate_preserved_bytes", "", static_cast<double>(g.preserved_bytes));
    family(out, "liveupdate_fds", "gauge", "The daemon's file descriptors: in use, and its limit.");
    sample(out, "liveupdate_fds", "state=\"in_use\"", static_cast<double>(g.fds_in_use));
    sample(out, "liveupdate_fds", "state=\"limit\"", static_cast<double>(g.fds_limit));
    out += "# EOF\n";
    return out;
}

}  // namespace lu
