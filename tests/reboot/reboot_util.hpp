// SPDX-License-Identifier: Apache-2.0
// Helpers for the live-update tests: real daemon processes (support/
// daemon_process.hpp), real fds, and checks that say what they compared.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/daemon_process.hpp"

namespace lu::reboot_test {

using nlohmann::json;
using Bytes = std::vector<uint8_t>;
using lu::testing::DaemonProcess;

// An owned fd.
class Fd {
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    bool ok() const { return fd_ >= 0; }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline Bytes random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    Bytes b(n);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng();
        memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return b;
}

inline bool pwrite_all(int fd, const Bytes& b, off_t off) {
    for (size_t done = 0; done < b.size();) {
        ssize_t n = pwrite(fd, b.data() + done, b.size() - done, off + static_cast<off_t>(done));
        if (n <= 0) return false;
        done += static_cast<size_t>(n);
    }
    return true;
}

// A memfd holding bytes, position 0.
inline Fd make_memfd(const char* name, const Bytes& bytes,
                     unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING) {
    Fd fd(memfd_create(name, flags));
    if (fd.ok() && !pwrite_all(fd.get(), bytes, 0)) fd.reset();
    return fd;
}

// The whole file, read without moving the position.
inline Bytes contents(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return {};
    Bytes b(static_cast<size_t>(st.st_size));
    for (size_t done = 0; done < b.size();) {
        ssize_t n = pread(fd, b.data() + done, b.size() - done, static_cast<off_t>(done));
        if (n <= 0) return {};
        done += static_cast<size_t>(n);
    }
    return b;
}

inline off_t file_size(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}
inline off_t position(int fd) {
    return lseek(fd, 0, SEEK_CUR);
}

// The first differing offset, for messages (a 1 MiB dump helps nobody).
inline std::string diff(const Bytes& got, const Bytes& want) {
    if (got == want) return "equal";
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) i++;
    std::ostringstream os;
    os << "sizes " << got.size() << " vs " << want.size() << ", first difference at " << i;
    return os.str();
}

inline std::string session_name(int session, int* err = nullptr) {
    char name[LIVEUPDATE_SESSION_NAME_LENGTH] = {};
    int r = lu_get_name(session, name);
    if (err) *err = r;
    if (r) return "<" + std::string(strerror(-r)) + ">";
    return std::string(name, strnlen(name, sizeof name));
}

// The status entry of a session (direction "outgoing"/"incoming", or any), or null.
inline json find_session(const json& status, const std::string& name,
                         const char* direction = nullptr) {
    if (!status.is_object() || !status.contains("sessions")) return {};
    for (const auto& s : status["sessions"])
        if (s.value("name", "") == name && (!direction || s.value("direction", "") == direction))
            return s;
    return {};
}

inline std::set<uint64_t> tokens_of(const json& session) {
    std::set<uint64_t> t;
    if (session.is_object() && session.contains("files"))
        for (const auto& f : session["files"]) t.insert(f.value("token", uint64_t{0}));
    return t;
}

inline int64_t num(const json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<int64_t>() : -1;
}
inline std::string str(const json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

template <class T>
std::string list(const T& c) {
    std::ostringstream os;
    os << "{";
    for (const auto& x : c) os << " " << x;
    os << " }";
    return os.str();
}

// A TCP listener on 127.0.0.1, port chosen by the kernel.
inline Fd tcp_listener(uint16_t* port) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (!fd.ok() || bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
        listen(fd.get(), 16) < 0 ||
        getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) < 0)
        return Fd();
    *port = ntohs(a.sin_port);
    return fd;
}

inline uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0 || a.sin_family != AF_INET)
        return 0;
    return ntohs(a.sin_port);
}

inline uint16_t peer_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0 || a.sin_family != AF_INET)
        return 0;
    return ntohs(a.sin_port);
}

inline Fd tcp_connect(uint16_t port) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd.ok() || connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return Fd();
    return fd;
}

// Accepts one connection, waiting at most timeout_ms for it (a liveness
// bound, not a timing assertion).
inline Fd accept_one(int listener, int timeout_ms = 20000) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return Fd();
    return Fd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// Sends msg on a, receives it on b (bounded wait).
inline bool flows(int a, int b, const std::string& msg) {
    if (send(a, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
        return false;
    std::string got;
    while (got.size() < msg.size()) {
        pollfd p{b, POLLIN, 0};
        if (poll(&p, 1, 20000) != 1) return false;
        char buf[256];
        ssize_t n = recv(b, buf, std::min(sizeof buf, msg.size() - got.size()), 0);
        if (n <= 0) return false;
        got.append(buf, static_cast<size_t>(n));
    }
    return got == msg;
}

// True if pid is a child of ours that has not exited: only those may be
// killed by a test (it is one of the daemon instances, which all end up
// our children: we are their subreaper).
inline bool is_our_live_child(pid_t pid) {
    if (pid <= 0) return false;
    siginfo_t si{};
    return waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == 0;
}

// A process's command line, its arguments joined by spaces ("" if gone).
inline std::string cmdline_of(pid_t pid) {
    std::string s;
    int fd = open(("/proc/" + std::to_string(pid) + "/cmdline").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
    close(fd);
    std::replace(s.begin(), s.end(), '\0', ' ');
    return s;
}

// The children of a daemon (its next instance, while one runs), if the
// kernel tells (CONFIG_PROC_CHILDREN). Its keeper (--keeper), started with
// the first instance and kept for the life of the state, is not counted.
inline std::optional<std::vector<pid_t>> children_of(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    if (!f) return std::nullopt;
    std::vector<pid_t> v;
    pid_t c;
    while (f >> c)
        if (cmdline_of(c).find(" --keeper") == std::string::npos) v.push_back(c);
    return v;
}

// A process's open fds and what they are ("3 -> socket:[123]"), for messages.
inline std::set<std::string> fd_listing(pid_t pid) {
    std::set<std::string> out;
    std::error_code ec;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        std::error_code ec2;
        auto target = std::filesystem::read_symlink(it->path(), ec2);
        out.insert(it->path().filename().string() + " -> " + target.string());
    }
    return out;
}

// The fd count of an idle daemon: the listing, once two readings a little
// apart agree and hold no admin reply in flight (a status request's reply
// memfd and connection close just after the client has its answer).
inline size_t settled_fd_count(pid_t pid) {
    std::set<std::string> last = fd_listing(pid);
    for (int i = 0; i < 200; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::set<std::string> now = fd_listing(pid);
        bool transient = std::any_of(now.begin(), now.end(), [](const std::string& e) {
            return e.find("liveupdate-admin-reply") != std::string::npos;
        });
        if (now == last && !transient) return now.size();
        last = std::move(now);
    }
    return last.size();
}

// VmRSS of a process, in KiB, or -1.
inline long vm_rss_kb(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// A liveness guard: if the guarded section is still running after `limit`,
// it records a failure and SIGKILLs the daemon instances it watches (only
// those still our live children), which unblocks any client call waiting on
// them, so the test ends instead of hanging. Not a timing assertion: the
// limit is tens of seconds for what takes milliseconds.
class Deadline {
  public:
    Deadline(std::string what, std::vector<pid_t> pids,
             std::chrono::seconds limit = std::chrono::seconds(60))
        : what_(std::move(what)), pids_(std::move(pids)) {
        thread_ = std::thread([this, limit] {
            std::unique_lock<std::mutex> l(mu_);
            if (cv_.wait_for(l, limit, [this] { return done_; })) return;
            expired_ = true;
            for (pid_t p : pids_)
                if (is_our_live_child(p)) kill(p, SIGKILL);
        });
    }
    void watch(pid_t pid) {
        std::lock_guard<std::mutex> l(mu_);
        pids_.push_back(pid);
    }
    ~Deadline() {
        {
            std::lock_guard<std::mutex> l(mu_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
        if (expired_) ADD_FAILURE() << what_ << ": still blocked after the liveness deadline";
    }

  private:
    std::string what_;
    std::vector<pid_t> pids_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    bool expired_ = false;
    std::thread thread_;
};

// Status, asked again if a request goes unanswered (see
// RebootHandover.AdminStatusServedThroughoutUpdates: an update in progress
// can drop one).
inline json status_retry(const DaemonProcess& d) {
    json s;
    for (int i = 0; i < 100 && (s = d.status()).is_null(); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return s;
}

// Polls status until pred holds (at most ~20 s); returns the last status.
template <class Pred>
json wait_status(const DaemonProcess& d, Pred pred) {
    json s;
    for (int i = 0; i < 2000; i++) {
        s = d.status();
        if (!s.is_null() && pred(s)) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return s;
}

}  // namespace lu::reboot_test
