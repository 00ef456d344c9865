// SPDX-License-Identifier: Apache-2.0
// The old side of `liveupdatectl reboot`: the running instance starts the
// next instance and serves on while it loads; once it connects, closes the
// gate, freezes, writes the handover, hands it the state over the channel
// (handover_channel.hpp), waits for READY, commits, waits for SERVING, then
// exits. Any failure before SERVING unwinds: kill
// the next instance, unfreeze in reverse, reopen the gate, and the queued
// requests run in order. docs/live-update.md has the sequence and rollback;
// reboot_receiver.cpp is the other side.
//
// Who serves: this instance, until it reads SERVING; a next instance that
// dies or hangs before that is killed and this one rolls back. The next
// instance serves after COMMIT, or when this one is gone (its EOF: the state
// it holds is then the only copy). So at no point do both serve.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "admin.hpp"
#include "daemon_config.hpp"
#include "handover_channel.hpp"
#include "unique_fd.hpp"
#include "update_history.hpp"

namespace lu {

class Server;
class Engine;
class TestHandler;
struct Handover;

struct RebootOptions {
    // A reboot (every session moves to the next epoch, clients see ESTALE)
    // or an upgrade (everything moves, clients keep their fds and notice
    // nothing): the same steps, another payload.
    HandoverKind kind = HandoverKind::Reboot;
    std::string exec;  // empty: this daemon's own binary
    uint64_t timeout_ms = 30000;
    bool dry_run = false;
    std::string fault;  // test-only fault injection, refused in release builds
};

class KeeperLink;

class RebootSender {
public:
    // Where the update stands. Moves only forward, or back to Idle by unwind().
    // (Not the measured phases of update_history.hpp: those time the steps.)
    enum class Stage {
        Idle,           // no update; the gate is open
        Spawning,       // the next instance loads; the gate is still open
        AwaitingReady,  // gate closed, frozen, the next instance has the state
        Committed,      // COMMIT sent: the next may serve; admin paused
        Served,         // the next instance serves: this one drains and exits
    };

    RebootSender(Server& server, Engine& engine, const DaemonConfig& config, TestHandler* test_handler)
        : server_(server), engine_(engine), config_(config), test_handler_(test_handler) {}

    void start(AdminRef admin, RebootOptions options);
    bool in_progress() const { return stage_ != Stage::Idle; }
    // The next instance serves: this one only drains.
    bool handed_over() const { return stage_ == Stage::Served; }
    // The keeper (keeper_link.hpp), if any: the next instance gets a link to it.
    void set_keeper(KeeperLink* keeper) { keeper_ = keeper; }
    // The daemon is stopping: roll back an update whose next instance does
    // not serve yet.
    void cancel(const std::string& why);
    const std::string& last_error() const { return last_error_; }

    // Every update measured (update_history.hpp): what status and metrics show.
    const UpdateHistory& history() const { return history_; }
    // The next instance, once it serves: the history and the update's clock
    // from the old instance, completed with its own marks.
    void continue_update(UpdateHistory history, UpdateMeter meter);
    // A client request was served: the first one after an update ends its
    // last phase.
    void note_request_served();
    // Upgrades since the cold start (status); carried by each upgrade.
    uint64_t upgrades() const { return upgrades_; }
    void set_upgrades(uint64_t n) { upgrades_ = n; }

private:
    // The steps of start(), in order. Each returns 0 or -errno with *why.
    // What goes over the channel: the blob and the fds that go with it.
    struct Payload {
        std::vector<uint8_t> blob;
        std::vector<int> fds;  // borrowed
        size_t nr_stale = 0;   // of fds, the last: a reboot's client connections
        size_t sessions = 0;
    };
    int check(const RebootOptions& options, std::string* why) const;
    int close_gate_and_freeze(std::string* why);
    int build_payload(Payload* p, std::string* why);
    int write_handover(std::vector<uint8_t> blob, UniqueFd* blob_fd, uint64_t* size, std::string* why);
    int spawn_next(std::string* why);
    int hand_over(int channel, int blob_fd, uint64_t blob_size, const Payload& p, std::string* why);
    bool upgrade() const { return opt_.kind == HandoverKind::Upgrade; }
    // The next instance's start: it connects (then the gate closes and
    // the state goes over), or it exits first.
    void on_next_connecting();  // REQUIRES: Stage::Spawning
    void on_spawned_exit();
    void end_spawn_watches();
    // The next instance's answers.
    void on_message(const std::vector<uint8_t>& bytes);
    void on_ready();                         // REQUIRES: Stage::AwaitingReady
    void on_serving(uint64_t blackout_us);   // REQUIRES: Stage::Committed
    void on_hangup();
    void on_commit_timeout();
    // Rollback.
    void fail(int err, const std::string& what);
    void unwind();
    void reap_child(bool kill_it);

    // Set at construction, for the instance's lifetime.
    Server& server_;
    Engine& engine_;
    const DaemonConfig& config_;
    TestHandler* test_handler_;  // null unless --test-handler
    KeeperLink* keeper_ = nullptr;  // set by the Daemon, replaced with it

    // One update, from start() until it unwinds or this instance exits.
    Stage stage_ = Stage::Idle;
    RebootOptions opt_;
    AdminRef admin_;    // who asked: gets the outcome, if still connected
    pid_t child_ = 0;   // the process started, until reaped
    pid_t pgid_ = 0;    // its process group, until killed or the update commits
    UniqueFd child_pidfd_;  // readable once child_ exits
    int listener_watch_ = -1;  // Spawning: the listener it connects to (the server's watch)
    int exit_watch_ = -1;      // Spawning: child_'s pidfd (the server's watch)
    pid_t next_pid_ = 0;  // the next instance: child_, or what a wrapper it ran started
    int channel_ = -1;  // owned by the server's channel connection
    uint64_t t0_ns_ = 0;  // when the gate closed
    UniqueFd next_stderr_;  // what the next instance says before its main() runs
    UpdateMeter meter_;     // the update in progress (or the last one)

    // Across updates: shown by `liveupdatectl status` and `metrics`.
    std::string last_error_;
    UpdateHistory history_;      // every update since the cold start, moved by each reboot
    uint64_t serving_ns_ = 0;    // this instance began to serve; 0 once its first request is served
    uint64_t served_epoch_ = 0;  // the epoch the update that made this instance started from
    uint64_t upgrades_ = 0;      // upgrades since the cold start, carried by each
};

}  // namespace lu
