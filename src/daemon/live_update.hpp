// The live update: the userspace kexec. The running instance closes the
// gate, freezes, writes the handover, starts the next instance and hands it
// the blob, the listening sockets and every preserved fd over a private
// channel; the next instance validates everything and reports ready; only
// then does the old instance commit (tell it to serve), and once it serves,
// exit. Any failure before that unwinds: kill the next instance, unfreeze in
// reverse, reopen the gate, and the queued requests run in order.
//
// Channel protocol (old -> next): HELLO with fds [blob memfd, control
// listener, admin listener], then FDS batches of at most 253 preserved fds,
// in slot order. (next -> old): READY or FAIL. (old -> next): COMMIT or
// ABORT. (next -> old): SERVING, just before it accepts clients.
//
// Who serves: the old instance, until it reads SERVING; a next instance
// that dies or hangs before that is killed and the old one rolls back. The
// next instance serves after COMMIT, or when the old one is gone (EOF: the
// state it holds is then the only copy). So at no point do both serve, and
// a kill -9 of either loses nothing once the last fd batch is sent.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "admin.hpp"
#include "handover_channel.hpp"
#include "unique_fd.hpp"
#include "update_history.hpp"

namespace lu {

class Server;
class Engine;
class TestHandler;

struct RebootOptions {
    std::string exec;  // empty: this daemon's own binary
    uint64_t timeout_ms = 30000;
    bool dry_run = false;
    std::string fault;  // test-only fault injection, refused in release builds
};

// How the next instance is started: what it must be told to behave as this one.
struct DaemonConfig {
    std::string self_exe;     // the binary this instance runs
    std::string runtime_dir;  // absolute
    std::string group;        // --group, or empty
    bool test_handler = false;
};

class LiveUpdate {
public:
    LiveUpdate(Server& server, DaemonConfig config, TestHandler* test_handler)
        : server_(server), config_(std::move(config)), test_handler_(test_handler) {}

    void start(AdminRef admin, RebootOptions options);
    bool in_progress() const { return child_ > 0; }
    // The daemon is stopping: roll back a live update whose next instance
    // does not serve yet.
    void cancel(const std::string& why) {
        if (in_progress() && !served_) fail(ECANCELED, why);
    }
    const std::string& last_error() const { return last_error_; }

    // Every update measured (update_history.hpp): what status and metrics show.
    const UpdateHistory& history() const { return history_; }
    // The next instance, once it serves: the history and the update's clock
    // from the old instance, completed with its own marks.
    void continue_update(UpdateHistory history, UpdateMeter meter);
    // A client request was served: the first one after an update ends its
    // last phase.
    void note_request_served();

private:
    void unwind();
    void fail(int err, const std::string& what);
    void on_message(const std::vector<uint8_t>& bytes);
    void on_hangup();
    void on_commit_timeout();
    int send_state(int chan, const std::vector<uint8_t>& blob, const std::vector<int>& fds);
    void reap_child(bool kill_it);

    Server& server_;
    DaemonConfig config_;
    TestHandler* test_handler_;
    RebootOptions opt_;
    AdminRef admin_;  // who asked: gets the outcome, if still connected
    pid_t child_ = 0;
    int channel_ = -1;  // owned by the server's channel conn
    UniqueFd next_stderr_;  // what the next instance says before its main() runs
    bool ready_ = false;
    bool committed_ = false;  // COMMIT sent: the next may serve
    bool served_ = false;  // the next instance reported SERVING
    uint64_t t0_ns_ = 0;
    std::string last_error_;
    UpdateMeter meter_;          // the update in progress (or the last one)
    UpdateHistory history_;      // every update since the cold start, moved by each reboot
    uint64_t serving_ns_ = 0;    // this instance began to serve; 0 once its first request is served
    uint64_t served_epoch_ = 0;  // the epoch the update that made this instance started from
};

// The environment variable that carries the history and the update's clock
// to the next instance.
inline constexpr const char* kUpdateEnv = "LIVEUPDATE_UPDATE_HISTORY";

// The next instance's side: receive and validate the state on `channel`,
// report ready and wait for the verdict. Returns the process exit code when
// it must not serve (validate-only, failure, abort); otherwise fills the
// outputs and returns -1.
int receive_handover(int channel, const std::string& fault, bool validate_only, Incoming* out);
// Tells the old instance this one serves now. 0, or -errno if it may still
// roll back (then this instance must not serve).
int report_serving(int channel, uint64_t blackout_us);

}  // namespace lu
