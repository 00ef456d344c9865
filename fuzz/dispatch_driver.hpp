// SPDX-License-Identifier: Apache-2.0
// The driver of dispatch_fuzz: the daemon's real request path in-process,
// over real sockets. Shared by the fuzz target and any regression test that
// replays one of its inputs (so a replay takes exactly the same path).
//
// Made once: a temporary runtime directory with the control and admin
// listeners (as liveupdated's listen_in), the fds a client may attach (a
// memfd, a pipe end, /dev/null, a TCP listener on 127.0.0.1:0) and an
// incoming handover (a donor engine froze three sessions: memfds, a socket,
// one memfd whose size changed after the freeze so its retrieve fails, and
// an empty session).
//
// Per input, fresh (so an input replays alone exactly as in a run): a Daemon
// started from a handover, as liveupdated's next instance is (daemon.hpp),
// over dups of the listeners, that deserializes that handover (fds dup'ed).
// The input's operations (dispatch_ops.hpp) run one at a time: each send is
// followed by turns of Server::run_once(0) until the loop is idle and the
// replies are read (every fd received is closed, session fds are kept).
// Admin requests that contain "reboot" (or a backslash, which could spell
// it) are skipped: a reboot would spawn a process.
//
// DISPATCH_FUZZ_TRACE=1 in the environment prints each operation and reply.
//
// Checked (a violation is returned as a message; the fuzz target aborts):
//   - every reply is well-formed (magic, lengths, fd count, errno range) and
//     every message sent gets exactly one, on its connection (an empty
//     message too), unless the client shut that socket down;
//   - the control hello of a reconnect is 0: the previous holder has closed;
//   - after every operation, with the loop idle: a session is listed by the
//     engine exactly while the client holds a copy of its fd (a retrieved
//     incoming one may stay orphaned after its release);
//   - at the end, with every fd of the client closed and the loop idle: the
//     connection count is back to the listeners, the engine's file count
//     matches its sessions, and the process holds exactly the fds it held
//     before the input, plus those the engine still owns for incoming files;
//     after the instance is destroyed, exactly the fds it held before.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch_ops.hpp"
#include "engine.hpp"
#include "handlers/memfd_handler.hpp"
#include "handlers/socket_handler.hpp"
#include "daemon.hpp"
#include "server.hpp"
#include "unique_fd.hpp"
#include "wire.h"

namespace dispatch_fuzz {

inline int count_fds() {
    DIR* d = opendir("/proc/self/fd");
    if (!d) abort();
    int n = 0;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;  // the directory's own fd
}

class Driver {
  public:
    // known_bugs: also run the operations that reach bugs not fixed yet
    // (KNOWN_BUGS below). The fuzz target skips them unless asked, so it can
    // look past them; regression tests replay everything.
    explicit Driver(bool known_bugs = true) : known_bugs_(known_bugs) {
        signal(SIGPIPE, SIG_IGN);
        spdlog::set_level(spdlog::level::off);
        char tmpl[] = "/tmp/lu-dispatch-fuzz-XXXXXX";
        if (!mkdtemp(tmpl)) die("mkdtemp");
        dir_ = tmpl;
        control_l_ = listen_at(dir_ + "/control");
        admin_l_ = listen_at(dir_ + "/admin");
        memfd_.reset(memfd_create("fuzz-attach", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) die("pipe2");
        pipe_r_.reset(p[0]);
        pipe_w_.reset(p[1]);
        devnull_.reset(open("/dev/null", O_RDWR | O_CLOEXEC));
        tcp_ = tcp_listener();
        if (!memfd_ || !devnull_) die("attachable fds");
        make_handover();
    }
    ~Driver() { remove_runtime_dir(); }
    // Also called by the fuzz target before it aborts (no destructor runs then).
    void remove_runtime_dir() {
        unlink((dir_ + "/control").c_str());
        unlink((dir_ + "/admin").c_str());
        rmdir(dir_.c_str());
    }
    Driver(const Driver&) = delete;
    Driver& operator=(const Driver&) = delete;

    // "" or what went wrong.
    std::string run(std::span<const uint8_t> input) {
        const int before = count_fds();
        std::string why;
        {
            Instance inst(*this);
            why = inst.play(input);
        }
        const int after = count_fds();
        if (why.empty() && after != before)
            why = "the process holds " + std::to_string(after) + " fds after the instance, " +
                  std::to_string(before) + " before";
        return why;
    }

  private:
    [[noreturn]] static void die(const char* what) {
        fprintf(stderr, "dispatch driver setup: %s: %s\n", what, strerror(errno));
        abort();
    }

    static lu::UniqueFd listen_at(const std::string& path) {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (path.size() >= sizeof addr.sun_path) die("socket path too long");
        memcpy(addr.sun_path, path.c_str(), path.size() + 1);
        lu::UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
            listen(fd.get(), SOMAXCONN) < 0)
            die("listen");
        return fd;
    }

    static lu::UniqueFd tcp_listener() {
        lu::UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
            listen(fd.get(), 4) < 0)
            die("tcp listener");
        return fd;
    }

    static lu::UniqueFd memfd_with(std::string_view bytes) {
        lu::UniqueFd fd(memfd_create("fuzz-incoming", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd ||
            write(fd.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
            die("memfd");
        return fd;
    }

    // What every instance deserializes: the handover of a donor engine.
    void make_handover() {
        donor_ = std::make_unique<lu::Engine>();
        donor_->register_file_handler(std::make_unique<lu::MemfdHandler>());
        donor_->register_file_handler(std::make_unique<lu::SocketHandler>([](int) { return false; }));
        auto name = [](const char* s) {
            static uint8_t raw[lu::kSessionNameLength];
            memset(raw, 0, sizeof raw);
            memcpy(raw, s, strlen(s));
            return std::span<const uint8_t, lu::kSessionNameLength>(raw);
        };
        lu::Session *a, *b, *c;
        lu::UniqueFd resized = memfd_with("grows after the freeze");
        const int resized_fd = resized.get();
        bool ok = donor_->create_session(name("incoming-a"), &a) == 0 &&
                  donor_->preserve_fd(a, 1, memfd_with("memfd one")) == 0 &&
                  donor_->preserve_fd(a, 2, memfd_with("")) == 0 &&
                  donor_->create_session(name("incoming-b"), &b) == 0 &&
                  donor_->preserve_fd(b, 3, tcp_listener()) == 0 &&
                  donor_->preserve_fd(b, 4, std::move(resized)) == 0 &&
                  donor_->create_session(name("incoming-c"), &c) == 0 &&
                  donor_->reboot_freeze() == 0;
        if (!ok) die("donor engine");
        handover_ = donor_->handover();
        if (ftruncate(resized_fd, 4096) < 0) die("ftruncate");  // its retrieve fails: EINVAL
    }

    // One daemon instance and the client side of one input.
    class Instance {
      public:
        explicit Instance(Driver& d) : d_(d) {
            // Built as liveupdated builds its next instance (daemon.hpp), but
            // with no real binary: a reboot could not start one (and is
            // filtered anyway).
            std::string why;
            lu::DaemonConfig config;
            config.self_exe = "/nonexistent/liveupdated";
            config.runtime_dir = d.dir_;
            daemon_ = lu::Daemon::from_handover(
                config,
                lu::UniqueFd(fcntl(d.control_l_.get(), F_DUPFD_CLOEXEC, 0)),
                lu::UniqueFd(fcntl(d.admin_l_.get(), F_DUPFD_CLOEXEC, 0)), &why);
            if (!daemon_) die(why.c_str());
            std::vector<lu::UniqueFd> fds;
            for (int fd : d.handover_.fds) fds.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 0));
            if (daemon_->deserialize(d.handover_.image, std::move(fds)) != 0) die("deserialize");
        }
        ~Instance() {
            // The client's fds first, then the daemon (as a process exit would).
            control_.reset();
            sessions_.clear();
            daemon_.reset();
        }
        Instance(const Instance&) = delete;
        Instance& operator=(const Instance&) = delete;

        std::string play(std::span<const uint8_t> in) {
            const size_t base_conns = server().connections();
            const int base_fds = count_fds() - engine_fds();
            size_t pos = 0;
            for (size_t n = 0; n < kMaxOps && pos < in.size() && why_.empty(); n++) {
                const uint8_t op = in[pos] % kNumOps;
                const uint8_t arg = pos + 1 < in.size() ? in[pos + 1] : 0;
                size_t len = pos + 3 < in.size() ? in[pos + 2] | in[pos + 3] << 8 : 0;
                pos = std::min(pos + 4, in.size());
                len = std::min(len, in.size() - pos);
                step(static_cast<Op>(op), arg, in.subspan(pos, len));
                if (why_.empty()) check_sessions();
                pos += len;
            }
            if (!why_.empty()) return why_;

            control_.reset();
            sessions_.clear();
            settle();
            if (!why_.empty()) return why_;
            check_sessions();
            if (!why_.empty()) return why_;
            size_t files = 0;
            for (const lu::Session& s : engine().incoming()) files += s.files().size();
            if (engine().preserved_files() != files)
                return "the engine counts " + std::to_string(engine().preserved_files()) +
                       " preserved files, its sessions hold " + std::to_string(files);
            if (server().connections() != base_conns)
                return std::to_string(server().connections()) + " server connections left, " +
                       std::to_string(base_conns) + " at the start";
            if (server().control_connected()) return "the control connection is still held";
            const int fds = count_fds() - engine_fds();
            if (fds != base_fds)
                return "fd count " + std::to_string(fds) + " (not counting the engine's), " +
                       std::to_string(base_fds) + " at the start";
            return "";
        }

      private:
        // A session fd the client holds, and the session's name (from the
        // reply that handed it out).
        struct Held {
            lu::UniqueFd fd;
            std::string name;
        };

        void fail(std::string why) {
            if (why_.empty()) why_ = std::move(why);
        }

        // The fds the engine owns for incoming files (it closes them at finish).
        int engine_fds() const {
            int n = static_cast<int>(engine().leaked_fds());
            for (const lu::Session& s : engine().incoming())
                for (const auto& f : s.files()) n += !!f->file + !!f->preserved;
            return n;
        }

        bool held(const std::string& name) const {
            for (const Held& h : sessions_)
                if (h.name == name) return true;
            return false;
        }

        // With the loop idle: a session lives exactly while the client holds
        // a copy of its fd (an incoming one, once retrieved, until released;
        // released with a handler refusing to finish, it stays orphaned).
        void check_sessions() {
            for (const Held& h : sessions_) {
                bool listed = false;
                for (const auto* list : {&engine().outgoing(), &engine().incoming()})
                    for (const lu::Session& s : *list) listed |= s.name() == h.name;
                if (!listed)
                    return fail("session \"" + h.name + "\" released while its fd is held");
            }
            for (const lu::Session& s : engine().outgoing())
                if (!held(s.name()))
                    return fail("outgoing session \"" + s.name() + "\" no fd refers to");
            for (const lu::Session& s : engine().incoming())
                if (s.retrieved() && !s.orphaned() && !held(s.name()))
                    return fail("incoming session \"" + s.name() +
                                "\" retrieved, no fd refers to it");
        }

        int pick(uint8_t arg) const {
            return sessions_.empty() ? -1
                                     : static_cast<int>((arg >> kSessionShift) % sessions_.size());
        }

        void step(Op op, uint8_t arg, std::span<const uint8_t> payload) {
            const int sel = pick(arg);
            if (d_.trace_)
                fprintf(stderr, "op %d arg 0x%02x len %zu session %d of %zu\n", op, arg,
                        payload.size(), sel, sessions_.size());
            switch (op) {
                case kControlRaw:
                case kControlReq:
                    if (!control_ && !open_control()) return;
                    request(control_.get(), op == kControlReq, arg, sel, payload);
                    break;
                case kSessionRaw:
                case kSessionReq:
                    if (sel < 0) return;
                    request(sessions_[sel].fd.get(), op == kSessionReq, arg, sel, payload);
                    break;
                case kAdmin:
                    admin(payload);
                    break;
                case kCloseSession:
                    if (sel < 0) return;
                    sessions_.erase(sessions_.begin() + sel);
                    settle();
                    break;
                case kDupSession:
                    if (sel < 0 || sessions_.size() >= kMaxSessions) return;
                    sessions_.push_back(
                        {lu::UniqueFd(fcntl(sessions_[sel].fd.get(), F_DUPFD_CLOEXEC, 0)),
                         sessions_[sel].name});
                    break;
                case kCloseControl:
                    control_.reset();
                    settle();
                    break;
                case kBurst:
                    if (sel < 0 && !control_ && !open_control()) return;
                    burst(sel < 0 ? control_.get() : sessions_[sel].fd.get(), 1 + (arg & 31) * 32,
                          payload);
                    break;
                case kSendThenClose:
                    send_then_close(arg, sel, payload);
                    break;
                case kShutdown: {
                    if (sel < 0 && !control_ && !open_control()) return;
                    const int fd = sel < 0 || (arg & 4) ? control_.get() : sessions_[sel].fd.get();
                    if (fd < 0) return;
                    const int how = (arg & 3) == 3 ? SHUT_RDWR : arg & 3;
                    const unsigned dirs = how == SHUT_RD ? 1 : how == SHUT_WR ? 2 : 3;
                    unsigned& shut = shut_[inode(fd)];
                    // KNOWN_BUGS: a socket shut in both directions (at once or
                    // not) reads as closed: its session is released while held
                    // (tests/daemon_fuzz, KnownBug_ShutdownReleasesHeldSession).
                    if ((shut | dirs) == 3 && !d_.known_bugs_) return;
                    shut |= dirs;
                    shutdown(fd, how);
                    settle();
                    break;
                }
                case kNumOps:
                    break;
            }
        }

        // Turns of the loop until it has nothing left to do.
        void settle() {
            for (int turns = 0;; turns++) {
                if (turns == 10000) return fail("the event loop does not become idle");
                const int n = server().run_once(0);
                if (n < 0) return fail("run_once failed");
                if (n == 0) return;
            }
        }

        static lu::UniqueFd connect_to(const std::string& path) {
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            memcpy(addr.sun_path, path.c_str(), path.size() + 1);
            lu::UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
            if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
                die("connect");
            return fd;
        }

        static bool send_with(int sock, std::span<const uint8_t> bytes,
                              const std::vector<int>& fds) {
            iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * 8)];
            if (!fds.empty()) {
                msg.msg_control = control;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
                cmsghdr* c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
                memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
            }
            return sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
        }

        static ino_t inode(int fd) {
            struct stat st;
            return fd >= 0 && fstat(fd, &st) == 0 ? st.st_ino : 0;
        }

        struct Reply {
            lu_wire_reply hdr{};
            std::vector<uint8_t> arg;
            std::vector<lu::UniqueFd> fds;
        };

        // One message from sock if there is one: 1, else 0 (nothing, EOF or
        // error). A malformed reply is a failure.
        int receive(int sock, Reply* r) {
            uint8_t buf[4096];
            alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * 253)];
            iovec iov{buf, sizeof buf};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            const ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0) return 0;
            r->fds.clear();
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    r->fds.emplace_back(fd);
                }
            }
            if (n == 0 && r->fds.empty()) return 0;  // EOF (the daemon never sends empty messages)
            const size_t len = static_cast<size_t>(n);
            if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return fail("a reply was truncated"), 0;
            if (len < sizeof r->hdr) return fail("a reply shorter than its header"), 0;
            memcpy(&r->hdr, buf, sizeof r->hdr);
            r->arg.assign(buf + sizeof r->hdr, buf + len);
            const lu_wire_reply& h = r->hdr;
            if (h.magic != LU_WIRE_MAGIC) return fail("a reply with a bad magic"), 0;
            if (h.arg_len != len - sizeof h || h.arg_len > LU_WIRE_MAX_ARG)
                return fail("a reply whose arg_len is not its length"), 0;
            if (h.nr_fds != r->fds.size() || h.nr_fds > 1)
                return fail("a reply whose nr_fds is not the fds attached"), 0;
            if (h.err < 0 || h.err > 4095)
                return fail("a reply with errno " + std::to_string(h.err)), 0;
            if (h.err && (h.arg_len || h.nr_fds))
                return fail("a failed reply that carries data"), 0;
            if (d_.trace_)
                fprintf(stderr, "  reply: errno %d, %u bytes, %u fds\n", h.err, h.arg_len,
                        h.nr_fds);
            return 1;
        }

        // Reads every pending reply of the client's connections. Returns how
        // many arrived on the socket `target_ino` (any copy of it); a reply
        // elsewhere fails.
        int drain(ino_t target_ino) {
            int on_target = 0;
            // Index loops: a control reply may add a session.
            for (size_t i = 0; i <= sessions_.size(); i++) {
                const int sock = i == 0 ? control_.get() : sessions_[i - 1].fd.get();
                if (sock < 0) continue;
                Reply r;
                while (why_.empty() && receive(sock, &r) == 1) {
                    if (inode(sock) != target_ino) return fail("an unsolicited reply"), 0;
                    on_target++;
                    if (i > 0) continue;  // RETRIEVE_FD's file, closed with r
                    if (r.hdr.err == 0 && r.fds.size() != 1)
                        return fail("a control request succeeded without a session fd"), 0;
                    // CREATE/RETRIEVE_SESSION: the name is in the struct written back.
                    if (r.fds.empty() || sessions_.size() >= kMaxSessions) continue;
                    if (r.arg.size() < 8 + lu::kSessionNameLength)
                        return fail("a session handed out with a short reply"), 0;
                    const char* name = reinterpret_cast<const char*>(r.arg.data() + 8);
                    sessions_.push_back({std::move(r.fds[0]),
                                         std::string(name, strnlen(name, lu::kSessionNameLength))});
                }
            }
            return on_target;
        }

        // Settles the loop and reads replies until neither has work left.
        int settle_and_drain(ino_t target_ino) {
            int replies = 0;
            for (int round = 0; round < 1000 && why_.empty(); round++) {
                settle();
                const int got = drain(target_ino);
                if (got == 0) break;
                replies += got;
            }
            return replies;
        }

        bool was_shut(ino_t ino) const { return shut_.count(ino) != 0; }

        // Every message sent gets exactly one reply (an empty one too: it is
        // a malformed request, not an end of file), unless the client shut
        // the socket down (then its replies may be refused).
        void expect_replies(ino_t ino, int sent, int replies, const char* what) {
            if (why_.empty() && replies != sent && !(was_shut(ino) && replies < sent))
                fail(std::to_string(replies) + " replies to " + std::to_string(sent) + " " + what);
        }

        bool open_control() {
            control_ = connect_to(d_.dir_ + "/control");
            settle();
            Reply hello;
            if (receive(control_.get(), &hello) != 1) {
                fail("no hello on the control connection");
                return false;
            }
            if (hello.hdr.err != 0 || hello.hdr.arg_len != 0 || hello.hdr.nr_fds != 0) {
                fail("control hello: errno " + std::to_string(hello.hdr.err) +
                     " though the client holds no other control connection");
                return false;
            }
            return true;
        }

        std::vector<int> attachments(uint8_t arg, int sel) const {
            std::vector<int> fds;
            if (arg & kMemfd) fds.push_back(d_.memfd_.get());
            if (arg & kPipe) fds.push_back(d_.pipe_r_.get());
            if (arg & kDevNull) fds.push_back(d_.devnull_.get());
            if (arg & kTcpListener) fds.push_back(d_.tcp_.get());
            if ((arg & kSessionSelf) && sel >= 0) fds.push_back(sessions_[sel].fd.get());
            return fds;
        }

        // The wire message of a kControlReq-style payload.
        static std::vector<uint8_t> build_request(std::span<const uint8_t> payload) {
            const uint8_t selector = payload.empty() ? 0 : payload[0];
            const auto rest = payload.empty() ? payload : payload.subspan(1);
            lu_wire_request req{LU_WIRE_MAGIC, kCmds[selector & 7],
                                static_cast<uint32_t>((selector >> 3) & 7),
                                static_cast<uint32_t>(rest.size())};
            std::vector<uint8_t> bytes(sizeof req);
            memcpy(bytes.data(), &req, sizeof req);
            bytes.insert(bytes.end(), rest.begin(), rest.end());
            return bytes;
        }

        void request(int sock, bool build, uint8_t arg, int sel, std::span<const uint8_t> payload) {
            std::vector<uint8_t> bytes;
            if (build)
                bytes = build_request(payload);
            else
                bytes.assign(payload.begin(), payload.end());
            const bool sent = send_with(sock, bytes, attachments(arg, sel));
            const ino_t ino = inode(sock);
            expect_replies(ino, sent, settle_and_drain(ino), "request");
        }

        // Requests sent before any reply is read: the daemon's replies fill
        // the socket and it must hold the rest (and stop reading) until the
        // client reads. Every request sent still gets exactly one reply.
        void burst(int sock, int count, std::span<const uint8_t> payload) {
            const std::vector<uint8_t> bytes = build_request(payload);
            int sent = 0;
            while (sent < count) {
                if (send_with(sock, bytes, {})) {
                    sent++;
                    continue;
                }
                settle();  // the daemon reads (and replies) until the client's replies back up
                if (!why_.empty() || !send_with(sock, bytes, {})) break;
                sent++;
            }
            const ino_t ino = inode(sock);
            expect_replies(ino, sent, settle_and_drain(ino), "requests of a burst");
        }

        // A request, then the client closes that fd before the daemon reads
        // it: the daemon still runs it (a close does not cancel an ioctl in
        // flight), and a session it creates has nobody to go to. Another copy
        // of a session fd may still get the reply.
        void send_then_close(uint8_t arg, int sel, std::span<const uint8_t> payload) {
            const bool to_control = !payload.empty() && (payload[0] & 0x80);
            if (!to_control && sel < 0) return;
            if (to_control && !control_ && !open_control()) return;
            const int fd = to_control ? control_.get() : sessions_[sel].fd.get();
            const ino_t ino = inode(fd);
            send_with(fd, build_request(payload), attachments(arg, sel));
            if (to_control)
                control_.reset();
            else
                sessions_.erase(sessions_.begin() + sel);
            if (settle_and_drain(ino) > 1 && why_.empty()) fail("2 replies to one request");
        }

        void admin(std::span<const uint8_t> payload) {
            const std::string_view text(reinterpret_cast<const char*>(payload.data()),
                                        payload.size());
            if (text.find("reboot") != text.npos || text.find('\\') != text.npos) return;
            lu::UniqueFd sock = connect_to(d_.dir_ + "/admin");
            const bool sent = send_with(sock.get(), payload, {});
            settle();
            Reply r;
            int replies = 0;
            while (why_.empty() && receive(sock.get(), &r) == 1) {
                replies++;
                if (r.hdr.err == 0 && r.fds.size() != 1) fail("an admin reply without its memfd");
            }
            expect_replies(0, sent, replies, "admin requests");
            sock.reset();
            settle();
        }

        lu::Engine& engine() const { return daemon_->engine(); }
        lu::Server& server() const { return daemon_->server(); }

        Driver& d_;
        std::unique_ptr<lu::Daemon> daemon_;
        lu::UniqueFd control_;
        std::vector<Held> sessions_;
        std::map<ino_t, unsigned> shut_;  // sockets the client shut down: 1 read, 2 write
        std::string why_;
    };

    const bool known_bugs_;
    const bool trace_ = getenv("DISPATCH_FUZZ_TRACE") != nullptr;
    std::string dir_;
    lu::UniqueFd control_l_, admin_l_, memfd_, pipe_r_, pipe_w_, devnull_, tcp_;
    std::unique_ptr<lu::Engine> donor_;
    lu::Handover handover_;
};

}  // namespace dispatch_fuzz
