// SPDX-License-Identifier: Apache-2.0
#include "reboot_sender.hpp"

#include "agent_mode.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <nlohmann/json.hpp>

#include "engine.hpp"
#ifdef LU_FAULT_INJECTION
#include "testing/test_handler.hpp"
#endif
#include "handover_channel.hpp"
#include "handover_format.hpp"
#include "keeper_link.hpp"
#include "next_instance_report.hpp"
#include "upgrade_format.hpp"
#include "reboot_receiver.hpp"
#include "server.hpp"

namespace lu {

namespace {

using nlohmann::json;

// The faults of this side, each tested at its step below.
bool sender_fault(const std::string& f) {
    if (f.rfind("freeze:", 0) == 0)
        return f.size() > 7 && f.find_first_not_of("0123456789", 7) == std::string::npos;
    return f == "write-handover" || f == "corrupt-handover" || f == "truncate-handover";
}

bool fault_compiled_in() {
#ifdef LU_FAULT_INJECTION
    return true;
#else
    return false;
#endif
}

std::string errno_text(const std::string& what, int err) { return what + ": " + strerror(err); }

// The answer to `liveupdatectl reboot` when nothing moved.
std::string still_serving(int err, const std::string& why) {
    return json{{"ok", false}, {"errno", err}, {"error", why}, {"still_serving", true}}.dump();
}

}  // namespace

// ---- start: steps 1 to 4 of docs/live-update.md ----

void RebootSender::start(AdminRef admin, RebootOptions options) {
    std::string why;
    int err = check(options, &why);
    if (err) {
        spdlog::error("live update refused, still serving: {}", why);
        server_.admin_reply(admin, still_serving(-err, why));
        return;
    }
    opt_ = std::move(options);
    if (opt_.exec.empty()) opt_.exec = config_.self_exe;
    admin_ = admin;
    meter_.start(engine_.liveupdate_num(), upgrade() ? "upgrade" : "reboot");
    last_error_.clear();
    // The next instance loads while this one serves: the gate closes only
    // once it has connected (on_next_connecting).
    stage_ = Stage::Spawning;
    if ((err = spawn_next(&why))) return fail(-err, why);
}

// The next instance connected: steps 1 to 4 (docs/live-update.md).
void RebootSender::on_next_connecting() {
    assert(stage_ == Stage::Spawning);
    UniqueFd channel;
    int err = accept_next(listener_watch_, pgid_, &channel, &next_pid_);
    if (err == -EAGAIN) return;  // not ours, or gone: still waiting
    if (err) return fail(-err, errno_text("waiting for the next instance failed", -err));
    meter_.mark(Phase::Spawn);
    end_spawn_watches();
    server_.loop().cancel_timer();
    // A hand-off may have begun while it loaded; the state must be still.
    if (auto h = engine_.handoffs_in_progress(); !h.empty())
        return fail(EBUSY, "a hand-off began while the next instance started: " + h);

    std::string why;
    if ((err = close_gate_and_freeze(&why))) return fail(-err, why);  // the freeze undid itself
    stage_ = Stage::AwaitingReady;
    Payload p;
    UniqueFd blob_fd;
    uint64_t blob_size = 0;
    if ((err = build_payload(&p, &why)) ||
        (err = write_handover(std::move(p.blob), &blob_fd, &blob_size, &why)))
        return fail(-err, why);
    err = hand_over(channel.get(), blob_fd.get(), blob_size, p, &why);
    // A next instance that exits at once (a loader error) closes the channel
    // while we still send: report how it ended, as for a hangup later on.
    if (err == -EPIPE || err == -ECONNRESET) return on_hangup();
    if (err) return fail(-err, why);
    meter_.mark(Phase::Transfer);

    int chan = channel.get();
    if (!server_.add_channel(
            std::move(channel), [this](Conn&, Message& m) { on_message(m.bytes); },
            [this](Conn&) { on_hangup(); }))
        return fail(ENOMEM, "cannot watch the channel to the next instance");
    channel_ = chan;
    server_.loop().set_timer(opt_.timeout_ms, [this] {
        fail(ETIMEDOUT, "the next instance did not report ready within the timeout");
    });
    spdlog::info("live update ({}): handed {} sessions, {} fds to pid {}{}",
                 upgrade() ? "upgrade" : "reboot", p.sessions, p.fds.size(), next_pid_,
                 opt_.dry_run ? " (dry run)" : "");
}

// The process started ended: before it connected, unless what it started
// (a wrapper's child, in its process group) connected in the same turn.
void RebootSender::on_spawned_exit() {
    on_next_connecting();
    if (stage_ != Stage::Spawning) return;
    bool reaped = false;
    std::string how = wait_and_describe_exit(child_, 1000, &reaped);
    if (reaped) child_ = 0;
    fail(EPIPE, "the next instance exited before it was ready" + how);
}

void RebootSender::end_spawn_watches() {
    for (int* w : {&listener_watch_, &exit_watch_}) {
        if (*w >= 0)
            if (Conn* c = server_.find(*w)) server_.remove(*c);
        *w = -1;
    }
}

int RebootSender::check(const RebootOptions& o, std::string* why) const {
    if (in_progress()) return *why = "a live update is already in progress", -EBUSY;
    if (auto h = engine_.handoffs_in_progress(); !h.empty()) return *why = "a hand-off is in progress: " + h, -EBUSY;
    if (!o.fault.empty() && !fault_compiled_in())
        return *why = "fault injection is compiled out of this build", -EOPNOTSUPP;
    if (!o.fault.empty() && !sender_fault(o.fault) && !receiver_fault(o.fault))
        return *why = "unknown fault \"" + o.fault + "\"", -EINVAL;
    // Before anything moves: "not executable" is the operator's to fix.
    ExecCheck c = check_executable(o.exec.empty() ? config_.self_exe : o.exec);
    if (c.err) return *why = c.message, -c.err;
    return 0;
}

// Steps 1 and 2: the gate, then the freeze (luo_session_serialize); an
// upgrade freezes nothing: the sessions stay as they are, only their
// requests wait.
// Fault "freeze:K": the K-th freeze call of the test handler fails.
int RebootSender::close_gate_and_freeze(std::string* why) {
    // Sessions closed before the gate are released before it, whatever
    // order their hangups were reported in. Then the gate: client requests
    // and hangups wait in their sockets from here.
    server_.release_closed_sessions();
    t0_ns_ = monotonic_ns();
    meter_.mark_at(Phase::Gate, t0_ns_);
    server_.loop().pause_clients();
    if (upgrade()) {
        meter_.mark(Phase::Freeze);
        return 0;
    }
#ifdef LU_FAULT_INJECTION
    if (test_handler_ && opt_.fault.rfind("freeze:", 0) == 0)
        test_handler_->fail_freeze_at = test_handler_->freeze_calls + std::atoi(opt_.fault.c_str() + 7);
#endif
    int err = engine_.reboot_freeze();
#ifdef LU_FAULT_INJECTION
    if (test_handler_) test_handler_->fail_freeze_at = -1;
#endif
    if (!err) {
        meter_.mark(Phase::Freeze);
        return 0;
    }
    server_.loop().resume_clients();
    *why = std::string("freeze failed: ") + strerror(-err);
    return err;
}

// Step 3a: what the next instance gets. A reboot: the frozen outgoing
// sessions (docs/handover-format.md). An upgrade: the engine's whole state,
// the client connections and the replies they have not read
// (upgrade_format.hpp), the fds in the order upgrade_image.hpp gives.
int RebootSender::build_payload(Payload* p, std::string* why) {
    try {
        if (!upgrade()) {
            Handover h = engine_.handover();
            p->blob = encode_handover(h.image);
            p->fds = std::move(h.fds);
            p->sessions = h.image.sessions.size();
            // The clients' connections go too, to be answered ESTALE there:
            // an end of file must only ever mean a daemon that died.
            std::vector<int> clients = server_.conns().client_fds();
            p->fds.insert(p->fds.end(), clients.begin(), clients.end());
            p->nr_stale = clients.size();
            return 0;
        }
        Engine::UpgradeState st = engine_.upgrade_state();
        st.image.upgrades = upgrades_ + 1;
        std::vector<int> conn_fds, pending_fds;
        server_.conns().snapshot(&st.image, &conn_fds, &pending_fds);
        p->blob = encode_upgrade(st.image);
        p->fds = std::move(st.slot_fds);
        for (auto* part : {&conn_fds, &pending_fds, &st.leaked_fds})
            p->fds.insert(p->fds.end(), part->begin(), part->end());
        p->sessions = st.image.outgoing.sessions.size() + st.image.incoming.sessions.size();
        return 0;
    } catch (const std::exception& e) {
        return *why = std::string("the handover cannot be written: ") + e.what(), -E2BIG;
    }
}

// Step 3b: the blob in a sealed memfd, so the next instance reads exactly
// what was written.
// Faults: "write-handover", "corrupt-handover", "truncate-handover".
int RebootSender::write_handover(std::vector<uint8_t> blob, UniqueFd* blob_fd, uint64_t* size,
                                 std::string* why) {
    if (opt_.fault == "corrupt-handover" && blob.size() > 100) blob[blob.size() / 2] ^= 0x5a;
    if (opt_.fault == "truncate-handover") blob.resize(blob.size() / 2);
    blob_fd->reset(memfd_create("liveupdate-handover", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    bool written = *blob_fd && opt_.fault != "write-handover";
    for (size_t off = 0; written && off < blob.size();) {
        ssize_t n = write(blob_fd->get(), blob.data() + off, blob.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) written = false;
        else off += static_cast<size_t>(n);
    }
    if (!written) return *why = "writing the handover failed", -EIO;
    if (fcntl(blob_fd->get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        int err = errno;
        return *why = "sealing the handover failed", -err;
    }
    *size = blob.size();
    meter_.mark(Phase::Encode);
    return 0;
}

// Step 0: the next instance, told to behave as this one and where to
// connect for the state (handover_channel.hpp), in a process group of its
// own so that a rollback ends whatever it started too (a wrapper script's
// children). posix_spawn (vfork + exec): the cost does not grow with this
// instance's memory. Started before the gate closes: it loads while this
// one serves, and the loop waits for its connection (on_next_connecting),
// its exit (on_spawned_exit) or the timeout.
int RebootSender::spawn_next(std::string* why) {
    UniqueFd listener;
    std::string name;
    if (int err = listen_for_next(&listener, &name))
        return *why = errno_text("cannot listen for the next instance", -err), err;
    std::vector<std::string> args = same_config_args(config_, opt_.exec, opt_.dry_run);
    args.insert(args.end(), {"--handover-socket", name});
    if (opt_.dry_run) args.push_back("--validate-only");
    if (!opt_.fault.empty()) args.insert(args.end(), {"--fault", opt_.fault});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    // Its stderr is a pipe until its main() runs: a loader error lands there.
    StderrCapture capture = capture_next_stderr();
    if (capture.write_end) {
        posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, kStderrFd);
        posix_spawn_file_actions_adddup2(&fa, capture.write_end.get(), STDERR_FILENO);
    }
    next_stderr_ = std::move(capture.read_end);
    // Our stop signals are blocked (read through a signalfd): the next
    // instance, perhaps another binary, starts with none blocked.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    pid_t pid = 0;
    // The history and this update's clock so far go with it (validated
    // there like anything else from another process).
    std::string measured = std::string(kUpdateEnv) + "=" +
                           json{{"history", history_.to_json()}, {"meter", meter_.to_json()}}.dump();
    capture.envp.insert(capture.envp.end() - 1, measured.data());
    std::string crashes = crashes_env(keeper_ ? keeper_->crashes() : CrashCount{});
    capture.envp.insert(capture.envp.end() - 1, crashes.data());
    int err = posix_spawn(&pid, opt_.exec.c_str(), &fa, &attr, argv.data(), capture.envp.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    capture.write_end.reset();  // the pipe ends when the next instance takes its stderr back
    if (err) return *why = errno_text("cannot start " + opt_.exec, err), -err;
    child_ = pid;
    pgid_ = pid;
    next_pid_ = pid;
    child_pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    UniqueFd exit_fd(child_pidfd_ ? fcntl(child_pidfd_.get(), F_DUPFD_CLOEXEC, 0) : -1);
    const int listening = listener.get();
    if (!server_.add_watch(std::move(listener), [this](Conn&) { on_next_connecting(); }))
        return *why = "cannot watch for the next instance's connection", -ENOMEM;
    listener_watch_ = listening;
    const int exiting = exit_fd.get();
    if (exit_fd && server_.add_watch(std::move(exit_fd), [this](Conn&) { on_spawned_exit(); }))
        exit_watch_ = exiting;
    server_.loop().set_timer(opt_.timeout_ms, [this] {
        fail(ETIMEDOUT, "the next instance did not connect within the timeout");
    });
    return 0;
}

// Step 4b: everything over the channel. It blocks (bounded by the timeout):
// the next instance reads as fast as it can, and nothing else is served now
// but the admin socket, which can wait that long.
int RebootSender::hand_over(int channel, int blob_fd, uint64_t blob_size, const Payload& p,
                            std::string* why) {
    timeval tv{static_cast<time_t>(opt_.timeout_ms / 1000),
               static_cast<suseconds_t>((opt_.timeout_ms % 1000) * 1000)};
    setsockopt(channel, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    OutgoingState state;
    state.kind = opt_.kind;
    state.blob_fd = blob_fd;
    state.control_listener = server_.control_listener();
    state.admin_listener = server_.admin_listener();
    state.fds = &p.fds;
    state.nr_stale = p.nr_stale;
    state.t0_ns = t0_ns_;
    state.freeze_ns = meter_.end_of(Phase::Freeze);
    state.encode_ns = meter_.end_of(Phase::Encode);
    state.blob_size = blob_size;
    // The next instance's own link to our keeper: it records its state
    // there before it serves. Without one (no keeper, or ours failed and
    // was ended) it starts its own keeper.
    UniqueFd next_link;
    if (keeper_ && keeper_->protecting() && keeper_->link_for_next(&next_link))
        spdlog::warn("live update: no keeper link for the next instance; it starts its own keeper");
    state.keeper_link = next_link ? next_link.get() : -1;
    int err = send_state(channel, state);
    if (err) *why = std::string("handing over the state failed: ") + strerror(-err);
    return err;
}

// ---- the next instance's answers: steps 5 and 6 ----

void RebootSender::on_message(const std::vector<uint8_t>& bytes) {
    if (stage_ == Stage::Served) return;  // it serves: nothing it says can undo that
    ChannelMsg m;
    if (!parse_channel_msg(bytes, &m)) return fail(EPROTO, "the next instance sent a malformed message");
    if (stage_ == Stage::AwaitingReady && m.type == ChannelType::Fail)
        return fail(m.err ? m.err : EINVAL, std::string("the next instance refused the handover: ") + m.text);
    if (stage_ == Stage::AwaitingReady && m.type == ChannelType::Ready) return on_ready();
    if (stage_ == Stage::Committed && m.type == ChannelType::Serving) return on_serving(m.value);
}

// Validated. A dry run unwinds as after any failure but reports success;
// otherwise commit: the next instance may serve. This one stays the
// authority until it reads SERVING, which the next sends before it accepts
// a client: if the next dies or hangs before that, it is killed and this
// instance rolls back, as before ready.
void RebootSender::on_ready() {
    assert(stage_ == Stage::AwaitingReady);
    meter_.mark(Phase::Validate);
    server_.loop().cancel_timer();
    if (opt_.dry_run) {
        unwind();
        history_.add(meter_.record("dry_run"));
        spdlog::info("live update: dry run validated by pid {}, still serving; {}", next_pid_,
                     log_fields(meter_.record("dry_run"), next_pid_));
        next_stderr_.reset();
        server_.admin_reply(std::exchange(admin_, {}),
                            json{{"ok", true}, {"kind", meter_.record("dry_run").kind},
                                 {"dry_run", true}, {"pid", getpid()},
                                 {"epoch", engine_.liveupdate_num()},
                                 {"dropped", upgrade() ? json::array() : json(engine_.unretrieved_incoming())}}.dump());
        return;
    }
    if (int e = send_on_channel(channel_, channel_msg(ChannelType::Commit)))
        return fail(-e, std::string("telling the next instance to serve failed: ") + strerror(-e));
    stage_ = Stage::Committed;
    server_.loop().pause_admin();
    server_.loop().set_timer(opt_.timeout_ms, [this] { on_commit_timeout(); });
}

void RebootSender::on_serving(uint64_t blackout_us) {
    assert(stage_ == Stage::Committed);
    server_.loop().cancel_timer();
    stage_ = Stage::Served;
    // No rollback from here: the next instance's generation may become the
    // one the keeper keeps (it waits for this, or for our end).
    if (keeper_) keeper_->promote();
    meter_.mark(Phase::Commit);
    UpdateRecord done = meter_.record("committed");
    done.blackout_us = blackout_us;  // as the next instance measured it
    const uint64_t epoch = engine_.liveupdate_num() + (upgrade() ? 0 : 1);
    spdlog::info("live update: pid {} serves epoch {}; {}", next_pid_, epoch,
                 log_fields(done, next_pid_));
    next_stderr_.reset();
    // We are still the service's main process: name our successor before
    // we exit, so that a supervisor never sees the main process gone.
    // With a keeper, the keeper is the main process (Daemon::notify_ready).
    if (!keeper_ || !keeper_->protecting()) sd_notifyf(0, "MAINPID=%d", static_cast<int>(next_pid_));
    json reply{{"ok", true},           {"kind", done.kind}, {"dry_run", false},
               {"pid", next_pid_},     {"epoch", epoch},    {"blackout_us", blackout_us}};
    // An upgrade keeps every session; a reboot drops the incoming ones
    // nobody retrieved, and says which.
    if (upgrade()) reply["upgrades"] = upgrades_ + 1;
    else reply["dropped"] = engine_.unretrieved_incoming();
    server_.admin_reply(admin_, reply.dump());
    server_.drain_admin_and_stop(0, 2000);
}

void RebootSender::on_hangup() {
    channel_ = -1;
    if (stage_ == Stage::Served) return;  // the next instance serves and closed its end: done
    // How it ended is the first thing an operator asks.
    bool reaped = false;
    std::string how = wait_and_describe_exit(child_, 1000, &reaped);
    if (reaped) child_ = 0;
    fail(EPIPE, (stage_ == Stage::Committed ? "the next instance exited before it served"
                                            : "the next instance exited before it was ready") + how);
}

// SERVING may be in the channel already, behind the timer in this turn of
// the loop: read it before giving up on the next instance.
void RebootSender::on_commit_timeout() {
    if (channel_ >= 0)
        if (auto* c = server_.find(channel_)) server_.poll_channel(*c);
    if (stage_ == Stage::Committed) fail(ETIMEDOUT, "the next instance did not serve within the timeout");
}

// ---- rollback ----

void RebootSender::cancel(const std::string& why) {
    if (in_progress() && stage_ != Stage::Served) fail(ECANCELED, why);
}

// Any failure before SERVING: unwind and keep serving.
void RebootSender::fail(int err, const std::string& what) {
    unwind();
    // The next instance is gone: all it wrote before its main() ran is in
    // the pipe, e.g. the loader's reason for not starting it.
    std::string said = relay_next_stderr(next_stderr_.get());
    next_stderr_.reset();
    last_error_ = said.empty() ? what : what + ": " + said;
    history_.add(meter_.record("rolled_back", last_error_));
    spdlog::error("live update failed, rolled back, still serving: {}; {}", last_error_,
                  log_fields(meter_.record("rolled_back"), next_pid_));
    server_.admin_reply(std::exchange(admin_, {}), still_serving(err, last_error_));
}

// Undoes start() in reverse: the next instance, its channel, the freeze, the
// gate. The queued requests then run in order.
void RebootSender::unwind() {
    server_.loop().cancel_timer();
    end_spawn_watches();
    // The next instance may have sent its COMMIT to our keeper after its
    // SERVING, which we did not read (we failed first). The keeper holds
    // that COMMIT until our PROMOTE, which only a SERVING read sends, or
    // our end: killing the next instance ends its link, and its generation
    // with it, so ours stays the kept one.
    reap_child(true);
    if (channel_ >= 0) {
        if (auto* c = server_.find(channel_)) server_.remove(*c);
        channel_ = -1;
    }
    engine_.reboot_unfreeze();
    server_.loop().resume_admin();
    server_.loop().resume_clients();
    stage_ = Stage::Idle;
}

// With kill_it, its whole process group: what a wrapper script started
// goes with it.
void RebootSender::reap_child(bool kill_it) {
    child_pidfd_.reset();
    if (kill_it && pgid_ > 0) kill(-pgid_, SIGKILL);
    pgid_ = 0;
    if (child_ <= 0) return;
    if (kill_it) kill(child_, SIGKILL);
    int status;
    while (waitpid(child_, &status, 0) < 0 && errno == EINTR) {
    }
    child_ = 0;
}


// ---- the measurements, in the instance that serves after an update ----

void RebootSender::continue_update(UpdateHistory history, UpdateMeter meter) {
    history_ = std::move(history);
    meter_ = std::move(meter);
    history_.add(meter_.record("committed"));
    serving_ns_ = meter_.end_of(Phase::Commit);
    served_epoch_ = meter_.epoch();
}

void RebootSender::note_request_served() {
    if (!serving_ns_) return;
    const uint64_t us = (monotonic_ns() - serving_ns_) / 1000;
    serving_ns_ = 0;
    // The update that made this instance: other updates (a dry run, one
    // that failed) may have been recorded after it meanwhile.
    auto& recs = history_.records();
    for (auto it = recs.rbegin(); it != recs.rend(); ++it)
        if (it->outcome == "committed" && it->epoch == served_epoch_) {
            history_.set_first_request(static_cast<size_t>(recs.rend() - it - 1), us);
            break;
        }
}

}  // namespace lu
