// SPDX-License-Identifier: Apache-2.0
//
// libliveupdate, C++ layer: header-only RAII over <liveupdate/client.h>
// (C++17 or later). Failures throw liveupdate::Error, a std::system_error
// carrying the errno; the C API is the non-throwing variant, and every type
// here adopts or releases a raw fd to mix the two.
//
// As in the kernel, closing a Session fd *is* its release: destroying an
// outgoing Session unpreserves its files; destroying an incoming one finishes
// it. Keep Sessions alive until the live update.
#pragma once

#include <liveupdate/client.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace liveupdate {

class Error : public std::system_error {
  public:
    Error(int err, const char* what) : std::system_error(err, std::generic_category(), what) {}
    int errno_value() const noexcept { return code().value(); }
};

namespace detail {
// The C API returns a value >= 0 or -errno.
inline int check(int rc, const char* what) {
    if (rc < 0) throw Error(-rc, what);
    return rc;
}
// A duration as the C API's unsigned ms, saturating rather than wrapping.
inline unsigned clamp_ms(std::chrono::milliseconds ms) {
    if (ms.count() <= 0) return 0;
    return ms.count() > 0xffffffffLL ? 0xffffffffu : static_cast<unsigned>(ms.count());
}
}  // namespace detail

// An owned file descriptor: closed exactly once, moved never copied.
class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

// The outcome of a hand-off (docs/handoff.md).
enum class HandoffOutcome {
    Committed = LU_HANDOFF_COMMITTED,    // the next version has it; this fd is ESTALE
    RolledBack = LU_HANDOFF_ROLLED_BACK, // it is yours again, every file as it was
    Validated = LU_HANDOFF_VALIDATED,    // a dry run passed: nothing moved
};

struct HandoffResult {
    HandoffOutcome outcome;
    int reason;  // the errno that ended it (ECANCELED, ETIMEDOUT, ECONNRESET, ESRCH), 0 if none
    bool committed() const noexcept { return outcome == HandoffOutcome::Committed; }
};

// A session fd. Outgoing (created): preserve(), handoff(). Incoming
// (retrieved): retrieve() and finish(). The daemon answers EINVAL for the
// wrong kind.
class Session {
  public:
    Session() = default;
    explicit Session(UniqueFd fd) noexcept : fd_(std::move(fd)) {}

    void preserve(int fd, std::uint64_t token) {
        detail::check(lu_preserve_fd(fd_.get(), fd, token), "liveupdate: preserve");
    }
    UniqueFd retrieve(std::uint64_t token) {
        return UniqueFd(detail::check(lu_retrieve_fd(fd_.get(), token), "liveupdate: retrieve"));
    }
    void finish() { detail::check(lu_finish(fd_.get()), "liveupdate: finish"); }

    // The hand-off of this outgoing session to the next version of its
    // service (docs/handoff.md): returns once it is offered; wait_handoff()
    // gives the outcome. next_pid (0: none) is watched; a zero timeout is
    // the daemon's default (30 s).
    void handoff(int next_pid = 0, std::chrono::milliseconds timeout = {}, bool dry_run = false) {
        detail::check(lu_handoff(fd_.get(), next_pid, static_cast<std::uint32_t>(timeout.count()),
                                 dry_run ? LU_HANDOFF_DRY_RUN : 0u),
                      "liveupdate: handoff");
    }
    HandoffResult wait_handoff() {
        int reason = 0;
        int o = detail::check(lu_handoff_wait(fd_.get(), &reason), "liveupdate: handoff_wait");
        return {static_cast<HandoffOutcome>(o), reason};
    }
    // From either side: rolls the hand-off back.
    void abort_handoff() { detail::check(lu_handoff_abort(fd_.get()), "liveupdate: handoff_abort"); }

    std::string name() const {
        char buf[LIVEUPDATE_SESSION_NAME_LENGTH];
        detail::check(lu_get_name(fd_.get(), buf), "liveupdate: get_name");
        return buf;
    }

    int fd() const noexcept { return fd_.get(); }
    explicit operator bool() const noexcept { return bool(fd_); }
    int release() noexcept { return fd_.release(); }
    void close() noexcept { fd_.reset(); }  // the session's release, as in the kernel

  private:
    UniqueFd fd_;
};

// The control connection (the /dev/liveupdate of this world): exclusive, so
// hold it only while creating or retrieving sessions. Sessions outlive it.
class Orchestrator {
  public:
    Orchestrator() = default;
    explicit Orchestrator(UniqueFd fd) noexcept : fd_(std::move(fd)) {}

    // busy_wait: how long to take turns (lu_open_wait) while another
    // process holds the control connection; zero answers EBUSY at once.
    static Orchestrator open(std::chrono::milliseconds busy_wait = {}) {
        int fd = busy_wait.count() > 0 ? lu_open_wait(detail::clamp_ms(busy_wait)) : lu_open();
        return Orchestrator(UniqueFd(detail::check(fd, "liveupdate: open")));
    }

    Session create_session(std::string_view name) {
        NameBuf n(name);
        return Session(UniqueFd(
            detail::check(lu_create_session(fd_.get(), n.buf), "liveupdate: create_session")));
    }
    Session retrieve_session(std::string_view name) {
        NameBuf n(name);
        return Session(UniqueFd(
            detail::check(lu_retrieve_session(fd_.get(), n.buf), "liveupdate: retrieve_session")));
    }

    int fd() const noexcept { return fd_.get(); }
    explicit operator bool() const noexcept { return bool(fd_); }
    int release() noexcept { return fd_.release(); }
    void close() noexcept { fd_.reset(); }

  private:
    // A string_view is not NUL-terminated. 64 bytes or more stay unterminated
    // so that the daemon rejects the name, as the kernel would.
    struct NameBuf {
        char buf[LIVEUPDATE_SESSION_NAME_LENGTH + 1] = {};
        explicit NameBuf(std::string_view s) {
            std::memcpy(buf, s.data(),
                        s.size() < LIVEUPDATE_SESSION_NAME_LENGTH ? s.size()
                                                                  : LIVEUPDATE_SESSION_NAME_LENGTH);
        }
    };
    UniqueFd fd_;
};

// Creates a memfd of `size` bytes (sealable, close-on-exec), preserves it
// under `token` and returns it: map it and keep your state in it.
inline UniqueFd preserve_memfd_region(Session& s, std::uint64_t token, std::string_view name,
                                      std::size_t size) {
    UniqueFd fd(::memfd_create(std::string(name).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) throw Error(errno, "liveupdate: memfd_create");
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
        throw Error(errno, "liveupdate: ftruncate");
    s.preserve(fd.get(), token);
    return fd;
}

// Preserves a listening socket. A socket that is not listening (a common
// mistake: preserving before listen()) is EINVAL here, before the daemon.
inline void preserve_listening_socket(Session& s, std::uint64_t token, int fd) {
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        throw Error(errno, "liveupdate: getsockopt(SO_ACCEPTCONN)");
    if (!listening) throw Error(EINVAL, "liveupdate: not a listening socket");
    s.preserve(fd, token);
}

// A live update of the daemon itself (the admin socket; its own user or
// root). upgrade_daemon(): a new binary takes over every connection,
// session and file, and no client notices. reboot_daemon(): the kexec of
// this world, every outgoing session incoming in the next epoch. Both
// return the daemon's JSON answer once the new instance serves; on failure
// they throw Error with the errno and what failed, and the running instance
// still serves.
//
//   liveupdate::upgrade_daemon({"/usr/sbin/liveupdated"});   // or {} for the same binary
struct DaemonUpdate {
    std::string exec;        // empty: the running binary
    unsigned timeout_s = 0;  // 0: 30 seconds
    bool dry_run = false;    // the new binary validates the state, nothing moves
};

namespace detail {
inline std::string update_daemon(int (*fn)(const char*, unsigned, unsigned, char**),
                                 const DaemonUpdate& u, const char* what) {
    char* reply = nullptr;
    int rc = fn(u.exec.empty() ? nullptr : u.exec.c_str(), u.timeout_s,
                u.dry_run ? LU_UPDATE_DRY_RUN : 0u, &reply);
    std::string out = reply ? reply : "";
    lu_free(reply);
    if (rc < 0) throw Error(-rc, (std::string(what) + ": " + out).c_str());
    return out;
}
}  // namespace detail

inline std::string upgrade_daemon(const DaemonUpdate& u = {}) {
    return detail::update_daemon(lu_admin_upgrade, u, "liveupdate: upgrade");
}
inline std::string reboot_daemon(const DaemonUpdate& u = {}) {
    return detail::update_daemon(lu_admin_reboot, u, "liveupdate: reboot");
}

// ---- a service's cycle (docs/client.md) ----

// The previous version's side of a hand-off: offers `s` to `next_pid` and
// waits for the outcome. Committed: stop serving and exit. Rolled back:
// serve on (the state's content may have been written by the next version).
inline HandoffResult hand_off(Session& s, int next_pid, std::chrono::milliseconds timeout = {},
                              bool dry_run = false) {
    s.handoff(next_pid, timeout, dry_run);
    return s.wait_handoff();
}

// Step 1 of a start: the session handed over under `name` (by a reboot or a
// hand-off), or std::nullopt if there is none (a cold start: create it).
inline std::optional<Session> retrieve_if_any(Orchestrator& o, std::string_view name) {
    try {
        return o.retrieve_session(name);
    } catch (const Error& e) {
        if (e.errno_value() == ENOENT) return std::nullopt;
        throw;
    }
}

// Step 1 for a next version started before the switch: waits until `name`
// is offered, polling every `poll`, and retrieves it. The control
// connection is held only for each attempt (it is exclusive: other
// services need it too). Throws Error(ETIMEDOUT) after `give_up`.
inline Session await_session(std::string_view name,
                             std::chrono::milliseconds give_up = std::chrono::seconds(30),
                             std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
    const auto until = std::chrono::steady_clock::now() + give_up;
    for (;;) {
        int ctl = lu_open();
        if (ctl >= 0) {
            Orchestrator o{UniqueFd(ctl)};
            if (std::optional<Session> s = retrieve_if_any(o, name)) return std::move(*s);
        } else if (ctl != -EBUSY) {
            throw Error(-ctl, "liveupdate: open");
        }
        if (std::chrono::steady_clock::now() >= until)
            throw Error(ETIMEDOUT, "liveupdate: await_session");
        std::this_thread::sleep_for(poll);
    }
}

// Steps 2 and 3: finishes `in` (after a hand-off: the commit; ECANCELED in
// a dry run) and creates the session again, for its files to be preserved
// again.
inline Session reown(Orchestrator& o, Session& in, std::string_view name) {
    in.finish();
    return o.create_session(name);
}

}  // namespace liveupdate
