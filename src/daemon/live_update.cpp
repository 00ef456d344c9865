#include "live_update.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "agent_mode.hpp"
#include "engine.hpp"
#ifdef LU_FAULT_INJECTION
#include "testing/test_handler.hpp"
#endif
#include "handover_format.hpp"
#include "next_instance_report.hpp"
#include "server.hpp"
#include "socket_io.hpp"

extern char** environ;

namespace lu {

namespace {

std::span<const uint8_t> bytes_of(const ChannelMsg& m) {
    return {reinterpret_cast<const uint8_t*>(&m), sizeof m};
}

bool parse(const std::vector<uint8_t>& bytes, ChannelMsg* m) {
    if (bytes.size() != sizeof *m) return false;
    memcpy(m, bytes.data(), sizeof *m);
    m->text[sizeof m->text - 1] = 0;
    return m->magic == ChannelMsg{}.magic;
}

ChannelMsg fail_msg(int err, const std::string& why) {
    ChannelMsg m;
    m.type = ChannelType::Fail;
    m.err = err;
    snprintf(m.text, sizeof m.text, "%s", why.c_str());
    return m;
}

bool known_fault(const std::string& f) {
    static const char* const kSteps[] = {"write-handover",     "corrupt-handover",
                                         "truncate-handover",  "validate",
                                         "crash-before-ready", "hang-before-ready",
                                         "deserialize"};
    if (f.rfind("freeze:", 0) == 0)
        return f.size() > 7 && f.find_first_not_of("0123456789", 7) == std::string::npos;
    for (const char* s : kSteps)
        if (f == s) return true;
    return false;
}

bool fault_compiled_in() {
#ifdef LU_FAULT_INJECTION
    return true;
#else
    return false;
#endif
}

}  // namespace

// Failing a live update for want of a buffer would be a needless rollback.
int send_on_channel(int channel, const ChannelMsg& m) { return send_message_retrying(channel, bytes_of(m)); }

uint64_t monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void LiveUpdate::start(AdminRef admin, RebootOptions options) {
    using nlohmann::json;
    auto refuse = [&](int err, const std::string& msg) {
        spdlog::error("live update refused, still serving: {}", msg);
        server_.admin_reply(admin, json{{"ok", false}, {"errno", err}, {"error", msg},
                                           {"still_serving", true}}.dump());
    };
    if (in_progress()) return refuse(EBUSY, "a live update is already in progress");
    if (!options.fault.empty() && !fault_compiled_in())
        return refuse(EOPNOTSUPP, "fault injection is compiled out of this build");
    if (!options.fault.empty() && !known_fault(options.fault))
        return refuse(EINVAL, "unknown fault \"" + options.fault + "\"");
    std::string exe = options.exec.empty() ? config_.self_exe : options.exec;
    if (ExecCheck c = check_executable(exe); c.err) return refuse(c.err, c.message);

    opt_ = std::move(options);
    opt_.exec = exe;
    admin_ = admin;
    meter_.start(server_.engine().liveupdate_num());
    ready_ = committed_ = served_ = false;
    last_error_.clear();

    // Sessions closed before the gate are released before it, whatever
    // order their hangups were reported in. Then the gate: client requests
    // and hangups wait in their sockets from here.
    server_.release_closed_sessions();
    t0_ns_ = monotonic_ns();
    meter_.mark_at(Phase::Gate, t0_ns_);
    server_.pause_clients();
    Engine& engine = server_.engine();
#ifdef LU_FAULT_INJECTION
    if (test_handler_ && opt_.fault.rfind("freeze:", 0) == 0)
        test_handler_->fail_freeze_at = test_handler_->freeze_calls + std::atoi(opt_.fault.c_str() + 7);
#endif
    int err = engine.reboot_freeze();
#ifdef LU_FAULT_INJECTION
    if (test_handler_) test_handler_->fail_freeze_at = -1;
#endif
    if (err) {
        server_.resume_clients();
        last_error_ = std::string("freeze failed: ") + strerror(-err);
        history_.add(meter_.record("rolled_back", last_error_));
        return refuse(-err, last_error_);
    }
    meter_.mark(Phase::Freeze);

    // The handover blob, in a sealed memfd.
    Handover h = engine.handover();
    std::vector<uint8_t> blob;
    try {
        blob = encode_handover(h.image);
    } catch (const std::exception& e) {
        return fail(E2BIG, std::string("the handover cannot be written: ") + e.what());
    }
    if (opt_.fault == "corrupt-handover" && blob.size() > 100) blob[blob.size() / 2] ^= 0x5a;
    if (opt_.fault == "truncate-handover") blob.resize(blob.size() / 2);
    UniqueFd blob_fd(memfd_create("liveupdate-handover", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    bool written = blob_fd && opt_.fault != "write-handover";
    for (size_t off = 0; written && off < blob.size();) {
        ssize_t n = write(blob_fd.get(), blob.data() + off, blob.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) written = false;
        else off += static_cast<size_t>(n);
    }
    if (!written) return fail(EIO, "writing the handover failed");
    // Sealed: the next instance reads exactly what we wrote.
    if (fcntl(blob_fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        return fail(errno, "sealing the handover failed");
    meter_.mark(Phase::Encode);

    // The next instance, with its end of the channel as fd 3.
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return fail(errno, "socketpair failed");
    UniqueFd ours(sv[0]), theirs(fcntl(sv[1], F_DUPFD_CLOEXEC, 10));
    close(sv[1]);
    if (!theirs) return fail(errno, "no fd for the channel");
    std::vector<std::string> args{opt_.exec, "--handover-fd", "3", "--runtime-dir",
                                  config_.runtime_dir};
    if (!config_.group.empty()) args.insert(args.end(), {"--group", config_.group});
    if (config_.test_handler) args.push_back("--test-handler");
    add_next_instance_args(&args, opt_.dry_run);  // agent tests: agent_mode.hpp
    if (opt_.dry_run) args.push_back("--validate-only");
    if (!opt_.fault.empty()) args.insert(args.end(), {"--fault", opt_.fault});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, theirs.get(), 3);
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
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    // posix_spawn (vfork + exec): the cost does not grow with our memory.
    // The history and this update's clock so far go with it (validated
    // there like anything else from another process).
    std::string measured = std::string(kUpdateEnv) + "=" +
                           nlohmann::json{{"history", history_.to_json()}, {"meter", meter_.to_json()}}.dump();
    capture.envp.insert(capture.envp.end() - 1, measured.data());
    err = posix_spawn(&pid, opt_.exec.c_str(), &fa, &attr, argv.data(), capture.envp.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    theirs.reset();
    capture.write_end.reset();  // the pipe ends when the next instance takes its stderr back
    if (err) return fail(err, "cannot start " + opt_.exec + ": " + strerror(err));
    child_ = pid;
    meter_.mark(Phase::Spawn);

    // Send everything. The channel blocks (bounded by the timeout): the
    // next instance reads as fast as it can, and nothing else is served now
    // but the admin socket, which can wait that long.
    timeval tv{static_cast<time_t>(opt_.timeout_ms / 1000),
               static_cast<suseconds_t>((opt_.timeout_ms % 1000) * 1000)};
    setsockopt(ours.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::vector<int> all{blob_fd.get(), server_.control_listener(), server_.admin_listener()};
    ChannelMsg hello;
    hello.type = ChannelType::Hello;
    hello.nr_fds = static_cast<uint32_t>(h.fds.size());
    hello.t0_ns = t0_ns_;
    hello.value = blob.size();
    err = send_message_retrying(ours.get(), bytes_of(hello), all);
    for (size_t i = 0; !err && i < h.fds.size(); i += kMaxFdsPerMessage) {
        ChannelMsg m;
        m.type = ChannelType::Fds;
        size_t n = std::min(kMaxFdsPerMessage, h.fds.size() - i);
        m.nr_fds = static_cast<uint32_t>(n);
        err = send_message_retrying(ours.get(), bytes_of(m), std::span<const int>(h.fds.data() + i, n));
    }
    // A next instance that exits at once (a loader error) closes the channel
    // while we still send: report how it ended, as for a hangup later on.
    if (err == -EPIPE || err == -ECONNRESET) return on_hangup();
    if (err) return fail(-err, std::string("handing over the state failed: ") + strerror(-err));

    meter_.mark(Phase::Transfer);
    int chan = ours.get();
    if (!server_.add_channel(
            std::move(ours), [this](Server::Conn&, Message& m) { on_message(m.bytes); },
            [this](Server::Conn&) { on_hangup(); }))
        return fail(ENOMEM, "cannot watch the channel to the next instance");
    channel_ = chan;
    server_.set_timer(opt_.timeout_ms, [this] {
        fail(ETIMEDOUT, "the next instance did not report ready within the timeout");
    });
    spdlog::info("live update: handed {} sessions, {} fds to pid {}{}", h.image.sessions.size(),
                 h.fds.size(), pid, opt_.dry_run ? " (dry run)" : "");
}

void LiveUpdate::on_message(const std::vector<uint8_t>& bytes) {
    using nlohmann::json;
    ChannelMsg m;
    if (served_) return;  // it serves: nothing it says can undo that
    if (!parse(bytes, &m)) return fail(EPROTO, "the next instance sent a malformed message");
    if (!ready_ && m.type == ChannelType::Fail)
        return fail(m.err ? m.err : EINVAL, std::string("the next instance refused the handover: ") + m.text);
    if (!ready_ && m.type == ChannelType::Ready) {
        ready_ = true;
        meter_.mark(Phase::Validate);
        server_.cancel_timer();
        if (opt_.dry_run) {
            // Validated; nothing moves. Unwind as after any failure, but report success.
            unwind();
            history_.add(meter_.record("dry_run"));
            spdlog::info("live update: dry run validated by pid {}, still serving; {}", child_,
                         log_fields(meter_.record("dry_run"), child_));
            next_stderr_.reset();
            server_.admin_reply(admin_, json{{"ok", true}, {"dry_run", true},
                                                {"pid", getpid()},
                                                {"epoch", server_.engine().liveupdate_num()}}
                                               .dump());
            admin_ = {};
            return;
        }
        // Commit: the next instance may serve. This one stays the authority
        // until it reads SERVING, which the next sends before it accepts a
        // client: if the next dies or hangs before that, it is killed and
        // this instance rolls back, as before ready.
        ChannelMsg commit;
        commit.type = ChannelType::Commit;
        if (int e = send_on_channel(channel_, commit))
            return fail(-e, std::string("telling the next instance to serve failed: ") + strerror(-e));
        committed_ = true;
        server_.pause_admin();
        server_.set_timer(opt_.timeout_ms, [this] { on_commit_timeout(); });
        return;
    }
    if (committed_ && m.type == ChannelType::Serving) {
        server_.cancel_timer();
        meter_.mark(Phase::Commit);
        UpdateRecord done = meter_.record("committed");
        done.blackout_us = m.value;  // as the next instance measured it
        spdlog::info("live update: pid {} serves epoch {}; {}", child_,
                     server_.engine().liveupdate_num() + 1, log_fields(done, child_));
        served_ = true;
        next_stderr_.reset();
        // We are still the service's main process: name our successor before
        // we exit, so that a supervisor never sees the main process gone.
        sd_notifyf(0, "MAINPID=%d", static_cast<int>(child_));
        server_.admin_reply(admin_, json{{"ok", true},
                                            {"dry_run", false},
                                            {"pid", child_},
                                            {"epoch", server_.engine().liveupdate_num() + 1},
                                            {"blackout_us", m.value}}
                                           .dump());
        server_.drain_admin_and_stop(0, 2000);
    }
}

void LiveUpdate::on_hangup() {
    channel_ = -1;
    if (served_) return;  // the next instance serves and closed its end: done
    // How it ended is the first thing an operator asks.
    bool reaped = false;
    std::string how = wait_and_describe_exit(child_, 1000, &reaped);
    if (reaped) child_ = 0;
    fail(EPIPE, (committed_ ? "the next instance exited before it served"
                            : "the next instance exited before it was ready") + how);
}

// SERVING may be in the channel already, behind the timer in this turn of
// the loop: read it before giving up on the next instance.
void LiveUpdate::on_commit_timeout() {
    if (channel_ >= 0)
        if (auto* c = server_.find(channel_)) server_.poll_channel(*c);
    if (!served_ && in_progress())
        fail(ETIMEDOUT, "the next instance did not serve within the timeout");
}

void LiveUpdate::reap_child(bool kill_it) {
    if (child_ <= 0) return;
    if (kill_it) kill(child_, SIGKILL);
    int status;
    while (waitpid(child_, &status, 0) < 0 && errno == EINTR) {
    }
    child_ = 0;
}

// Undoes start() in reverse: the next instance, its channel, the freeze, the
// gate. The queued requests then run in order.
void LiveUpdate::unwind() {
    server_.cancel_timer();
    reap_child(true);
    if (channel_ >= 0) {
        if (auto* c = server_.find(channel_)) server_.remove(*c);
        channel_ = -1;
    }
    server_.engine().reboot_unfreeze();
    server_.resume_admin();
    server_.resume_clients();
}

// Any failure before SERVING: unwind and keep serving.
void LiveUpdate::fail(int err, const std::string& what) {
    using nlohmann::json;
    unwind();
    // The next instance is gone: all it wrote before its main() ran is in
    // the pipe, e.g. the loader's reason for not starting it.
    std::string said = relay_next_stderr(next_stderr_.get());
    next_stderr_.reset();
    last_error_ = said.empty() ? what : what + ": " + said;
    history_.add(meter_.record("rolled_back", last_error_));
    spdlog::error("live update failed, rolled back, still serving: {}; {}", last_error_,
                  log_fields(meter_.record("rolled_back"), child_));
    server_.admin_reply(admin_, json{{"ok", false}, {"errno", err}, {"error", last_error_},
                                        {"still_serving", true}}
                                       .dump());
    admin_ = {};
}

// ---- the next instance ----

namespace {

int refuse(int channel, int err, const std::string& why) {
    spdlog::error("refusing the handover: {}", why);
    ChannelMsg m = fail_msg(err, why);
    send_on_channel(channel, m);
    return 1;
}

}  // namespace

int receive_handover(int channel, const std::string& fault, bool validate_only, Incoming* out) {
    timeval tv{30, 0};
    setsockopt(channel, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fcntl(channel, F_SETFL, fcntl(channel, F_GETFL) & ~O_NONBLOCK);
    auto recv_blocking = [&](Message* m, size_t max_fds) {
        int r;
        for (;;) {
            pollfd p{channel, POLLIN, 0};
            int n = poll(&p, 1, 30000);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return -ETIMEDOUT;
            r = recv_message(channel, sizeof(ChannelMsg), max_fds, m);
            if (transient(r)) usleep(1000);  // retried while the old instance waits
            else if (r != -EAGAIN) return r;
        }
    };
    Message m;
    ChannelMsg hello;
    if (recv_blocking(&m, 3) != 1 || m.truncated || !parse(m.bytes, &hello) ||
        hello.type != ChannelType::Hello || m.fds.size() != 3)
        return refuse(channel, EPROTO, "no valid hello from the previous instance");
    UniqueFd blob_fd = std::move(m.fds[0]);
    out->control_listener = std::move(m.fds[1]);
    out->admin_listener = std::move(m.fds[2]);
    out->t0_ns = hello.t0_ns;
    // Bound what we accept before allocating for it.
    constexpr uint64_t kMaxFds = 16u << 20;
    if (hello.nr_fds > kMaxFds) return refuse(channel, EINVAL, "fd count out of range");
    out->fds.reserve(hello.nr_fds);
    while (out->fds.size() < hello.nr_fds) {
        ChannelMsg batch;
        if (recv_blocking(&m, kMaxFdsPerMessage) != 1 || m.truncated || !parse(m.bytes, &batch) ||
            batch.type != ChannelType::Fds || batch.nr_fds != m.fds.size() ||
            out->fds.size() + m.fds.size() > hello.nr_fds)
            return refuse(channel, EPROTO, "malformed fd batch");
        for (auto& fd : m.fds) out->fds.push_back(std::move(fd));
    }
    out->received_ns = monotonic_ns();

    // The blob: size from the memfd itself, bounded.
    struct stat st;
    if (fstat(blob_fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        static_cast<uint64_t>(st.st_size) > kMaxHandoverSize)
        return refuse(channel, EINVAL, "handover blob missing or too large");
    std::vector<uint8_t> blob(static_cast<size_t>(st.st_size));
    for (size_t off = 0; off < blob.size();) {
        ssize_t n = pread(blob_fd.get(), blob.data() + off, blob.size() - off, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return refuse(channel, EIO, "cannot read the handover blob");
        off += static_cast<size_t>(n);
    }

    std::string why;
    int err = decode_handover(blob, &out->image, &why);
    if (!err) {
        std::vector<int> raw;
        for (auto& fd : out->fds) raw.push_back(fd.get());
        err = check_handover_fds(out->image, raw, &why);
    }
    if (!err && fault == "validate") {
        err = -EINVAL;
        why = "validation failed (injected fault)";
    }
    if (err) return refuse(channel, -err, why);
    if (fault == "crash-before-ready") abort();
    if (fault == "hang-before-ready") pause();

    ChannelMsg ready;
    ready.type = ChannelType::Ready;
    int sent = send_on_channel(channel, ready);
    out->ready_ns = monotonic_ns();
    // A previous instance that is gone (EPIPE) handed everything over: the
    // verdict below reads its EOF. Any other failure leaves it waiting for
    // a READY that will not come: exit, so it rolls back now.
    if (sent && sent != -EPIPE && sent != -ECONNRESET) {
        spdlog::error("reporting ready failed: {}", strerror(-sent));
        return 1;
    }
    if (validate_only) return 0;

    // The verdict: COMMIT, or EOF, which means the previous instance is
    // gone: we hold the only copy of the state now, so we serve it. While
    // it lives, it is the authority, and kills us if it rolls back.
    ChannelMsg verdict;
    tv = {0, 0};
    setsockopt(channel, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        int r = recv_message(channel, sizeof(ChannelMsg), 0, &m);
        if (r == -EAGAIN || transient(r)) {
            pollfd p{channel, POLLIN, 0};
            if (transient(r)) usleep(1000);
            else poll(&p, 1, -1);
            continue;
        }
        if (r == 1 && parse(m.bytes, &verdict) && verdict.type == ChannelType::Abort) return 0;
        if (r == 1 && !(parse(m.bytes, &verdict) && verdict.type == ChannelType::Commit)) {
            spdlog::error("the previous instance sent no verdict but garbage");
            return 1;
        }
        return -1;
    }
}

int report_serving(int channel, uint64_t blackout_us) {
    ChannelMsg serving;
    serving.type = ChannelType::Serving;
    serving.value = blackout_us;
    int r = send_on_channel(channel, serving);
    // Gone: it exited after its commit, or died; either way we are the only holder.
    return r == -EPIPE || r == -ECONNRESET ? 0 : r;
}

void LiveUpdate::continue_update(UpdateHistory history, UpdateMeter meter) {
    history_ = std::move(history);
    meter_ = std::move(meter);
    history_.add(meter_.record("committed"));
    serving_ns_ = meter_.end_of(Phase::Commit);
    served_epoch_ = server_.engine().liveupdate_num() - 1;
}

void LiveUpdate::note_request_served() {
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
