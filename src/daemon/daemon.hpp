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
class KeeperLink;
class TestHandler;
struct Conn;
struct CrashCount;
struct JournalState;
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
    // After a crash (crash_recovery.cpp): the journal's sessions, each
    // preserved again in a scratch engine and carried through a reboot
    // there, so they come back as after a reboot at the moment of the
    // crash: incoming, in the next epoch. `fds` as the journal numbers
    // them. A failure is the kernel's for a failed deserialize: the state
    // is kept but unreachable, control connections get EIO. Null, with
    // *why, only if the event loop cannot be set up.
    static std::unique_ptr<Daemon> from_crash(const DaemonConfig& config, UniqueFd control_listener,
                                              UniqueFd admin_listener, const JournalState& journal,
                                              std::vector<UniqueFd> fds, std::string* why);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // The handed-over state into the engine. A failure is the kernel's "Note
    // on error handling" case in luo_session.c: the state is kept but
    // unreachable, and control connections get EIO until a cold restart.
    // Returns 0 or -errno (already logged).
    int deserialize(HandoverImage image, std::vector<UniqueFd> fds);

    // Crash safety (keeper.hpp), in two steps around the moment this
    // instance may serve. protect(): the whole state recorded with the
    // keeper `link` leads to (a live update's, a recovery's), or with a new
    // keeper if it is empty, as a generation the keeper does not use yet.
    // 0, or -errno with *why. commit_protection(): the keeper's now; from
    // here a crash of this instance is recovered from it.
    // `crashes`: what the state came back from so far (the journal's count).
    // `live_update`: `link` is a live update's, to the keeper that holds the
    // previous instance's files (ours now): they are named, not sent again.
    int protect(UniqueFd link, bool live_update, CrashCount crashes, std::string* why);
    void commit_protection();
    KeeperLink* keeper() { return keeper_.get(); }
    // Tells a service manager this instance serves (READY=1, STATUS=). The
    // main process it names is the keeper, which outlives every instance
    // (so a crash of one is not the service's end); without a keeper, this
    // process.
    void notify_ready(const std::string& status);

    // Serves until stopped (a signal, or a live update that committed).
    // Returns the process exit code.
    int run();

    Engine& engine() { return engine_; }
    Server& server() { return *server_; }
    RebootSender& reboot() { return *reboot_; }

private:
    explicit Daemon(const DaemonConfig& config);
    bool start_serving(UniqueFd control_listener, UniqueFd admin_listener, std::string* why);
    // The keeper's link, watched: its end (the keeper died) starts another.
    void watch_keeper();
    void on_keeper_link(Conn& watch);

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
    std::unique_ptr<KeeperLink> keeper_;    // from protect(); null with --no-keeper
};

}  // namespace lu
