// SPDX-License-Identifier: Apache-2.0
// The Live Update Orchestrator engine: sessions, files, FLBs, the handler
// registry, the reboot gate and the handover, with the kernel's semantics
// errno for errno (docs/kernel-semantics.md states every rule). No sockets,
// no threads: the daemon's single event loop is the only caller, so every
// call runs alone by construction and the reboot gate is a state, not a lock
// (docs/kernel-semantics.md#reboot-gate).
//
// Note on error handling.
//  - Every int-returning call returns 0 or -errno: the kernel's errno for
//    the same condition, found by the kernel's checks in the kernel's order.
//    The engine never throws; exceptions exist only at the daemon's JSON
//    edge, where they become replies. (The one throw in src/core is
//    encode_handover's, for an image the engine never builds:
//    handover_writer.cpp.)
//  - A call that fails has undone its own work, in exact reverse order,
//    before it returns: the state is as if it had not been made.
//    Deserialization is the exception, as in the kernel: it leaks what it
//    restored and makes the error sticky
//    (docs/kernel-semantics.md#deserialize-failure).
//  - No object is constructed and then checked with ok(): an object that
//    can be invalid is made by a factory that returns an errno (the
//    handover reader is LuoReader::read()); the engine itself cannot fail
//    to construct.
//  - A caller's programming error is not an errno: each call states what
//    it expects as REQUIRES:, checked with assert() in debug builds.
#pragma once

#include <cerrno>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "file_handler.hpp"
#include "flb.hpp"
#include "handover_image.hpp"
#include "kernel_profile.hpp"
#include "unique_fd.hpp"
#include "upgrade_image.hpp"

namespace lu {

// Bounds. The kernel's v7.2 bounds are 10000 blocks of 51 sessions and of 63
// files; we keep the same figures so a program that fits there fits here.
inline constexpr size_t kMaxSessions = 10000 * 51;
inline constexpr size_t kMaxFilesPerSession = 10000 * 63;
inline constexpr size_t kMaxFlbs = 63;  // LUO_FLB_MAX

struct Limits {
    size_t sessions = kMaxSessions;                   // outgoing sessions
    size_t files_per_session = kMaxFilesPerSession;
    size_t files = SIZE_MAX;  // all preserved files: the daemon's fd budget
};

class Session;
struct FileHandlerEntry;
struct FlbState;

// One preserved file (the kernel's struct luo_file).
struct LuoFile {
    FileHandlerEntry* fh = nullptr;
    uint64_t token = 0;
    FileOpArgs args;   // serialized_data, private_data, retrieve_status
    UniqueFd file;     // outgoing: the preserved file; incoming: the retrieved one
    UniqueFd preserved;  // incoming: the fd handed over by the previous instance
    FileId id;         // the managed-set key while the file is managed
    // Type and inode of the fd the file holds: `file` (outgoing, read at
    // preserve: they never change) or `preserved` (incoming, as handed
    // over). Type 0: not read (a retrieved file may be another object).
    FdSlot slot;
    bool managed = false;
    uint64_t log_id = 0;  // its record in the crash journal (StateLog), 0 if none
};

enum class Direction { Outgoing, Incoming };

// The hand-off of an outgoing session to the next version of its service
// (engine_handoff.cpp, docs/handoff.md). None: an ordinary session.
// Offered: frozen, its view waits to be retrieved. Taken: the view was
// retrieved. The outcome of the last hand-off stays readable afterwards.
enum class HandoffState { None, Offered, Taken };
enum class HandoffOutcome { None, Committed, RolledBack, Validated };

class Session {
public:
    const std::string& name() const { return name_; }
    Direction direction() const { return direction_; }
    bool retrieved() const { return retrieved_; }
    bool orphaned() const { return orphaned_; }
    const std::vector<std::unique_ptr<LuoFile>>& files() const { return files_; }
    // Incoming: when it became retrievable (CLOCK_MONOTONIC ns).
    uint64_t incoming_since_ns() const { return incoming_since_ns_; }
    // The hand-off (engine_handoff.cpp). An outgoing session being handed
    // off has a view: the incoming session the next owner retrieves under
    // the same name; the view's source is that outgoing session.
    HandoffState handoff() const { return handoff_; }
    bool handoff_dry_run() const { return dry_run_; }
    HandoffOutcome last_handoff() const { return last_handoff_; }
    int last_handoff_reason() const { return last_reason_; }  // errno, 0 if none
    Session* handoff_view() const { return view_; }
    Session* handoff_source() const { return source_; }
    // Gone: committed away (a source) or rolled back under the next owner
    // (a retrieved view). Only its fd's last close removes it; every
    // request on it but the hand-off's wait answers ESTALE.
    bool gone() const { return gone_; }

    // Its record in the crash journal (StateLog), 0 if none: an outgoing
    // session, or an incoming one not yet finished. A hand-off's view has
    // none: it is its source, shown to the next owner.
    uint64_t log_id = 0;

private:
    friend class Engine;
    std::string name_;
    Direction direction_ = Direction::Outgoing;
    bool retrieved_ = false;  // incoming: handed out (retrieve once)
    bool orphaned_ = false;   // incoming: implicit finish refused on release
    bool refuse_finish_once_ = false;  // engine_faults.cpp
    uint64_t incoming_since_ns_ = 0;
    // engine_handoff.cpp
    HandoffState handoff_ = HandoffState::None;
    HandoffOutcome last_handoff_ = HandoffOutcome::None;
    int last_reason_ = 0;
    bool dry_run_ = false;       // source: the next owner only validates
    bool owner_closed_ = false;  // source: its fd was closed during the hand-off
    bool gone_ = false;
    Session* view_ = nullptr;    // source: the view, while handed off
    Session* source_ = nullptr;  // view: the source, until the outcome
    std::vector<std::unique_ptr<LuoFile>> files_;  // preservation order
    std::unordered_map<uint64_t, LuoFile*> by_token_;
    std::list<Session>::iterator self_;
};

// What the reboot hands the next instance: the image and, for each fd slot,
// the engine's fd (borrowed: still owned by the engine).
struct Handover {
    HandoverImage image;
    std::vector<int> fds;
};

// What a crash of the daemon must keep (keeper_link.hpp): the engine tells
// it of every change to the sessions and files a recovery brings back,
// inside the call that makes the change, so the record exists before the
// daemon answers. Sessions and files loaded whole (a handover, an upgrade,
// a recovery) are recorded by the daemon in one pass instead.
class StateLog {
public:
    virtual ~StateLog() = default;
    virtual void session_kept(Session& s) = 0;  // created
    virtual void file_kept(Session& s, LuoFile& f) = 0;  // preserved
    // Released, finished, or committed away by a hand-off. REQUIRES: s.log_id.
    virtual void session_forgotten(Session& s) = 0;
};

class Engine {
public:
    // The profile picks the kernel release whose uAPI checks this engine
    // makes (kernel_profile.hpp); its limits bound `limits`.
    explicit Engine(Limits limits = {}, const KernelProfile& profile = newest_kernel_profile());
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The crash journal, or null (the default): told of every change.
    void set_state_log(StateLog* log) { log_ = log; }

    // ---- registration (docs/kernel-semantics.md#flb-register) ----
    // Order decides matching priority.
    int register_file_handler(std::unique_ptr<FileHandler> fh);
    int register_flb(FileHandler* fh, Flb* flb);

    // /dev/liveupdate open: -EIO for ever once incoming deserialization failed.
    int open_check() const { return deserialize_err_ ? -EIO : 0; }

    // ---- control device ioctls (docs/kernel-semantics.md#sessions) ----
    // `name` is the raw 64-byte uAPI field.
    // REQUIRES (both): out != nullptr.
    int create_session(std::span<const uint8_t, kSessionNameLength> name, Session** out);
    int retrieve_session(std::span<const uint8_t, kSessionNameLength> name, Session** out);
    // Last close of a session fd. -EAGAIN while the gate is closed: the
    // caller retries after the reboot unwinds (the kernel's release waits).
    // REQUIRES: s is a session of this engine, not yet removed.
    int release_session(Session* s);

    // ---- session ioctls (docs/kernel-semantics.md#files) ----
    // After the caller's session-type and size checks, in the kernel's order
    // (the engine checks the type again).
    // REQUIRES (all three): s is a session of this engine, not yet removed.
    //
    // preserve_fd takes ownership of fd (the daemon's copy of the caller's fd)
    // only when it succeeds: on an error the fd is still the caller's, to
    // retry with; fd < 0 means none was given (-EBADF, in the kernel's order).
    // fd_room false: the daemon has no fd to spare for another file (its
    // table, shared with session sockets, is down to its reserve): -ENOSPC
    // at the file limit's step, as when `files` is reached.
    int preserve_fd(Session* s, uint64_t token, UniqueFd&& fd, bool fd_room = true);
    // On success *fd is the engine's retrieved file: borrowed, the caller dups
    // or sends it. Repeated calls give the same open file description.
    // REQUIRES: fd != nullptr.
    int retrieve_fd(Session* s, uint64_t token, int* fd);
    int finish_session(Session* s);

    // ---- FLB access for handlers (docs/kernel-semantics.md#flb) ----
    // REQUIRES: obj != nullptr.
    int flb_get_outgoing(Flb* flb, void** obj);
    int flb_get_incoming(Flb* flb, void** obj);
    void flb_put_incoming(Flb* flb);

    // ---- the reboot (docs/kernel-semantics.md#reboot) ----
    // reboot_freeze() closes the gate and freezes every outgoing session,
    // files in order; on failure it unfreezes what it froze (sessions in
    // reverse, each one's files in order), reopens the gate and returns the
    // error. On success the gate stays closed: every
    // mutation fails with -EAGAIN until reboot_unfreeze() (a later step of
    // the live update failed: userspace exec can fail, a kexec cannot) or
    // the instance ends.
    int reboot_freeze();
    void reboot_unfreeze();
    bool gate_closed() const { return gate_closed_; }
    // The state frozen at the gate.
    // REQUIRES: gate_closed(), after a successful reboot_freeze().
    Handover handover() const;

    // ---- the next instance (docs/kernel-semantics.md#next-instance) ----
    // After decode_handover() and check_handover_fds() accepted the blob and
    // its fds. fds[i] is slot i, the file image.fd_slots[i] records: an
    // incoming file's identity is taken from its slot, not read again. On
    // failure the state already restored is kept but unreachable (leaked)
    // and the error is sticky: open_check() fails with -EIO from then on.
    // REQUIRES: the first call on this engine (an instance is handed over once).
    int deserialize(HandoverImage image, std::vector<UniqueFd> fds);
    int deserialize_error() const { return deserialize_err_; }
    // The handed-over state could not even be read (a crash journal that
    // was refused): as a failed deserialize(), `fds` are kept unreachable and
    // `err` is sticky. REQUIRES: the first call on this engine, err < 0.
    void refuse_incoming(int err, std::vector<UniqueFd> fds);
    uint64_t liveupdate_num() const { return liveupdate_num_; }
    size_t leaked_fds() const { return leaked_fds_.size(); }
    const Limits& limits() const { return limits_; }
    const KernelProfile& profile() const { return profile_; }

    // ---- the upgrade of the daemon (engine_upgrade.cpp) ----
    // The whole state as it stands (both directions, FLBs, the sticky
    // error), nothing frozen, the epoch unchanged; the fds borrowed: the
    // images' fd slots (outgoing, then incoming) and the leaked ones. The
    // daemon adds its connections. REQUIRES: no request runs meanwhile
    // (the daemon's gate is closed).
    struct UpgradeState {
        UpgradeImage image;
        std::vector<int> slot_fds, leaked_fds;
    };
    UpgradeState upgrade_state() const;
    // The next binary's engine takes that state over, instead of
    // deserialize(), after decode_upgrade() and check_upgrade_fds(); the
    // sessions come back in *outgoing and *incoming, by their index in the
    // image. -ENOENT: a file or outgoing FLB this build has no handler for;
    // -EBUSY: one object twice; a handler's errors. On failure this engine
    // must not serve: the previous instance still holds everything.
    // REQUIRES: the first call on this engine; slot_fds as upgrade_state()
    // orders them.
    int adopt(const UpgradeImage& image, std::vector<UniqueFd> slot_fds, std::vector<UniqueFd> leaked,
              std::vector<Session*>* outgoing, std::vector<Session*>* incoming);

    // ---- the hand-off of a service's sessions (engine_handoff.cpp) ----
    // docs/handoff.md. Inside one instance, nothing else moves.
    //
    // Freezes `sessions` (each one's files in preservation order; a failing
    // freeze unfreezes the sessions frozen before it, in reverse) and makes
    // each retrievable under its name as an incoming session (its view):
    // RETRIEVE_SESSION once, RETRIEVE_FD by token, FINISH, with the
    // handlers' incoming checks. Until the outcome, the source refuses
    // PRESERVE_FD with -EAGAIN. -EINVAL: empty, repeated or not outgoing;
    // -EBUSY: one is handed off already, or a reboot's gate is closed;
    // -EEXIST: an incoming session has that name; -EIO: see open_check();
    // a freeze's error. REQUIRES: every session is of this engine.
    int handoff_begin(std::span<Session* const> sessions, bool dry_run);
    // The commit is the view's FINISH (finish_session): the view's files are
    // finished, the source's files leave this session for the next owner
    // and the source is gone. In a dry run FINISH is -ECANCELED instead and
    // nothing changes: the caller ends the dry run with handoff_rollback.
    //
    // Ends the hand-off of `source` without moving it: the view goes (gone
    // if retrieved: its fd answers ESTALE), the source's files are
    // unfrozen, in order, and it is its owner's again; a source whose fd
    // was closed meanwhile is released now. Returns whether the source
    // still exists. `outcome` is RolledBack or Validated (a dry run that
    // passed); `reason` (an errno, or 0) is kept for the owner to read.
    // REQUIRES: source->handoff() != HandoffState::None.
    bool handoff_rollback(Session* source, HandoffOutcome outcome, int reason = 0);
    // The names of the sessions being handed off, ", "-separated; "" if none.
    std::string handoffs_in_progress() const;
    // The source whose view has this name (uAPI raw name), or null.
    const Session* handoff_source_of(std::span<const uint8_t, kSessionNameLength> name) const;

    // ---- error paths on demand (engine_faults.cpp) ----
    // For agents' tests (docs/testing-luo-agents.md), armed by the daemon's
    // admin request under --agent-faults, never by the uAPI. Each makes the
    // kernel's own error path run, as if a handler had failed there.
    //
    // The next reboot_freeze() fails at file k (0-based, in freeze order:
    // sessions by creation, files by preservation) with -err, as that
    // file's freeze() would; disarmed by that reboot_freeze() whether or
    // not it reached file k. REQUIRES: err > 0.
    void fail_freeze_at(size_t k, int err);
    // The incoming file's retrieve fails for good with -err, as its
    // handler's retrieve() would: the error is its retrieve_status.
    // -ENOENT: no such incoming session or token; -EALREADY: retrieved
    // (or failed) already. REQUIRES: err > 0.
    int fail_retrieve(std::string_view session, uint64_t token, int err);
    // The incoming session's next finish (FINISH, or the implicit one of its
    // last close) is refused once with -EBUSY, as a handler's can_finish()
    // would. A session with no files left is never refused (the kernel calls
    // no can_finish then), and the refusal stays armed. -ENOENT: no such
    // incoming session.
    int refuse_finish_once(std::string_view session);

    // ---- introspection for status ----
    const std::list<Session>& outgoing() const { return outgoing_; }
    const std::list<Session>& incoming() const { return incoming_; }
    size_t preserved_files() const { return nr_files_; }
    // The incoming sessions nobody retrieved: what a reboot now drops.
    std::vector<std::string> unretrieved_incoming() const;
    std::string_view compatible_of(const LuoFile& f) const;

private:
    // engine.cpp
    FileHandlerEntry* find_handler(std::string_view compatible) const;
    // engine_session.cpp
    Session& insert_session(Direction direction, std::string name);
    void remove_session(Session& s);
    // engine_file.cpp
    void unpreserve_files(Session& s);
    int finish_files(Session& s);
    void managed_erase(LuoFile& f);
    void add_managed_file(Session& s, std::unique_ptr<LuoFile> f);
    // engine_flb.cpp
    FlbState* flb_state(Flb* flb);
    int flb_preserve_file(FileHandlerEntry* fh);
    void flb_unpreserve_file(FileHandlerEntry* fh, size_t nr_flbs);
    void flb_finish_file(FileHandlerEntry* fh);
    // engine_reboot.cpp
    int session_freeze(Session& s);
    int injected_freeze_error();  // engine_faults.cpp
    void session_unfreeze(Session& s, size_t nr_frozen);
    // engine_upgrade.cpp
    int adopt_file(Session& s, const FileImage& fi, const FdSlot& verified, UniqueFd fd,
                   int retrieve_status);
    int rebuild_flb_object(FlbState& fs, const std::vector<uint8_t>& data, void** obj);
    // engine_handoff.cpp
    void handoff_commit(Session& view);
    void make_gone(Session& s);
    // engine_session.cpp: the session leaves the crash journal.
    void forget(Session& s);
    // engine_deserialize.cpp
    void deserialize_flbs(std::vector<FlbImage>& flbs);
    int deserialize_session(SessionImage& si, const std::vector<FdSlot>& slots,
                            std::vector<UniqueFd>& fds);
    int deserialize_file(Session& s, FileImage& fimg, const std::vector<FdSlot>& slots,
                         std::vector<UniqueFd>& fds);

    struct FileIdHash {
        size_t operator()(const FileId& id) const noexcept {
            return std::hash<uint64_t>()(id.ino * 0x9E3779B97F4A7C15ull ^ id.dev);
        }
    };

    // Fixed at construction.
    const KernelProfile& profile_;
    const Limits limits_;
    StateLog* log_ = nullptr;  // set before the instance serves (set_state_log)

    // The registry: filled before the instance serves, kept for its life.
    // Handlers own their FLB links; FLB states are never removed, so
    // FileHandlerEntry::flbs may point into flbs_.
    std::vector<std::unique_ptr<FileHandlerEntry>> handlers_;
    std::vector<std::unique_ptr<FlbState>> flbs_;

    // Sessions and files: change with every request. A Session lives from
    // create (or deserialize) to its release; a LuoFile from preserve (or
    // deserialize) to its unpreserve or finish. Sessions are list nodes so
    // that a Session* stays valid while others come and go.
    std::list<Session> outgoing_, incoming_;
    // Sessions gone (a committed source, a rolled-back view) whose fd is
    // still open: only its last close removes them (engine_handoff.cpp).
    std::list<Session> gone_sessions_;
    std::unordered_map<std::string, Session*> outgoing_by_name_, incoming_by_name_;
    // Every file managed now, by identity (the kernel's luo_preserved_files,
    // docs/kernel-semantics.md#file-managed-set).
    std::unordered_map<FileId, LuoFile*, FileIdHash> managed_;
    size_t nr_files_ = 0;  // files in all sessions, both directions

    // engine_faults.cpp: the next reboot_freeze()'s failing file, or -1;
    // the files frozen so far by the running reboot_freeze().
    long freeze_fault_at_ = -1;
    int freeze_fault_err_ = 0;
    size_t freeze_seq_ = 0;

    // The reboot gate: closed from a successful reboot_freeze() until
    // reboot_unfreeze() or the instance ends.
    bool gate_closed_ = false;

    // Set once by deserialize(), for the rest of the instance.
    bool have_incoming_ = false;  // an incoming handover was deserialized
    uint64_t liveupdate_num_ = 0;  // this instance's epoch (incoming number)
    int deserialize_err_ = 0;      // sticky: open_check() answers -EIO
    std::vector<UniqueFd> leaked_fds_;  // kept open after a failed deserialize
};

}  // namespace lu
