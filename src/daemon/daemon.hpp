// SPDX-License-Identifier: Apache-2.0
// The composition root: one daemon instance, its engine, its file handlers,
// its server and its live update, wired once here. Two ways to start: cold
// (binds the listeners in the runtime directory; epoch 0, no sessions), from
// a reboot's handover, or from an upgrade's (the listeners and the state come
// from the previous instance: reboot_receiver.cpp). liveupdated's main and the dispatch fuzzer
// both build their daemon through these factories.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "daemon_config.hpp"
#include "engine.hpp"
#include "unique_fd.hpp"

namespace lu {

class Server;
class RebootSender;
class TestHandler;
class TestFlb;

class Daemon {
public:
    // Null, with *why, if the runtime directory, the listeners or the event
    // loop cannot be set up.
    static std::unique_ptr<Daemon> cold_start(const DaemonConfig& config, std::string* why);
    // Over listeners handed over by the previous instance; the state follows
    // through deserialize(). Null, with *why, if the event loop cannot be set up.
    static std::unique_ptr<Daemon> from_handover(const DaemonConfig& config, UniqueFd control_listener,
                                                 UniqueFd admin_listener, std::string* why);
    // An upgrade: the previous instance's whole state and its client
    // connections, checked (decode_upgrade, check_upgrade_fds) but not yet
    // served; `fds` in upgrade_image.hpp's order. Null, with *why, if this
    // binary cannot take it: the previous instance then serves on.
    static std::unique_ptr<Daemon> from_upgrade(const DaemonConfig& config, UniqueFd control_listener,
                                                UniqueFd admin_listener, const UpgradeImage& image,
                                                std::vector<UniqueFd> fds, std::string* why);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // The handed-over state into the engine. A failure is the kernel's "Note
    // on error handling" case in luo_session.c: the state is kept but
    // unreachable, and control connections get EIO until a cold restart.
    // Returns 0 or -errno (already logged).
    int deserialize(HandoverImage image, std::vector<UniqueFd> fds);

    // Serves until stopped (a signal, or a live update that committed).
    // Returns the process exit code.
    int run();

    Engine& engine() { return engine_; }
    Server& server() { return *server_; }
    RebootSender& reboot() { return *reboot_; }

private:
    explicit Daemon(const DaemonConfig& config);
    bool start_serving(UniqueFd control_listener, UniqueFd admin_listener, std::string* why);

    // Set at construction, for the instance's lifetime; declared in the
    // order they depend on each other (destroyed in reverse).
    DaemonConfig config_;
#ifdef LU_FAULT_INJECTION
    std::unique_ptr<TestFlb> test_flb_;   // --test-handler only; outlives the engine
#endif
    Engine engine_;
    TestHandler* test_handler_ = nullptr;  // owned by engine_; --test-handler only
    std::unique_ptr<Server> server_;       // from start_serving()
    std::unique_ptr<RebootSender> reboot_;  // from start_serving()
};

}  // namespace lu
