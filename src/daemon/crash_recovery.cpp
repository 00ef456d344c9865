// SPDX-License-Identifier: Apache-2.0
#include "crash_recovery.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "bounded_read.hpp"
#include "daemon.hpp"
#include "journal_format.hpp"
#include "keeper_link.hpp"
#include "keeper_protocol.hpp"
#include "socket_io.hpp"

namespace lu {

namespace {

constexpr int kTimeoutMs = 30000;  // the keeper sends at once: this only bounds a broken one

// What the keeper sent.
struct Kept {
    UniqueFd journal, control, admin;
    std::vector<UniqueFd> fds;
    uint64_t crash_ns = 0;
};

int recv_bounded(int link, size_t max_fds, Message* m) {
    return recv_message_within(link, sizeof(KeeperMsg), max_fds, kTimeoutMs, m);
}

// RECOVER [journal, control, admin], then FDS batches up to its count;
// everything checked for shape before it is used.
int receive(int link, const DaemonConfig& config, Kept* k, std::string* why) {
    Message m;
    KeeperMsg head;
    if (recv_bounded(link, 3, &m) != 1 || m.truncated || !parse_keeper_msg(m.bytes, &head) ||
        head.op != KeeperOp::Recover || m.fds.size() != 3)
        return *why = "no valid RECOVER from the keeper", -EPROTO;
    if (head.id > config.limits.files)
        return *why = "the keeper sends more files than this instance may hold", -ENOSPC;
    k->journal = std::move(m.fds[0]);
    k->control = std::move(m.fds[1]);
    k->admin = std::move(m.fds[2]);
    k->crash_ns = head.when;
    if (!unix_seqpacket(k->control.get()) || !unix_seqpacket(k->admin.get()))
        return *why = "the listeners from the keeper are not unix seqpacket sockets", -EINVAL;
    k->fds.reserve(head.id);
    while (k->fds.size() < head.id) {
        KeeperMsg batch;
        if (recv_bounded(link, kMaxFdsPerMessage, &m) != 1 || m.truncated ||
            !parse_keeper_msg(m.bytes, &batch) || batch.op != KeeperOp::Fds || m.fds.empty() ||
            k->fds.size() + m.fds.size() > head.id)
            return *why = "a malformed fd batch from the keeper", -EPROTO;
        for (auto& fd : m.fds) k->fds.push_back(std::move(fd));
    }
    return 0;
}

// The journal's bytes: its size from the memfd itself, bounded.
int read_journal(int fd, std::vector<uint8_t>* bytes, std::string* why) {
    int err = read_whole_file(fd, kMaxJournalSize, bytes);
    if (err == -EINVAL) *why = "the journal is missing or too large";
    else if (err) *why = "cannot read the journal";
    return err;
}

uint64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

std::unique_ptr<Daemon> recover_from_keeper(const DaemonConfig& config) {
    struct stat st;
    if (fstat(kLinkFd, &st) < 0 || !S_ISSOCK(st.st_mode) || !unix_seqpacket(kLinkFd)) {
        spdlog::critical("--recover: no keeper link on fd {}", kLinkFd);
        return nullptr;
    }
    UniqueFd link(kLinkFd);
    fcntl(kLinkFd, F_SETFD, FD_CLOEXEC);
    Kept k;
    std::string why;
    if (receive(link.get(), config, &k, &why)) {
        spdlog::critical("recovering from a crash: {}", why);
        return nullptr;
    }
    std::vector<uint8_t> bytes;
    JournalState journal;
    int err = read_journal(k.journal.get(), &bytes, &why);
    if (!err) err = parse_journal(bytes, k.fds.size(), &journal, &why);
    std::unique_ptr<Daemon> daemon;
    if (err) {
        // Refused: nothing of it is walked. The kernel's policy for a
        // handover it cannot read: kept, unreachable, EIO until a cold start.
        spdlog::critical("the crash journal is refused: {}; the state is kept but unreachable, "
                         "control connections get EIO until a cold restart",
                         why);
        daemon = Daemon::from_handover(config, std::move(k.control), std::move(k.admin), &why);
        if (daemon) daemon->engine().refuse_incoming(err, std::move(k.fds));
    } else {
        if (journal.torn_bytes)
            spdlog::warn("the crash journal ended in a torn record: {} bytes after the last whole "
                         "one dropped",
                         journal.torn_bytes);
        // What the journal does not keep (a session released as the crash
        // came, files shadowed) closes here.
        for (size_t i : journal.unused_fds) k.fds[i].reset();
        daemon = Daemon::from_crash(config, std::move(k.control), std::move(k.admin), journal,
                                    std::move(k.fds), &why);
    }
    if (!daemon) {
        spdlog::critical("{}", why);
        return nullptr;
    }
    CrashCount crashes{journal.crashes + 1, k.crash_ns ? k.crash_ns : realtime_ns()};
    if (daemon->protect(std::move(link), false, crashes, &why)) {
        spdlog::critical("{}", why);
        return nullptr;  // the keeper still holds everything: it tries again
    }
    daemon->commit_protection();
    const Engine& e = daemon->engine();
    daemon->notify_ready("serving epoch " + std::to_string(e.liveupdate_num()) + " after a crash");
    spdlog::warn("serving epoch {} in {} after a crash ({} recovered so far): {} incoming sessions",
                 e.liveupdate_num(), config.runtime_dir, crashes.recovered, e.incoming().size());
    return daemon;
}

}  // namespace lu
