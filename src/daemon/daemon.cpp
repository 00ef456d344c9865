// SPDX-License-Identifier: Apache-2.0
#include "daemon.hpp"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <array>
#include <cassert>
#include <cstring>
#include <iterator>

#include "agent_mode.hpp"
#include "journal_format.hpp"
#include "keeper_link.hpp"
#include "handlers/memfd_handler.hpp"
#include "handlers/socket_handler.hpp"
#include "reboot_sender.hpp"
#include "runtime_dir.hpp"
#include "server.hpp"
#include "socket_io.hpp"
#include "socket_activation.hpp"
#include "upgrade_format.hpp"
#ifdef LU_FAULT_INJECTION
#include "testing/test_flb.hpp"
#include "testing/test_handler.hpp"
#endif
#include "wire.h"

namespace lu {

Daemon::Daemon(const DaemonConfig& config)
    : config_(config), engine_(config.limits, *agent_mode().profile) {
    engine_.register_file_handler(std::make_unique<MemfdHandler>());
    // The daemon's own sockets are never preservable (their session would hold itself).
    if (!agent_mode().strict)  // --strict: the kernel has no socket handler
        engine_.register_file_handler(std::make_unique<SocketHandler>(
            [this](int fd) { return server_ && server_->is_own_object(fd); }));
#ifdef LU_FAULT_INJECTION
    if (config_.test_handler) {
        test_flb_ = std::make_unique<TestFlb>();
        auto h = std::make_unique<TestHandler>();
        test_handler_ = h.get();
        engine_.register_file_handler(std::move(h));
        engine_.register_flb(test_handler_, test_flb_.get());
    }
#endif
}

Daemon::~Daemon() { engine_.set_state_log(nullptr); }

std::unique_ptr<Daemon> Daemon::cold_start(const DaemonConfig& config, std::string* why) {
    UniqueFd dir = open_runtime_dir(config.runtime_dir, config.group, why);
    // systemd's sockets, if it made them; else our own, in our directory.
    ActivatedListeners activated = take_activated_listeners();
    if (!activated.error.empty()) {
        *why = activated.error;
        return nullptr;
    }
    UniqueFd control = std::move(activated.control), admin = std::move(activated.admin);
    if (!control || !admin) {
        if (!dir) return nullptr;
        const mode_t mode = config.group ? 0660 : 0600;
        // Bound by this relative name: it is how the compat library knows a
        // control connection (wire.h).
        control = listen_in(dir.get(), LU_WIRE_CONTROL_PEER_NAME, mode, config.group, why);
        if (!control) return nullptr;
        admin = listen_in(dir.get(), "admin", mode, config.group, why);
        if (!admin) return nullptr;
    }
    std::unique_ptr<Daemon> d(new Daemon(config));
    if (!d->start_serving(std::move(control), std::move(admin), why)) return nullptr;
    return d;
}

std::unique_ptr<Daemon> Daemon::from_handover(const DaemonConfig& config, UniqueFd control_listener,
                                              UniqueFd admin_listener, std::string* why) {
    std::unique_ptr<Daemon> d(new Daemon(config));
    if (!d->start_serving(std::move(control_listener), std::move(admin_listener), why)) return nullptr;
    return d;
}

std::unique_ptr<Daemon> Daemon::from_upgrade(const DaemonConfig& config, UniqueFd control_listener,
                                             UniqueFd admin_listener, const UpgradeImage& image,
                                             std::vector<UniqueFd> fds, std::string* why) {
    assert(fds.size() == upgrade_fd_count(image));
    std::unique_ptr<Daemon> d(new Daemon(config));
    if (!d->start_serving(std::move(control_listener), std::move(admin_listener), why)) return nullptr;
    // The fds, split as upgrade_image.hpp orders them.
    auto take = [&fds, at = size_t{0}](size_t n) mutable {
        std::vector<UniqueFd> part(std::make_move_iterator(fds.begin() + at),
                                   std::make_move_iterator(fds.begin() + at + n));
        at += n;
        return part;
    };
    size_t held = 0;
    for (const ConnImage& c : image.conns) held += c.pending_fd;
    std::vector<UniqueFd> slots = take(image.outgoing.fd_slots.size() + image.incoming.fd_slots.size());
    std::vector<UniqueFd> conns = take(image.conns.size());
    std::vector<UniqueFd> pending = take(held);
    std::vector<UniqueFd> leaked = take(image.leaked_fds);
    std::vector<Session*> outgoing, incoming;
    if (int err = d->engine_.adopt(image, std::move(slots), std::move(leaked), &outgoing, &incoming)) {
        *why = std::string("cannot take the state over: ") + strerror(-err);
        return nullptr;
    }
    if (d->server_->conns().adopt(image, std::move(conns), std::move(pending), outgoing, incoming, why))
        return nullptr;
    d->reboot_->set_upgrades(image.upgrades);
    return d;
}

std::unique_ptr<Daemon> Daemon::from_crash(const DaemonConfig& config, UniqueFd control_listener,
                                           UniqueFd admin_listener, const JournalState& journal,
                                           std::vector<UniqueFd> fds, std::string* why) {
    std::unique_ptr<Daemon> d(new Daemon(config));
    if (!d->start_serving(std::move(control_listener), std::move(admin_listener), why)) return nullptr;
    // 1. Each session and file preserved again, in the journal's order, in
    //    an engine that never serves: the handlers check every fd again.
    // 2. A reboot there: frozen, and its handover image taken.
    // 3. That image deserialized here, one epoch on.
    // The scratch engine gets copies: the originals stay ours until the
    // end, to be kept (unreachable) if a step fails.
    Daemon scratch(config);
    Engine& e = scratch.engine_;
    int err = 0;
    std::string failed;
    for (const JournalSession& js : journal.sessions) {
        std::array<uint8_t, kSessionNameLength> raw{};
        memcpy(raw.data(), js.name.data(), std::min(js.name.size(), raw.size() - 1));
        Session* s = nullptr;
        err = e.create_session(raw, &s);
        for (size_t i = 0; !err && i < js.files.size(); i++) {
            const JournalFile& f = js.files[i];
            UniqueFd copy(fcntl(fds[f.fd_index].get(), F_DUPFD_CLOEXEC, 0));
            err = copy ? e.preserve_fd(s, f.token, std::move(copy)) : -errno;
            if (err) failed = fmt::format("file {:#x} of session \"{}\"", f.token, js.name);
        }
        if (err) {
            if (failed.empty()) failed = fmt::format("session \"{}\"", js.name);
            break;
        }
    }
    if (!err && (err = e.reboot_freeze())) failed = "the freeze";
    if (err) {
        spdlog::error("recovering from the crash failed at {}: {}; the state is kept but "
                      "unreachable, control connections get EIO until a cold restart",
                      failed, strerror(-err));
        d->engine_.refuse_incoming(err, std::move(fds));
        return d;
    }
    Handover h = e.handover();
    h.image.liveupdate_num = journal.liveupdate_num + 1;
    std::vector<UniqueFd> slots;
    slots.reserve(h.fds.size());
    for (int fd : h.fds) slots.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    for (const UniqueFd& fd : slots)
        if (!fd) {
            d->engine_.refuse_incoming(-EMFILE, std::move(fds));
            return d;
        }
    d->deserialize(std::move(h.image), std::move(slots));
    return d;
}

bool Daemon::start_serving(UniqueFd control_listener, UniqueFd admin_listener, std::string* why) {
    server_ = Server::create(engine_, Access{geteuid(), config_.group}, std::move(control_listener),
                             std::move(admin_listener), why);
    if (!server_) return false;
    reboot_ = std::make_unique<RebootSender>(*server_, engine_, config_, test_handler_);
    server_->set_reboot(reboot_.get());
    return true;
}

int Daemon::deserialize(HandoverImage image, std::vector<UniqueFd> fds) {
    int err = engine_.deserialize(std::move(image), std::move(fds));
    if (err)
        spdlog::error("deserializing the handover failed: {}; the state is kept but "
                      "unreachable, control connections get EIO until a cold restart",
                      strerror(-err));
    return err;
}

int Daemon::protect(UniqueFd link, bool live_update, CrashCount crashes, std::string* why) {
    if (link && !unix_seqpacket(link.get())) return *why = "the keeper's link is not a unix seqpacket socket", -EINVAL;
    // A keeper we start ourselves may die before it holds anything (it was
    // killed): start another, a few times. One we were given is not ours
    // to replace: failing is the safe answer (a live update rolls back).
    const bool ours = !link;
    int err = 0;
    for (int attempt = 0; attempt < (ours ? 3 : 1); attempt++) {
        keeper_ = link ? KeeperLink::adopt(std::move(link), config_, live_update) : KeeperLink::spawn(config_, why);
        if (!keeper_) return -EAGAIN;
        keeper_->set_crashes(crashes);
        err = keeper_->record_all(engine_, server_->control_listener(), server_->admin_listener());
        if (!err) break;
        *why = std::string("recording the state with the keeper failed: ") + strerror(-err);
        keeper_.reset();
    }
    if (err) return err;
    engine_.set_state_log(keeper_.get());
    reboot_->set_keeper(keeper_.get());
    server_->set_keeper(keeper_.get());
    return 0;
}

void Daemon::commit_protection() {
    assert(keeper_);
    if (int err = keeper_->commit())
        spdlog::error("the keeper did not take the state ({}): a crash now loses it", strerror(-err));
    watch_keeper();
}

void Daemon::watch_keeper() {
    UniqueFd watched(fcntl(keeper_->fd(), F_DUPFD_CLOEXEC, 0));
    if (!watched || !server_->add_watch(std::move(watched), [this](Conn& c) { on_keeper_link(c); }))
        spdlog::error("cannot watch the keeper's link: its death would go unnoticed");
}

// The keeper sends nothing unasked: what is readable is its end of file
// (or a late answer, dropped). A new keeper takes everything over.
void Daemon::on_keeper_link(Conn& watch) {
    for (;;) {
        Message m;
        int r = recv_message(watch.fd.get(), 64, 4, &m);
        if (r == -EAGAIN || r == 1) {
            if (r == -EAGAIN) return;
            continue;
        }
        break;
    }
    server_->remove(watch);
    spdlog::error("the keeper (pid {}) is gone: starting another", keeper_->keeper_pid());
    if (keeper_->replace(engine_, server_->control_listener(), server_->admin_listener()) == 0)
        watch_keeper();
}

void Daemon::notify_ready(const std::string& status) {
    const pid_t main = keeper_ && keeper_->keeper_pid() > 0 ? keeper_->keeper_pid() : getpid();
    sd_notifyf(0, "MAINPID=%d\nREADY=1\nSTATUS=%s", static_cast<int>(main), status.c_str());
}

int Daemon::run() {
    int code = server_->run();
    // A stop, not a hand-over: the keeper drops the state, as a shutdown
    // ends the kernel's. After a hand-over, a keeper the next instance was
    // not linked to is ours alone: left running it would take our exit for
    // a crash and start a second instance on the same listeners.
    if (keeper_ && (!reboot_->handed_over() || !keeper_->linked_next())) keeper_->stop();
    return code;
}

}  // namespace lu
