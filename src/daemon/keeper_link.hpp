// SPDX-License-Identifier: Apache-2.0
// An instance's side of its keeper (keeper.hpp): the journal written as the
// engine changes (it is the engine's StateLog, so each record is with the
// keeper before the request that made it is answered), the whole state
// recorded at an instance's start, and a new keeper started when the old
// one dies. Sends block, bounded: a keeper that does not read within the
// bound is killed and replaced, and the request goes on (only its
// protection lapsed, until the new keeper holds everything again).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon_config.hpp"
#include "engine.hpp"
#include "keeper_protocol.hpp"
#include "unique_fd.hpp"

namespace lu {

// What the journal's epoch record carries beside the epoch.
struct CrashCount {
    uint64_t recovered = 0;     // crashes this state came back from
    uint64_t last_crash_ns = 0; // CLOCK_REALTIME, 0 if none
};

// The arguments an instance is started with to behave as this one: the
// next instance of a live update and a recovery alike (the caller adds
// what is its own).
// The crash count goes to a live update's next instance in its
// environment, as "RECOVERED LAST_CRASH_NS"; taken (and removed) there.
inline constexpr const char* kCrashesEnv = "LIVEUPDATE_CRASHES";
std::string crashes_env(CrashCount c);
CrashCount take_crashes_env();

std::vector<std::string> same_config_args(const DaemonConfig& config, const std::string& exec,
                                          bool validate_only);

class KeeperLink final : public StateLog {
public:
    // A new keeper, running this binary (--keeper). Null, with *why.
    static std::unique_ptr<KeeperLink> spawn(const DaemonConfig& config, std::string* why);
    // Over a link this instance was given: by the previous instance (a live
    // update: `holds_our_files`, the keeper keeps that instance's files,
    // which are ours now) or by the keeper itself (a recovery).
    static std::unique_ptr<KeeperLink> adopt(UniqueFd link, const DaemonConfig& config,
                                             bool holds_our_files);
    ~KeeperLink() override;

    // A new generation with everything a recovery needs: the listeners, the
    // arguments to restart with, the epoch and crash count, every session a
    // crash must keep with its files (their log ids assigned here). Not yet
    // the keeper's: commit() makes it so. Files the keeper already holds
    // (a live update's, or ours again) are named, not sent. 0 or -errno.
    int record_all(Engine& engine, int control, int admin);
    int commit();
    // The next instance's link, asked of the keeper (a live update). 0 or -errno.
    int link_for_next(UniqueFd* out);
    // A stop on purpose (SIGTERM): the keeper drops what it holds.
    void stop();
    // The live update committed (SERVING read): the next instance's
    // generation may become the kept one.
    void promote();
    // The keeper's link ended (it died): start another and record
    // everything again. 0 or -errno (logged; the instance serves on unprotected).
    int replace(Engine& engine, int control, int admin);

    int fd() const { return link_.get(); }
    pid_t keeper_pid() const { return keeper_pid_; }
    bool protecting() const { return committed_ && !lost_; }
    // This keeper gave the last live update's next instance its link: that
    // instance commits its state here, so our exit after the hand-over is
    // not a crash to it. A keeper that did not (it was replaced since, or
    // the next instance started its own) must be stopped when we exit, or
    // it would recover our stale state beside the instance that serves.
    bool linked_next() const { return linked_next_ && !lost_; }
    CrashCount crashes() const { return crashes_; }
    void set_crashes(CrashCount c) { crashes_ = c; }

    // StateLog
    void session_kept(Session& s) override;
    void file_kept(Session& s, LuoFile& f) override;
    void session_forgotten(Session& s) override;

private:
    KeeperLink(UniqueFd link, const DaemonConfig& config);
    // 0 or -errno; a failure marks the link lost (and kills a keeper that hangs).
    int send(std::span<const uint8_t> bytes, std::span<const int> fds = {});
    void lost(int err);
    // *id: the answer's id (SYNCED: the keeper's version).
    int await_answer(KeeperOp op, UniqueFd* fd, uint64_t* id = nullptr);
    // The record of `f` for the keeper, with the identity a PUT_KEYED gives
    // it (`held`: named, not sent).
    bool add_file_record(std::vector<uint8_t>* out, const Session& s, const LuoFile& f, bool held);

    // Set at construction.
    const DaemonConfig& config_;

    // The link; replaced with the keeper.
    UniqueFd link_;
    pid_t keeper_pid_ = 0;
    bool committed_ = false;  // the keeper holds a generation of ours
    bool lost_ = false;       // a send failed: the protection lapsed
    bool linked_next_ = false;
    // It keeps the files of the instance we took over from (adopt()).
    bool holds_our_files_ = false;
    // From its first SYNCED (keeper_protocol.hpp); 1 until then.
    uint64_t version_ = 1;

    // The journal's ids, and the files of each session (its record goes
    // first, then theirs: a crash in between leaves orphans, never a session
    // short of files).
    uint64_t next_id_ = 1;
    std::unordered_map<uint64_t, std::vector<uint64_t>> files_of_;
    CrashCount crashes_;
};

}  // namespace lu
