// SPDX-License-Identifier: Apache-2.0
#include "reboot_receiver.hpp"

#include "agent_mode.hpp"
#include "bounded_read.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "daemon.hpp"
#include "handover_channel.hpp"
#include "handover_format.hpp"
#include "keeper_link.hpp"
#include "reboot_sender.hpp"
#include "server.hpp"
#include "update_history.hpp"
#include "upgrade_format.hpp"

namespace lu {

namespace {

using Kind = NextSideOutcome::Kind;

// The steps, in the order run_next_side takes them.
int validate(Incoming* in, const std::string& fault, std::string* why);
int take_over(Incoming* in, const DaemonConfig& config, const std::string& fault,
              std::unique_ptr<Daemon>* daemon, std::string* why);
std::unique_ptr<Daemon> deserialize(Incoming& in, const DaemonConfig& config, const std::string& fault);
bool report_ready(int channel, const std::string& fault, uint64_t* ready_ns);
Kind await_verdict(int channel, bool keeper_decides);
int report_serving(int channel, uint64_t blackout_us);
std::pair<UpdateHistory, UpdateMeter> take_update_measurements();
NextSideOutcome refuse(int channel, int err, const std::string& why);

}  // namespace

bool receiver_fault(const std::string& f) {
    return f == "validate" || f == "crash-before-ready" || f == "hang-before-ready" ||
           f == "deserialize" || f == "no-upgrade-format";
}

NextSideOutcome run_next_side(const std::string& socket, const DaemonConfig& config,
                              const std::string& fault, bool validate_only, uint64_t started_ns) {
    UniqueFd channel;
    if (int err = connect_to_previous(socket, &channel)) {
        spdlog::critical("cannot reach the previous instance: {}", strerror(-err));
        return {Kind::Failed, nullptr};
    }

    // Receive and validate (steps 4 and 5). An upgrade's state is taken
    // over now, before READY: whatever this binary cannot take (a handler
    // it lacks, say) is a refusal, and the old instance serves on.
    Incoming in;
    std::string why;
    std::unique_ptr<Daemon> daemon;
    int err = receive_state(channel.get(), &in, &why);
    if (!err && in.kind == HandoverKind::Upgrade) err = take_over(&in, config, fault, &daemon, &why);
    else if (!err) err = validate(&in, fault, &why);
    if (err) return refuse(channel.get(), -err, why);

    // Ready, and the verdict (step 6).
    if (!report_ready(channel.get(), fault, &in.ready_ns)) return {Kind::Failed, nullptr};
    if (validate_only) return {Kind::Validated, nullptr};
    // With the old instance's keeper linked to us, the old instance's death
    // before its COMMIT is a crash that keeper recovers from: we must not
    // serve too. Without one, what we received is the only copy left.
    Kind verdict = await_verdict(channel.get(), config.keeper && in.keeper_link);
    if (verdict != Kind::Serve) return {verdict, nullptr};

    // A reboot deserializes after the commit, as the next kernel does.
    if (in.kind == HandoverKind::Reboot && !(daemon = deserialize(in, config, fault)))
        return {Kind::Failed, nullptr};  // the old instance rolls back
    // Our state recorded with the keeper, as a generation it keeps aside:
    // the old instance's stays the one a crash recovers from until ours is
    // committed, after SERVING (before it the old one may roll back, after
    // it the old one is only draining).
    if (config.keeper) {
        if (daemon->protect(std::move(in.keeper_link), true, take_crashes_env(), &why)) {
            spdlog::error("{}", why);
            return {Kind::Failed, nullptr};  // the old instance rolls back
        }
    }
    // Until the old instance reads this, it may roll back and kill us: no
    // client is accepted before it is sent.
    auto [history, meter] = take_update_measurements();
    const uint64_t serving_ns = monotonic_ns();
    if (int e = report_serving(channel.get(), (serving_ns - in.t0_ns) / 1000)) {
        spdlog::error("reporting that this instance serves failed: {}", strerror(-e));
        return {Kind::Failed, nullptr};
    }
    if (daemon->keeper()) daemon->commit_protection();
    // The old epoch's connections answer ESTALE from now on: not before, as
    // the old instance may still roll back and serve them until SERVING.
    if (daemon->server().conns().adopt_stale(std::move(in.stale)))
        spdlog::warn("some connections of the previous epoch could not be watched: closed");
    // The old instance's marks came with us at our start (before its gate
    // closed), the rest in HELLO; the phases it cannot see end here.
    meter.mark_at(Phase::Gate, in.t0_ns);
    if (in.freeze_ns) meter.mark_at(Phase::Freeze, in.freeze_ns);
    if (in.encode_ns) meter.mark_at(Phase::Encode, in.encode_ns);
    meter.mark_at(Phase::Spawn, started_ns);
    meter.mark_at(Phase::Transfer, in.received_ns);
    meter.mark_at(Phase::Validate, in.ready_ns);
    meter.mark_at(Phase::Commit, serving_ns);
    daemon->reboot().continue_update(std::move(history), std::move(meter));
    channel.reset();
    const Engine& engine = daemon->engine();
    daemon->notify_ready("serving epoch " + std::to_string(engine.liveupdate_num()));
    if (in.kind == HandoverKind::Upgrade)
        spdlog::info("serving epoch {} in {} after upgrade {} ({} connections, {} sessions)",
                     engine.liveupdate_num(), config.runtime_dir, daemon->reboot().upgrades(),
                     daemon->server().connections(), engine.outgoing().size() + engine.incoming().size());
    else
        spdlog::info("serving epoch {} in {} ({} incoming sessions)", engine.liveupdate_num(),
                     config.runtime_dir, engine.incoming().size());
    return {Kind::Serve, std::move(daemon)};
}

// ---- the steps ----

namespace {

NextSideOutcome refuse(int channel, int err, const std::string& why) {
    spdlog::error("refusing the handover: {}", why);
    send_on_channel(channel, channel_msg(ChannelType::Fail, err, why));
    return {Kind::Refused, nullptr};
}

// The blob: its size from the memfd itself, bounded. 0 or -errno.
int read_blob(int blob_fd, std::vector<uint8_t>* blob, std::string* why) {
    int err = read_whole_file(blob_fd, kMaxHandoverSize, blob);
    if (err == -EINVAL) *why = "handover blob missing or too large";
    else if (err) *why = "cannot read the handover blob";
    return err;
}

// Step 5: the blob and every fd checked before anything is walked.
// Fault "validate": refuse as if a check failed.
int validate(Incoming* in, const std::string& fault, std::string* why) {
    std::vector<uint8_t> blob;
    int err = read_blob(in->blob_fd.get(), &blob, why);
    if (!err) err = decode_handover(blob, &in->image, why);
    if (!err) {
        std::vector<int> raw;
        for (auto& fd : in->fds) raw.push_back(fd.get());
        err = check_handover_fds(in->image, raw, why);
    }
    for (size_t i = 0; !err && i < in->stale.size(); i++)
        if (!unix_seqpacket(in->stale[i].get()))
            err = -EINVAL, *why = "a client connection handed over is not a unix seqpacket socket";
    if (!err && fault == "validate") {
        err = -EINVAL;
        *why = "validation failed (injected fault)";
    }
    return err;
}

// An upgrade's step 5: the blob and every fd checked, then the whole state
// taken over by a daemon that does not serve yet (Daemon::from_upgrade).
// Fault "validate": refuse as if a check failed.
// Fault "no-upgrade-format": refuse as a build that reads only reboots would.
int take_over(Incoming* in, const DaemonConfig& config, const std::string& fault,
              std::unique_ptr<Daemon>* daemon, std::string* why) {
    if (fault == "no-upgrade-format")
        return *why = "this build reads only reboot handovers (injected fault)", -EPROTONOSUPPORT;
    std::vector<uint8_t> blob;
    UpgradeImage image;
    int err = read_blob(in->blob_fd.get(), &blob, why);
    if (!err) err = decode_upgrade(blob, &image, why);
    if (!err) {
        std::vector<int> raw;
        for (auto& fd : in->fds) raw.push_back(fd.get());
        err = check_upgrade_fds(image, raw, why);
    }
    if (!err && fault == "validate") {
        err = -EINVAL;
        *why = "validation failed (injected fault)";
    }
    if (err) return err;
    *daemon = Daemon::from_upgrade(config, std::move(in->control_listener),
                                   std::move(in->admin_listener), image, std::move(in->fds), why);
    return *daemon ? 0 : -EINVAL;
}

// A reboot's last step, after the commit: the incoming sessions into a new
// daemon. A failure here is the kernel's: the state is kept, unreachable.
std::unique_ptr<Daemon> deserialize(Incoming& in, const DaemonConfig& config, const std::string& fault) {
    std::string why;
    auto daemon = Daemon::from_handover(config, std::move(in.control_listener),
                                        std::move(in.admin_listener), &why);
    if (!daemon) {
        spdlog::critical("{}", why);
        return nullptr;
    }
    // test-only, or armed by an agent's test (--agent-faults): a handler this instance lacks
    if (fault == "deserialize" || agent_mode().fail_deserialize) {
        for (auto& sess : in.image.sessions)
            if (!sess.files.empty()) sess.files.back().compatible = "missing-v1";
    }
    daemon->deserialize(std::move(in.image), std::move(in.fds));
    return daemon;
}

// READY. A previous instance that is gone (EPIPE) handed everything over:
// the verdict reads its EOF. Any other failure leaves it waiting for a READY
// that will not come: false, so this one exits and it rolls back now.
// Faults "crash-before-ready", "hang-before-ready".
bool report_ready(int channel, const std::string& fault, uint64_t* ready_ns) {
    if (fault == "crash-before-ready") abort();
    if (fault == "hang-before-ready") pause();
    int sent = send_on_channel(channel, channel_msg(ChannelType::Ready));
    *ready_ns = monotonic_ns();
    if (sent && sent != -EPIPE && sent != -ECONNRESET) {
        spdlog::error("reporting ready failed: {}", strerror(-sent));
        return false;
    }
    return true;
}

// Step 6, this side: COMMIT, or EOF, which means the previous instance is
// gone: without a keeper this one holds the only copy of the state now, so
// it serves; with the old one's keeper linked to us (keeper_decides), that
// keeper holds it and recovers it, so this one must not serve. While
// the old one lives, it is the authority, and kills this one if it rolls
// back. Returns Serve, Aborted or Failed.
Kind await_verdict(int channel, bool keeper_decides) {
    Message m;
    ChannelMsg verdict;
    for (;;) {
        int r = recv_message(channel, sizeof(ChannelMsg), 0, &m);
        if (r == -EAGAIN || transient(r)) {
            pollfd p{channel, POLLIN, 0};
            if (transient(r)) usleep(1000);
            else poll(&p, 1, -1);
            continue;
        }
        if (r != 1) {
            // EOF, or the channel broke: the old one is gone.
            if (!keeper_decides) return Kind::Serve;
            spdlog::error("the previous instance died before its commit: its keeper recovers its state");
            return Kind::Failed;
        }
        if (!parse_channel_msg(m.bytes, &verdict)) break;
        if (verdict.type == ChannelType::Abort) return Kind::Aborted;
        if (verdict.type == ChannelType::Commit) return Kind::Serve;
        break;
    }
    spdlog::error("the previous instance sent no verdict but garbage");
    return Kind::Failed;
}

// Tells the old instance this one serves now. 0, or -errno if it may still
// roll back (then this instance must not serve).
int report_serving(int channel, uint64_t blackout_us) {
    ChannelMsg serving = channel_msg(ChannelType::Serving);
    serving.value = blackout_us;
    int r = send_on_channel(channel, serving);
    // Gone: it exited after its commit, or died; either way we are the only holder.
    return r == -EPIPE || r == -ECONNRESET ? 0 : r;
}

// What the previous instance measured of the update that started us, taken
// from the environment (and removed from it: it is for us alone). Anything
// malformed is dropped: the numbers start afresh, nothing else changes.
std::pair<UpdateHistory, UpdateMeter> take_update_measurements() {
    const char* env = getenv(kUpdateEnv);
    std::pair<UpdateHistory, UpdateMeter> out;
    if (env) {
        auto j = nlohmann::json::parse(env, nullptr, false);
        if (j.is_object() && j.contains("history") && j.contains("meter")) {
            auto h = UpdateHistory::from_json(j["history"]);
            auto m = UpdateMeter::from_json(j["meter"]);
            if (h && m) out = {std::move(*h), std::move(*m)};
        }
        if (!out.second.started())
            spdlog::warn("the previous instance's update measurements were malformed: dropped");
    }
    unsetenv(kUpdateEnv);
    return out;
}

}  // namespace

}  // namespace lu
