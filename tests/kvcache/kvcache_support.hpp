// SPDX-License-Identifier: Apache-2.0
// kvcache as a real process for the tests, and a tiny memcached text client.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kvtest {

// kvcache with its stderr in a file. runtime_dir: the liveupdated to use
// ("" = none: the cache runs without persistence).
class KvProcess {
  public:
    explicit KvProcess(std::vector<std::string> args, const std::string& runtime_dir = "") {
        char tmpl[] = "/tmp/kvcache-test-XXXXXX";
        const int fd = mkstemp(tmpl);
        log_path_ = tmpl;
        std::vector<std::string> argv_s{KVCACHE_PATH};
        argv_s.insert(argv_s.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : argv_s) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env_s;
        for (char** e = environ; *e; e++)
            if (strncmp(*e, "LIVEUPDATE_RUNTIME_DIR=", 23) != 0) env_s.push_back(*e);
        env_s.push_back("LIVEUPDATE_RUNTIME_DIR=" +
                        (runtime_dir.empty() ? std::string("/nonexistent/kvcache-test") : runtime_dir));
        std::vector<char*> envp;
        for (auto& e : env_s) envp.push_back(e.data());
        envp.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fd, 2);
        EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data()), 0);
        posix_spawn_file_actions_destroy(&fa);
        close(fd);
    }
    // Ends it gracefully (so that sanitizers report at exit), and fails the
    // test on any sanitizer report in its log.
    ~KvProcess() {
        if (!exited()) {
            kill(pid_, SIGTERM);
            if (!wait_exit(10)) kill_now();
        }
        const std::string l = log();
        for (const char* bad : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"})
            EXPECT_EQ(l.find(bad), std::string::npos) << l;
        unlink(log_path_.c_str());
    }
    KvProcess(const KvProcess&) = delete;
    KvProcess& operator=(const KvProcess&) = delete;

    pid_t pid() const { return pid_; }
    std::string log() const {
        std::ifstream f(log_path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    // Waits (bounded) for text in the log; false if it never came or the
    // process died first.
    bool wait_for(const std::string& text, int seconds = 30) {
        for (int i = 0; i < seconds * 100; i++) {
            if (log().find(text) != std::string::npos) return true;
            if (exited()) return log().find(text) != std::string::npos;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
    // The port from "serving on ADDR port N"; 0 if not serving.
    int wait_serving() {
        if (!wait_for("serving on")) return 0;
        const std::string l = log();
        const size_t at = l.find(" port ", l.find("serving on"));
        return at == std::string::npos ? 0 : atoi(l.c_str() + at + 6);
    }
    // True once the process is gone. (DaemonProcess reaps any child too, so
    // the exit status may have been taken by it: status_ stays -1 then.)
    bool exited() {
        if (done_) return true;
        int st;
        const pid_t r = waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            done_ = true;
        } else if (r < 0 && errno == ECHILD) {
            done_ = true;
        }
        return done_;
    }
    bool wait_exit(int seconds = 30) {
        for (int i = 0; i < seconds * 100; i++) {
            if (exited()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
    int status() const { return status_; }
    void signal(int sig) {
        if (!exited()) kill(pid_, sig);
    }
    void kill_now() {
        if (exited()) return;
        kill(pid_, SIGKILL);
        int st;
        waitpid(pid_, &st, 0);
        done_ = true;
    }

  private:
    pid_t pid_ = -1;
    std::string log_path_;
    bool done_ = false;
    int status_ = -1;
};

// A blocking memcached text-protocol client over loopback TCP. Every read
// has a timeout (a hang is a failure, not a stuck test).
class Client {
  public:
    explicit Client(int port, int timeout_s = 30) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        timeval tv{timeout_s, 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        const int one = 1;
        setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ok_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    ~Client() { close(fd_); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    bool ok() const { return ok_; }
    int fd() const { return fd_; }

    bool send(const std::string& s) {
        size_t put = 0;
        while (put < s.size()) {
            const ssize_t n = ::send(fd_, s.data() + put, s.size() - put, MSG_NOSIGNAL);
            if (n <= 0) return ok_ = false;
            put += static_cast<size_t>(n);
        }
        return true;
    }
    // Exactly n bytes ("" and !ok() on EOF, error or timeout).
    std::string read_n(size_t n) {
        while (buf_.size() < n && fill()) {
        }
        if (buf_.size() < n) return "";
        std::string r = buf_.substr(0, n);
        buf_.erase(0, n);
        return r;
    }
    // One line without its \r\n.
    std::string line() {
        size_t p;
        while ((p = buf_.find("\r\n")) == std::string::npos && fill()) {
        }
        if (p == std::string::npos) return "<no line>";
        std::string r = buf_.substr(0, p);
        buf_.erase(0, p + 2);
        return r;
    }
    // Sends a request and returns exactly as many bytes as expected (so a
    // test compares the whole reply byte for byte).
    std::string call(const std::string& req, const std::string& expected) {
        send(req);
        return read_n(expected.size());
    }
    // True if the server closed the connection (EOF) within the timeout.
    bool closed_by_server() {
        char c;
        const ssize_t n = recv(fd_, &c, 1, 0);
        return n == 0;
    }
    // get: the value, or nullopt on a miss. *bad set on a malformed reply.
    std::optional<std::string> get(const std::string& key, bool* bad = nullptr, uint32_t* flags = nullptr) {
        send("get " + key + "\r\n");
        return read_value(key, bad, flags);
    }
    std::optional<std::string> read_value(const std::string& key, bool* bad, uint32_t* flags = nullptr,
                                          uint64_t* cas = nullptr) {
        const std::string l = line();
        if (l == "END") return std::nullopt;
        std::istringstream is(l);
        std::string word, k;
        uint32_t f = 0;
        size_t n = 0;
        uint64_t c = 0;
        is >> word >> k >> f >> n;
        if (cas) is >> c;
        if (word != "VALUE" || k != key) {
            if (bad) *bad = true;
            ADD_FAILURE() << "unexpected reply line: " << l;
            return std::nullopt;
        }
        std::string v = read_n(n + 2);
        const std::string end = line();
        if (v.size() != n + 2 || v.substr(n) != "\r\n" || end != "END") {
            if (bad) *bad = true;
            ADD_FAILURE() << "malformed value reply for " << key;
            return std::nullopt;
        }
        if (flags) *flags = f;
        if (cas) *cas = c;
        v.resize(n);
        return v;
    }
    std::optional<std::string> gets(const std::string& key, uint64_t* cas) {
        send("gets " + key + "\r\n");
        bool bad = false;
        return read_value(key, &bad, nullptr, cas);
    }
    std::string set(const std::string& key, const std::string& value, int exptime = 0, uint32_t flags = 0) {
        send("set " + key + " " + std::to_string(flags) + " " + std::to_string(exptime) + " " +
             std::to_string(value.size()) + "\r\n" + value + "\r\n");
        return line();
    }
    // "stats" as name -> value.
    std::string stat(const std::string& name) {
        send("stats\r\n");
        std::string found;
        for (int i = 0; i < 200; i++) {
            const std::string l = line();
            if (l == "END" || l == "<no line>") break;
            if (l.rfind("STAT " + name + " ", 0) == 0) found = l.substr(6 + name.size());
        }
        return found;
    }

  private:
    bool fill() {
        char b[65536];
        const ssize_t n = recv(fd_, b, sizeof b, 0);
        if (n <= 0) return ok_ = false;
        buf_.append(b, static_cast<size_t>(n));
        return true;
    }
    int fd_ = -1;
    bool ok_ = false;
    std::string buf_;
};

}  // namespace kvtest
