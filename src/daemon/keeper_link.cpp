// SPDX-License-Identifier: Apache-2.0
#include "keeper_link.hpp"

#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "agent_mode.hpp"
#include "bounded_read.hpp"
#include "handover_image.hpp"
#include "journal_format.hpp"
#include "keeper_protocol.hpp"
#include "socket_io.hpp"


namespace lu {

namespace {

// A keeper that takes longer than this to read, or to answer, is taken for
// hung. (Answering a SYNC after a generation of a million files takes it a
// second or two.)
constexpr int kSendTimeoutS = 5;
constexpr int kAnswerTimeoutS = 30;

void set_timeouts(int fd) {
    timeval tv{kSendTimeoutS, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

pid_t peer_pid(int fd) {
    ucred cred{};
    socklen_t len = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
}

}  // namespace

std::string crashes_env(CrashCount c) {
    return std::string(kCrashesEnv) + "=" + std::to_string(c.recovered) + " " +
           std::to_string(c.last_crash_ns);
}

// Malformed: counted afresh (logged), nothing else changes.
CrashCount take_crashes_env() {
    CrashCount c;
    const char* env = getenv(kCrashesEnv);
    if (env) {
        unsigned long long n = 0, ns = 0;
        char extra;
        if (sscanf(env, "%llu %llu%c", &n, &ns, &extra) == 2) c = {n, ns};
        else spdlog::warn("{} is malformed: the crash count starts afresh", kCrashesEnv);
    }
    unsetenv(kCrashesEnv);
    return c;
}

std::vector<std::string> same_config_args(const DaemonConfig& config, const std::string& exec,
                                          bool validate_only) {
    std::vector<std::string> args{exec, "--runtime-dir", config.runtime_dir};
    if (!config.group_name.empty()) args.insert(args.end(), {"--group", config.group_name});
    // Only when set: a next binary from before the option still starts.
    if (config.log_level != "info") args.insert(args.end(), {"--log-level", config.log_level});
    if (config.test_handler) args.push_back("--test-handler");
    if (!config.keeper) args.push_back("--no-keeper");
    add_next_instance_args(&args, validate_only);  // agent tests: agent_mode.hpp
    return args;
}

KeeperLink::KeeperLink(UniqueFd link, const DaemonConfig& config)
    : config_(config), link_(std::move(link)) {
    set_timeouts(link_.get());
    keeper_pid_ = peer_pid(link_.get());
}

KeeperLink::~KeeperLink() = default;

std::unique_ptr<KeeperLink> KeeperLink::spawn(const DaemonConfig& config, std::string* why) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return *why = std::string("cannot make the keeper's link: ") + strerror(errno), nullptr;
    UniqueFd ours(sv[0]), theirs(sv[1]);
    pid_t pid = 0;
    int err = spawn_linked({config.self_exe, "--keeper", "--log-level", config.log_level}, theirs.get(), &pid);
    if (err) return *why = std::string("cannot start the keeper: ") + strerror(err), nullptr;
    std::unique_ptr<KeeperLink> k(new KeeperLink(std::move(ours), config));
    k->keeper_pid_ = pid;
    return k;
}

std::unique_ptr<KeeperLink> KeeperLink::adopt(UniqueFd link, const DaemonConfig& config,
                                              bool holds_our_files) {
    std::unique_ptr<KeeperLink> k(new KeeperLink(std::move(link), config));
    k->holds_our_files_ = holds_our_files;
    return k;
}

int KeeperLink::send(std::span<const uint8_t> bytes, std::span<const int> fds) {
    if (lost_) return -EPIPE;
    int err = send_message(link_.get(), bytes, fds);
    if (err) lost(err);
    return err;
}

void KeeperLink::lost(int err) {
    if (lost_) return;
    lost_ = true;
    spdlog::error("the keeper does not take the journal ({}): state is not protected until a new "
                  "keeper holds it",
                  strerror(-err));
    // The keeper is ended, so that its link's end of file starts the
    // replacement (the daemon watches the link). Never our end closed or
    // shut first: the keeper would take that for our crash. Only by the
    // instance it keeps the state of: a live update's next instance that
    // fails to record its state just fails the update.
    if (committed_ && keeper_pid_ > 0) kill(keeper_pid_, SIGKILL);
}

// ---- the journal ----

void KeeperLink::session_kept(Session& s) {
    s.log_id = next_id_++;
    files_of_[s.log_id];
    send(keeper_msg(KeeperOp::Put, 0,
                    journal_session_record(s.log_id, s.direction() == Direction::Incoming, s.name())));
}

// An incoming file's preserved fd is the one the previous instance handed
// over; an outgoing one's is the file itself.
static int fd_of(const Session& s, const LuoFile& f) {
    return s.direction() == Direction::Incoming && f.preserved ? f.preserved.get() : f.file.get();
}

// Its identity is the engine's slot where it has one (read at preserve or
// handed over), else read now. True if its fd (fd_of) must go with the record.
bool KeeperLink::add_file_record(std::vector<uint8_t>* out, const Session& s, const LuoFile& f, bool held) {
    const int fd = fd_of(s, f);
    std::vector<uint8_t> rec = journal_file_record(f.log_id, s.log_id, f.token);
    out->insert(out->end(), rec.begin(), rec.end());
    if (version_ < 2) return true;
    FdSlot slot = f.slot;
    struct stat st;
    if (!slot.type && fstat(fd, &st) == 0) slot = fd_slot_of(st);
    const int fl = fcntl(fd, F_GETFL);
    KeeperFileRef ref;
    if (slot.type && fl >= 0) {
        ref.dev = slot.dev;
        ref.ino = slot.ino;
        ref.accmode = static_cast<uint32_t>(fl & O_ACCMODE);
        ref.held = held;
    }
    const auto* p = reinterpret_cast<const uint8_t*>(&ref);
    out->insert(out->end(), p, p + sizeof ref);
    return !ref.held;
}

void KeeperLink::file_kept(Session& s, LuoFile& f) {
    if (!s.log_id) return;
    f.log_id = next_id_++;
    files_of_[s.log_id].push_back(f.log_id);
    int fd = fd_of(s, f);
    std::vector<uint8_t> rec;
    add_file_record(&rec, s, f, false);
    send(keeper_msg(version_ >= 2 ? KeeperOp::PutKeyed : KeeperOp::Put, 0, rec), std::span<const int>(&fd, 1));
}

void KeeperLink::session_forgotten(Session& s) {
    std::vector<uint64_t> ids{s.log_id};
    auto it = files_of_.find(s.log_id);
    if (it != files_of_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        files_of_.erase(it);
    }
    send(keeper_msg(KeeperOp::Drop, 0,
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ids.data()),
                                             ids.size() * sizeof(uint64_t))));
}

// What a crash must bring back: outgoing sessions, and incoming ones not
// finished (a hand-off's view is its source, already counted; a finished
// session keeps no file and was retrieved).
static bool kept_by_crash(const Session& s) {
    if (s.gone() || s.handoff_source()) return false;
    return s.direction() == Direction::Outgoing || !s.retrieved() || !s.files().empty();
}

int KeeperLink::record_all(Engine& engine, int control, int admin) {
    files_of_.clear();
    int err = send(keeper_msg(KeeperOp::Begin));
    const std::string& dir = config_.runtime_dir;
    int listeners[2] = {control, admin};
    if (!err)
        err = send(keeper_msg(KeeperOp::Listeners, 0,
                              std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(dir.data()), dir.size())),
                   listeners);
    std::vector<uint8_t> argv;
    for (const std::string& a : same_config_args(config_, config_.self_exe, false)) {
        argv.insert(argv.end(), a.begin(), a.end());
        argv.push_back(0);
    }
    const char recover[] = "--recover";
    argv.insert(argv.end(), recover, recover + sizeof recover);
    if (!err) err = send(keeper_msg(KeeperOp::Restart, 0, argv));
    if (!err)
        err = send(keeper_msg(KeeperOp::Put, 0,
                              journal_epoch_record(engine.liveupdate_num(), crashes_.recovered,
                                                   crashes_.last_crash_ns)));
    // What the keeper takes: it may be older than we are.
    uint64_t version = 0;
    if (!err) err = send(keeper_msg(KeeperOp::Sync));
    if (!err) err = await_answer(KeeperOp::Synced, nullptr, &version);
    version_ = std::max<uint64_t>(version, 1);
    const bool held = version_ >= 2 && (holds_our_files_ || committed_);
    const KeeperOp put = version_ >= 2 ? KeeperOp::PutKeyed : KeeperOp::Put;
    // Records in batches, each with the fds of its file records: a few
    // messages for thousands of files (and no fd for a file it holds).
    std::vector<uint8_t> batch;
    std::vector<int> fds;
    auto flush = [&] {
        if (!err && !batch.empty()) err = send(keeper_msg(put, 0, batch), fds);
        batch.clear();
        fds.clear();
    };
    auto room_for = [&](size_t bytes, bool fd) {
        if (batch.size() + bytes + sizeof(KeeperMsg) > kMaxKeeperMessage ||
            (fd && fds.size() == kMaxFdsPerMessage))
            flush();
    };
    auto record = [&](Session& s) {
        if (!kept_by_crash(s)) {
            s.log_id = 0;
            return;
        }
        s.log_id = next_id_++;
        std::vector<uint64_t>& ids = files_of_[s.log_id];
        std::vector<uint8_t> rec = journal_session_record(s.log_id, s.direction() == Direction::Incoming, s.name());
        room_for(rec.size(), false);
        batch.insert(batch.end(), rec.begin(), rec.end());
        for (const auto& f : s.files()) {
            f->log_id = next_id_++;
            ids.push_back(f->log_id);
            room_for(kMaxJournalRecord + sizeof(KeeperFileRef), true);
            if (add_file_record(&batch, s, *f, held)) fds.push_back(fd_of(s, *f));
        }
    };
    // The engine's lists are const to callers; the log ids are ours to set.
    for (const Session& s : engine.outgoing()) record(const_cast<Session&>(s));
    for (const Session& s : engine.incoming()) record(const_cast<Session&>(s));
    flush();
    // Taken, not only sent: the keeper may refuse what it cannot hold (its
    // fd table), and an instance must not serve on a generation it refused.
    if (!err) err = send(keeper_msg(KeeperOp::Sync));
    if (!err) err = await_answer(KeeperOp::Synced, nullptr);
    return err;
}

// The keeper's answer to what we just sent, within the bound.
int KeeperLink::await_answer(KeeperOp op, UniqueFd* fd, uint64_t* id) {
    Message m;
    KeeperMsg km;
    int r = recv_message_within(link_.get(), sizeof km, 1, kAnswerTimeoutS * 1000, &m);
    if (r == -ETIMEDOUT) return lost(-ETIMEDOUT), -ETIMEDOUT;
    if (r != 1 || m.truncated || !parse_keeper_msg(m.bytes, &km) || km.op != op ||
        m.fds.size() != (fd ? 1u : 0u))
        return lost(-EPROTO), -EPROTO;
    if (fd) *fd = std::move(m.fds[0]);
    if (id) *id = km.id;
    return 0;
}

int KeeperLink::commit() {
    int err = send(keeper_msg(KeeperOp::Commit, static_cast<uint64_t>(getpid())));
    if (!err) committed_ = true;
    return err;
}

int KeeperLink::link_for_next(UniqueFd* out) {
    linked_next_ = false;
    if (int err = send(keeper_msg(KeeperOp::Link))) return err;
    if (int err = await_answer(KeeperOp::Link, out)) return err;
    linked_next_ = true;
    return 0;
}

void KeeperLink::promote() {
    if (linked_next_) send(keeper_msg(KeeperOp::Promote));
}

void KeeperLink::stop() {
    if (!lost_) send(keeper_msg(KeeperOp::Stop));
}

int KeeperLink::replace(Engine& engine, int control, int admin) {
    if (keeper_pid_ > 0) waitpid(keeper_pid_, nullptr, WNOHANG);  // ours if we started it
    std::string why;
    std::unique_ptr<KeeperLink> fresh = spawn(config_, &why);
    if (!fresh) {
        spdlog::error("{}: the state is not protected against a crash", why);
        return -EAGAIN;
    }
    link_ = std::move(fresh->link_);
    keeper_pid_ = fresh->keeper_pid_;
    lost_ = false;
    committed_ = false;
    linked_next_ = false;
    holds_our_files_ = false;  // a new keeper holds nothing yet
    int err = record_all(engine, control, admin);
    if (!err) err = commit();
    if (err) spdlog::error("the new keeper does not take the state: {}", strerror(-err));
    else spdlog::warn("a new keeper (pid {}) holds the state", keeper_pid_);
    return err;
}

}  // namespace lu
