// SPDX-License-Identifier: Apache-2.0
#include "daemon.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cassert>
#include <cstring>
#include <iterator>

#include "agent_mode.hpp"
#include "handlers/memfd_handler.hpp"
#include "handlers/socket_handler.hpp"
#include "reboot_sender.hpp"
#include "runtime_dir.hpp"
#include "server.hpp"
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

Daemon::~Daemon() = default;

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

int Daemon::run() { return server_->run(); }

}  // namespace lu
