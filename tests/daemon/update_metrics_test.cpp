// SPDX-License-Identifier: Apache-2.0
// Every update measured: status --json and metrics after a committed
// reboot, a dry run and a failed update, through the real daemon; the
// phases add up to the blackout; the metrics parse with a real OpenMetrics
// parser (Python's prometheus_client); and a hostile history is refused.
#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon_test_util.hpp"
#include "update_history.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

// Each phase is truncated to a microsecond on its own, the blackout once:
// their sum may fall short of it by at most one per phase.
constexpr uint64_t kRoundingUs = 7;

uint64_t phase(const json& r, const char* name) {
    return r["phases_us"].contains(name) ? r["phases_us"][name].get<uint64_t>() : 0;
}

TEST(UpdateMetrics, StatusShowsEachUpdateWithPhasesThatAddUpToTheBlackout) {
    DaemonProcess d;
    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0);
    Fd s(lu_create_session(ctl.get(), "kept"));
    Fd m = make_memfd("measured");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);
    ctl.reset();
    s.reset();  // released: the sessions are not the point here
    ASSERT_EQ(d.reboot(), 0);
    ASSERT_EQ(d.reboot({"--dry-run"}), 0);
    ASSERT_NE(d.reboot({"--exec", "/bin/false"}), 0);
    // A client request: the first one after the reboot ends its last phase.
    Fd ctl2(lu_open());
    ASSERT_GE(ctl2.get(), 0);
    EXPECT_EQ(lu_retrieve_session(ctl2.get(), "none"), -ENOENT);

    json st = d.status();
    ASSERT_TRUE(st.contains("updates")) << st.dump();
    const json& u = st["updates"];
    ASSERT_EQ(u["last"].size(), 3u) << u.dump();
    const json& committed = u["last"][0];
    EXPECT_EQ(committed["kind"], "reboot");
    EXPECT_EQ(committed["outcome"], "committed");
    EXPECT_EQ(committed["epoch"], 0);
    ASSERT_TRUE(committed.contains("blackout_us"));
    uint64_t blackout = committed["blackout_us"].get<uint64_t>();
    // The next instance starts while this one serves: spawn and gate (its
    // load, then the wait for its connection) come before the blackout;
    // the blackout is the phases after the gate, end to end.
    uint64_t sum = 0;
    for (const char* p : {"freeze", "encode", "transfer", "validate", "commit"}) {
        EXPECT_TRUE(committed["phases_us"].contains(p)) << p << ": " << committed.dump();
        sum += phase(committed, p);
    }
    EXPECT_TRUE(committed["phases_us"].contains("spawn")) << committed.dump();
    EXPECT_TRUE(committed["phases_us"].contains("gate"));
    EXPECT_TRUE(committed["phases_us"].contains("first_request")) << committed.dump();
    EXPECT_LE(sum, blackout);
    EXPECT_GE(sum + kRoundingUs, blackout) << committed.dump();

    EXPECT_EQ(u["last"][1]["outcome"], "dry_run");
    EXPECT_TRUE(u["last"][1]["phases_us"].contains("validate"));
    EXPECT_FALSE(u["last"][1]["phases_us"].contains("commit"));
    EXPECT_EQ(u["last"][2]["outcome"], "rolled_back");
    EXPECT_NE(u["last"][2]["error"].get<std::string>().find("exit status 1"), std::string::npos);
    EXPECT_FALSE(u["last"][2].contains("blackout_us"));
    EXPECT_EQ(u["blackout_count"], 1);

    // The short table in liveupdatectl status.
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"status"}, &out), 0);
    EXPECT_NE(out.find("UPDATES"), std::string::npos) << out;
    EXPECT_NE(out.find("rolled_back"), std::string::npos) << out;
}

TEST(UpdateMetrics, MetricsParseWithAnOpenMetricsParserAndCountRight) {
    DaemonProcess d;
    ASSERT_EQ(d.reboot(), 0);
    ASSERT_EQ(d.reboot(), 0);
    ASSERT_NE(d.reboot({"--exec", "/bin/false"}), 0);
    Fd ctl(lu_open());
    Fd s(lu_create_session(ctl.get(), "gauged"));
    Fd m = make_memfd("0123456789");
    ASSERT_EQ(lu_preserve_fd(s.get(), m.get(), 1), 0);

    char dir[] = "/tmp/lu-metrics-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string file = std::string(dir) + "/metrics.txt";
    std::string out;
    ASSERT_EQ(DaemonProcess::ctl({"metrics"}, &out), 0);
    { std::ofstream(file) << out; }
    // The parser prints "name labels value" for each sample it accepted;
    // a text it cannot parse is an exception (exit 1).
    std::string cmd = "/usr/bin/python3 -c '"
                      "import sys\n"
                      "from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n"
                      "for f in p(open(sys.argv[1]).read()):\n"
                      "    for s in f.samples:\n"
                      "        print(s.name, \",\".join(k+\"=\"+v for k,v in sorted(s.labels.items())), \"%g\" % s.value)\n"
                      "' " + file + " 2>&1";
    std::string parsed;
    int st = DaemonProcess::shell(cmd, &parsed);
    std::filesystem::remove_all(dir);
    ASSERT_EQ(st, 0) << parsed << "\n---\n" << out;
    EXPECT_NE(parsed.find("liveupdate_updates_total kind=reboot,outcome=committed 2\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_updates_total kind=reboot,outcome=rolled_back 1\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_blackout_seconds_count  2\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_blackout_seconds_bucket le=+Inf 2\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_epoch  2\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_sessions direction=outgoing 1\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_preserved_files  1\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_preserved_bytes  10\n"), std::string::npos) << parsed;
    EXPECT_NE(parsed.find("liveupdate_fds state=limit"), std::string::npos) << parsed;
}

// One line per update with a stable key=value part; --log-level is obeyed
// and handed on to the next instance.
TEST(UpdateMetrics, LogLinesCarryStableFieldsAndTheLevelIsHandedOn) {
    char path[] = "/tmp/lu-log-XXXXXX";
    int log = mkstemp(path);
    ASSERT_GE(log, 0);
    int saved = dup(2);
    for (const char* level : {"info", "warn"}) {
        ASSERT_EQ(ftruncate(log, 0), 0);
        dup2(log, 2);  // the daemons inherit it
        {
            DaemonProcess d({"--log-level", level});
            EXPECT_EQ(d.reboot(), 0);
            EXPECT_NE(d.reboot({"--exec", "/bin/false"}), 0);
        }
        dup2(saved, 2);
        std::ifstream f(path);
        std::string text((std::istreambuf_iterator<char>(f)), {});
        bool info = std::string(level) == "info";
        EXPECT_EQ(text.find("kind=reboot outcome=committed pid=") != std::string::npos, info) << text;
        EXPECT_EQ(text.find("blackout_us=") != std::string::npos, info) << text;
        // The next instance's own info lines obey the level it was handed.
        EXPECT_EQ(text.find("serving epoch 1") != std::string::npos, info) << text;
        EXPECT_NE(text.find("kind=reboot outcome=rolled_back pid="), std::string::npos) << text;
    }
    close(saved);
    close(log);
    unlink(path);
}

// The history comes from another process: anything malformed is refused
// whole, never half used.
TEST(UpdateMetrics, HostileHistoryIsRefused) {
    UpdateHistory h;
    UpdateMeter meter;
    meter.start(3, "reboot");
    meter.mark(Phase::Gate);
    h.add(meter.record("rolled_back", "why"));
    json good = h.to_json();
    ASSERT_TRUE(UpdateHistory::from_json(good));
    auto back = UpdateHistory::from_json(good);
    EXPECT_EQ(back->records().size(), 1u);
    EXPECT_EQ(back->records()[0].error, "why");
    std::vector<json> bad(8, good);
    bad[0]["last"][0]["outcome"] = "exploded";
    bad[1]["last"][0]["phases_us"]["gate"] = -1;
    bad[2]["blackout_buckets"] = json::array({1, 2});
    bad[3]["last"] = json::array();
    for (int i = 0; i < 17; i++) bad[3]["last"].push_back(good["last"][0]);
    bad[4]["counts"][0]["count"] = "many";
    bad[5].erase("crashes_recovered");
    bad[6]["last"][0]["kind"] = 7;
    bad[7] = json::array();
    for (size_t i = 0; i < bad.size(); i++) EXPECT_FALSE(UpdateHistory::from_json(bad[i])) << i;
    json m = meter.to_json();
    ASSERT_TRUE(UpdateMeter::from_json(m));
    m["ends_ns"] = json::array({1, 2});
    EXPECT_FALSE(UpdateMeter::from_json(m));
}

}  // namespace
}  // namespace lu::testing
