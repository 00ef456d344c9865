// SPDX-License-Identifier: Apache-2.0
#include "trace.hpp"

#include <linux/ioctl.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <unordered_map>

#include "liveupdate/uapi.h"
#include "wire.h"

namespace lu {

namespace {

using nlohmann::json;

class Ring {
public:
    void add(std::string line) {
        if (lines_.size() == kTraceLines) lines_.pop_front();
        lines_.push_back(std::move(line));
        next_++;
    }
    uint64_t next() const { return next_; }
    uint64_t first() const { return next_ - lines_.size(); }
    const std::string& at(uint64_t seq) const { return lines_[seq - first()]; }

private:
    std::deque<std::string> lines_;
    uint64_t next_ = 0;  // the sequence number of the next line
};

Ring& ring() {
    static Ring r;
    return r;
}

// /proc/PID/comm, cached: read once per pid, not once per request. A
// recycled pid may show its previous owner's name until the cache is
// cleared (at 1024 pids).
std::string comm_of(pid_t pid) {
    static std::unordered_map<pid_t, std::string> cache;
    if (pid <= 0) return "?";
    if (auto it = cache.find(pid); it != cache.end()) return it->second;
    std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    if (!std::getline(f, name)) name = "?";
    if (cache.size() >= 1024) cache.clear();
    cache.emplace(pid, name);
    return name;
}

const char* command_name(unsigned nr) {
    switch (nr) {
        case LIVEUPDATE_CMD_CREATE_SESSION: return "CREATE_SESSION";
        case LIVEUPDATE_CMD_RETRIEVE_SESSION: return "RETRIEVE_SESSION";
        case LIVEUPDATE_CMD_SESSION_PRESERVE_FD: return "PRESERVE_FD";
        case LIVEUPDATE_CMD_SESSION_RETRIEVE_FD: return "RETRIEVE_FD";
        case LIVEUPDATE_CMD_SESSION_FINISH: return "FINISH";
        case LIVEUPDATE_CMD_SESSION_GET_NAME: return "GET_NAME";
        default: return nullptr;
    }
}

// What a preserved fd is, as an agent would name it.
std::string fd_type(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return "bad";
    if (S_ISSOCK(st.st_mode)) return "socket";
    if (S_ISFIFO(st.st_mode)) return "pipe";
    if (S_ISCHR(st.st_mode)) return "chr";
    if (S_ISDIR(st.st_mode)) return "dir";
    if (!S_ISREG(st.st_mode)) return "other";
    // The memfd handler's own test (unlinked, on shmem), not the link's
    // "/memfd:" name: reading a /proc link costs more than the request.
    struct statfs sfs;
    return st.st_nlink == 0 && fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC ? "memfd" : "file";
}

// A session name as JSON quotes it: any byte can be in it.
std::string quoted(const std::string& name) {
    return json(name).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string timestamp() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    localtime_r(&ts.tv_sec, &t);
    char buf[40];
    size_t n = strftime(buf, sizeof buf, "%H:%M:%S", &t);
    snprintf(buf + n, sizeof buf - n, ".%03ld", ts.tv_nsec / 1000000);
    return buf;
}

std::string errno_name(int err) {
    const char* n = err ? strerrorname_np(err) : "0";
    return n ? n : std::to_string(err);
}

void record(pid_t pid, const std::string& what, int err) {
    std::string line = "pid " + std::to_string(pid) + " (" + comm_of(pid) + ") " + what + " = " +
                       errno_name(err);
    spdlog::debug("uapi: {}", line);
    ring().add(timestamp() + " " + line);
}

}  // namespace

TraceEntry trace_begin(const Conn& c, const Message& m) {
    TraceEntry e;
    e.pid = m.pid > 0 ? m.pid : c.pid;
    lu_wire_request req{};
    if (m.truncated || m.bytes.size() < sizeof req) {
        e.what = "(malformed request)";
        return e;
    }
    memcpy(&req, m.bytes.data(), sizeof req);
    std::span<const uint8_t> arg(m.bytes.data() + sizeof req, m.bytes.size() - sizeof req);
    unsigned nr = _IOC_NR(req.cmd);
    const char* name = _IOC_TYPE(req.cmd) == LIVEUPDATE_IOCTL_TYPE ? command_name(nr) : nullptr;
    if (name) {
        e.what = name;
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "ioctl(%#x)", req.cmd);
        e.what = buf;
    }
    bool control = c.kind == Conn::Kind::Control;
    if (!control && c.session) e.what += " session=" + quoted(c.session->name());
    if (control && name && arg.size() >= 8 + kSessionNameLength) {
        const char* p = reinterpret_cast<const char*>(arg.data() + 8);
        e.what += " name=" + quoted(std::string(p, strnlen(p, kSessionNameLength)));
    }
    if ((nr == LIVEUPDATE_CMD_SESSION_PRESERVE_FD || nr == LIVEUPDATE_CMD_SESSION_RETRIEVE_FD) &&
        !control && arg.size() >= 16) {
        uint64_t token;
        memcpy(&token, arg.data() + 8, sizeof token);
        e.what += " token=" + std::to_string(token);
    }
    if (nr == LIVEUPDATE_CMD_SESSION_PRESERVE_FD && !control)
        e.what += " fd=" + (m.fds.size() == 1 ? fd_type(m.fds[0].get()) : std::string("none"));
    return e;
}

void trace_end(const TraceEntry& e, int err) { record(e.pid, e.what, err); }

void trace_open(pid_t pid, int err) { record(pid, "open(/dev/liveupdate)", err); }

void enable_sender_pid(int sock) {
    int on = 1;
    setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
}

void handle_trace_request(Server& server, AdminRef admin, const json& req) {
    const Ring& r = ring();
    uint64_t since = r.first();
    if (req.contains("since")) {
        if (!req["since"].is_number_unsigned()) {
            server.admin_reply(admin, json{{"ok", false}, {"errno", EINVAL},
                                           {"error", "trace: bad \"since\""}}.dump());
            return;
        }
        since = std::max<uint64_t>(req["since"].get<uint64_t>(), r.first());
        if (since > r.next()) since = r.first();  // another instance's sequence: start over
    }
    json lines = json::array();
    for (uint64_t s = since; s < r.next(); s++) lines.push_back(r.at(s));
    json reply{{"ok", true}, {"first", since}, {"next", r.next()}, {"lines", std::move(lines)}};
    if (req.contains("since") && req["since"].get<uint64_t>() < r.first() && r.first() > 0)
        reply["dropped"] = r.first() - req["since"].get<uint64_t>();
    server.admin_reply(admin, reply.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace lu
