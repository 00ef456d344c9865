// SPDX-License-Identifier: Apache-2.0
// The hand-off of a service's sessions to its next version, the daemon's
// side (docs/handoff.md; the engine's is engine_handoff.cpp): who asked,
// who waits for the outcome, and what ends it. A hand-off is a group of
// sessions begun together, with one timeout and, if known, the next
// version's pid; each session commits at its view's FINISH, and what ends
// the rest (the next version's exit, an abort, the timeout, the view closed
// unfinished) rolls it back. The owner's session fd and the admin
// connections that asked are told each outcome.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "admin.hpp"
#include "engine.hpp"

namespace lu {

class Server;
struct Conn;

// A session connection a reply is owed to: by fd and serial (an fd number
// is reused at once), and the caller's struct size.
struct SessionRef {
    int fd = -1;
    uint64_t serial = 0;
    uint32_t user_size = 0;
};

struct HandoffResult {
    std::string name;
    HandoffOutcome outcome = HandoffOutcome::None;
    int reason = 0;  // errno
};

const char* outcome_name(HandoffOutcome o);

class Handoffs {
public:
    static constexpr uint64_t kDefaultTimeoutMs = 30000;
    static constexpr uint64_t kMaxTimeoutMs = 3600 * 1000;

    struct Options {
        bool dry_run = false;
        uint64_t timeout_ms = kDefaultTimeoutMs;
        pid_t next_pid = 0;  // 0: not known (yet)
        uid_t owner_uid = 0;  // who may retrieve (and root)
    };

    explicit Handoffs(Server& server) : server_(server) {}
    Handoffs(const Handoffs&) = delete;
    Handoffs& operator=(const Handoffs&) = delete;

    // Begins the hand-off of `sessions`: 0 or -errno (the engine's, or
    // -ESRCH for a next_pid that is not running, -ENOMEM/-EMFILE for the
    // timer); *id names it for wait().
    int begin(const std::vector<Session*>& sessions, const Options& o, uint64_t* id);
    // Watches the next version of hand-off `id`: its exit rolls back what
    // it did not commit. 0, -ENOENT (over or unknown), -ESRCH, -EBUSY (one
    // is watched already).
    int watch_pid(uint64_t id, pid_t pid);
    // Rolls back what hand-off `id` did not commit (ECANCELED). false: no
    // such hand-off running.
    bool abort(uint64_t id);
    // An admin connection waits for the outcome of hand-off `id`: answered
    // when the last session is decided, at once if it is over. false: no
    // such hand-off.
    bool wait(uint64_t id, AdminRef to);
    // The owner's session fd waits. REQUIRES: source->handoff() != None.
    void wait_owner(const Session* source, SessionRef to);
    // Who may retrieve `source`'s view besides root. REQUIRES: handed off.
    uid_t owner_uid(const Session* source) const;

    // The outcomes, as they happen. committed(): the view's FINISH
    // committed (the engine did the work). end(): rolls `source` back (the
    // engine's handoff_rollback) and reports it; nothing if it is not
    // handed off.
    void committed(const Session* source);
    void end(Session* source, HandoffOutcome outcome, int reason);

private:
    struct Group {
        std::vector<Session*> pending;
        std::vector<HandoffResult> results;
        Conn* timer = nullptr;
        Conn* pidfd = nullptr;
        std::vector<AdminRef> waiting;
    };
    struct Entry {
        uint64_t group = 0;
        uid_t owner_uid = 0;
        std::string name;
        std::vector<SessionRef> owners;
    };

    void decided(const Session* source, HandoffOutcome outcome, int reason);
    void end_all(uint64_t id, int reason);
    void answer(AdminRef to, const std::vector<HandoffResult>& results);

    Server& server_;
    // Every session handed off now (by its source) and every hand-off
    // running; the results of the last few that ended, for a late wait().
    std::unordered_map<const Session*, Entry> entries_;
    std::map<uint64_t, Group> groups_;
    std::deque<std::pair<uint64_t, std::vector<HandoffResult>>> ended_;
    uint64_t next_id_ = 1;
};

// The admin requests "update" and "update-wait" (handoff_admin.cpp).
void handle_update_request(Server& server, AdminRef admin, uid_t peer_uid, const std::string& op,
                           const nlohmann::json& req);

}  // namespace lu
