// The Live Update Orchestrator engine: sessions, files, FLBs, the handler
// registry, the reboot gate and the handover, with the kernel's semantics
// errno for errno (spec §2-§5). No sockets, no threads: the daemon's single
// event loop is the only caller, so every call is serialized by construction
// (lessons B1, B2, B4) and the reboot gate is a state, not a lock.
//
// Every int-returning call returns 0 or -errno.
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
#include "unique_fd.hpp"

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
    bool managed = false;
};

enum class Direction { Outgoing, Incoming };

class Session {
public:
    const std::string& name() const { return name_; }
    Direction direction() const { return direction_; }
    bool retrieved() const { return retrieved_; }
    bool orphaned() const { return orphaned_; }
    const std::vector<std::unique_ptr<LuoFile>>& files() const { return files_; }

private:
    friend class Engine;
    std::string name_;
    Direction direction_ = Direction::Outgoing;
    bool retrieved_ = false;  // incoming: handed out (retrieve once)
    bool orphaned_ = false;   // incoming: implicit finish refused on release
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

class Engine {
public:
    explicit Engine(Limits limits = {});
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Registration (spec §4.1, §5.2). Order decides matching priority.
    int register_file_handler(std::unique_ptr<FileHandler> fh);
    int register_flb(FileHandler* fh, Flb* flb);

    // /dev/liveupdate open: -EIO for ever once incoming deserialization failed.
    int open_check() const { return deserialize_err_ ? -EIO : 0; }

    // Control device ioctls. `name` is the raw 64-byte uAPI field.
    int create_session(std::span<const uint8_t, kSessionNameLength> name, Session** out);
    int retrieve_session(std::span<const uint8_t, kSessionNameLength> name, Session** out);
    // Last close of a session fd (spec §3.5). -EAGAIN while the gate is closed:
    // the caller retries after the reboot unwinds (the kernel's release waits).
    int release_session(Session* s);

    // Session ioctls, after the caller's session-type and size checks.
    // preserve_fd takes ownership of fd (the daemon's copy of the caller's fd);
    // fd < 0 means none was given (-EBADF, in the kernel's order).
    // fd_room false: the daemon has no fd to spare for another file (its
    // table, shared with session sockets, is down to its reserve): -ENOSPC
    // at the file limit's step, as when `files` is reached.
    int preserve_fd(Session* s, uint64_t token, UniqueFd fd, bool fd_room = true);
    // On success *fd is the engine's retrieved file: borrowed, the caller dups
    // or sends it. Repeated calls give the same open file description.
    int retrieve_fd(Session* s, uint64_t token, int* fd);
    int finish_session(Session* s);

    // FLB access for handlers (spec §5.3, §5.4).
    int flb_get_outgoing(Flb* flb, void** obj);
    int flb_get_incoming(Flb* flb, void** obj);
    void flb_put_incoming(Flb* flb);

    // The reboot (spec §1.3 step 4, lessons rule 1). reboot_freeze() closes the
    // gate and freezes every outgoing session, files in order; on failure it
    // unfreezes what it froze, in reverse, reopens the gate and returns the
    // error. On success the gate stays closed: every mutation fails with
    // -EAGAIN until reboot_unfreeze() (a later step of the live update failed:
    // userspace exec can fail, a kexec cannot) or the instance ends.
    int reboot_freeze();
    void reboot_unfreeze();
    bool gate_closed() const { return gate_closed_; }
    // Valid only while the gate is closed after a successful freeze.
    Handover handover() const;

    // Next instance, after decode_handover() and check_handover_fds()
    // accepted the blob and its fds. fds[i] is slot i. On failure the state
    // already restored is kept but unreachable (leaked, lessons rule 8) and
    // the error is sticky: open_check() fails with -EIO from then on.
    int deserialize(HandoverImage image, std::vector<UniqueFd> fds);
    int deserialize_error() const { return deserialize_err_; }
    uint64_t liveupdate_num() const { return liveupdate_num_; }
    size_t leaked_fds() const { return leaked_fds_.size(); }
    const Limits& limits() const { return limits_; }

    // Introspection for status.
    const std::list<Session>& outgoing() const { return outgoing_; }
    const std::list<Session>& incoming() const { return incoming_; }
    size_t preserved_files() const { return nr_files_; }
    std::string_view compatible_of(const LuoFile& f) const;

private:
    int flb_preserve_file(FileHandlerEntry* fh);
    void flb_unpreserve_file(FileHandlerEntry* fh, size_t nr_flbs);
    void flb_finish_file(FileHandlerEntry* fh);
    FlbState* flb_state(Flb* flb);
    int session_freeze(Session& s);
    void session_unfreeze(Session& s, size_t nr_frozen);
    void unpreserve_files(Session& s);
    int finish_files(Session& s);
    Session& insert_session(Direction direction, std::string name);
    void remove_session(Session& s);
    void managed_erase(LuoFile& f);
    FileHandlerEntry* find_handler(std::string_view compatible) const;
    void deserialize_flbs(std::vector<FlbImage>& flbs);
    int deserialize_session(SessionImage& si, std::vector<UniqueFd>& fds);
    int deserialize_file(Session& s, FileImage& fimg, std::vector<UniqueFd>& fds);

    std::vector<std::unique_ptr<FileHandlerEntry>> handlers_;
    std::vector<std::unique_ptr<FlbState>> flbs_;
    std::list<Session> outgoing_, incoming_;
    std::unordered_map<std::string, Session*> outgoing_by_name_, incoming_by_name_;
    struct FileIdHash {
        size_t operator()(const FileId& id) const noexcept {
            return std::hash<uint64_t>()(id.ino * 0x9E3779B97F4A7C15ull ^ id.dev);
        }
    };
    std::unordered_map<FileId, LuoFile*, FileIdHash> managed_;  // luo_preserved_files
    size_t nr_files_ = 0;
    Limits limits_;
    bool have_incoming_ = false;  // an incoming handover was deserialized
    std::vector<UniqueFd> leaked_fds_;  // kept after a failed deserialize
    bool gate_closed_ = false;
    int deserialize_err_ = 0;
    uint64_t liveupdate_num_ = 0;  // this instance's epoch (incoming number)
};

}  // namespace lu
