// SPDX-License-Identifier: Apache-2.0
// kvcheck: loads a memcached server with a data set whose every value can be
// verified (its bytes derive from its key and version), then checks the
// server under load across a live update or a restart: every value read is
// verified, every request timed. Used by scripts/demo.sh and
// bench/kvcache_compare.sh; speaks memcached's text protocol, so it checks
// kvcache and memcached alike.
//
//   kvcheck load     --port P --items N [--value-size B] [--conns C]
//   kvcheck dump     --items N [--value-size B] --file PATH
//   kvcheck reload   --port P --file PATH
//   kvcheck run      --port P --items N [--value-size B] [--conns C]
//                    [--duration S] [--status FILE] [--report FILE]
//                    [--events FILE] [--tag T]
//   kvcheck version  --port P
//   kvcheck stat     --port P NAME...
//   kvcheck wait     --port P [--timeout S]
//   kvcheck memwatch --pidfile FILE [--file PATH]... --report FILE
//   kvcheck signal   --pid PID --signal USR2 --events FILE [--name down] [--poke PORT]
//   kvcheck freeport
//
// The data set: items "kvd:<i>" for i in [0, N), values of about B bytes
// (7/8 B to 9/8 B) of letters derived from i and version 1.
//
// run: C threads, each on its own persistent connection (reconnecting if it
// breaks), in a loop: 60% gets of random data-set items (hit or miss; a hit
// must carry the exact value), 25% gets and 15% sets of the thread's own keys
// "kvc:<tag>:<thread>:<j>" (the thread knows what it last stored: a value
// that is not it is wrong, a miss is a lost write, counted once per write). Every request's
// completion is logged; at the end (SIGINT/SIGTERM or --duration) it prints
// the totals, the longest single request (the longest stall), the longest
// gap in completed requests, the data-set hit rate before and after, and,
// given an events file ("NAME EPOCH-SECONDS" lines, e.g. from bash's
// $EPOCHREALTIME; "down" is when the service was asked to stop), the first
// request completed after each event and when the hit rate was back.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------- the data

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// n letters from 'a' to 'p', a function of seed alone.
void fill(char* out, size_t n, uint64_t seed) {
    uint64_t s = mix(seed);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s += 0x9e3779b97f4a7c15ull;
        const uint64_t w = (mix(s) & 0x0f0f0f0f0f0f0f0full) + 0x6161616161616161ull;
        memcpy(out + i, &w, 8);
    }
    if (i < n) {
        s += 0x9e3779b97f4a7c15ull;
        const uint64_t w = (mix(s) & 0x0f0f0f0f0f0f0f0full) + 0x6161616161616161ull;
        memcpy(out + i, &w, n - i);
    }
}

struct DataSet {
    uint64_t items = 0;
    uint32_t value_size = 1024;
    static std::string key(uint64_t i) { return "kvd:" + std::to_string(i); }
    uint32_t size(uint64_t i) const {
        const uint32_t lo = value_size - value_size / 8, span = value_size / 4 + 1;
        return lo + static_cast<uint32_t>(mix(i ^ 0x5eed) % span);
    }
    static uint64_t seed(uint64_t i, uint32_t version) { return mix(i * 2 + 1) ^ (uint64_t{version} << 48); }
    void value(uint64_t i, std::string* v) const {
        v->resize(size(i));
        fill(v->data(), v->size(), seed(i, 1));
    }
};

// A thread's own key j at version ver (>= 1): size and content.
uint64_t own_seed(uint64_t thread_seed, uint32_t j, uint32_t ver) {
    return mix(thread_seed ^ (uint64_t{j} << 20) ^ (uint64_t{ver} << 40)) | 1;
}
uint32_t own_size(uint64_t seed) { return 16 + static_cast<uint32_t>(mix(seed) % 2033); }

// ------------------------------------------------------------------ clocks

int64_t now_us() {  // the wall clock, as bash's $EPOCHREALTIME
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
}

double secs_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// --------------------------------------------------------------- the wire

std::string g_host = "127.0.0.1";

int connect_to(int port, int timeout_s = 10) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, g_host.c_str(), &a.sin_addr) != 1) {
        close(fd);
        return -1;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// A blocking connection with a read buffer. Any error (timeout included)
// makes it !ok() for good.
class Conn {
  public:
    explicit Conn(int fd = -1) : fd_(fd) {}
    ~Conn() { reset(); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
    bool ok() const { return fd_ >= 0 && !bad_; }
    void reset(int fd = -1) {
        if (fd_ >= 0) close(fd_);
        fd_ = fd;
        bad_ = false;
        buf_.clear();
        pos_ = 0;
    }
    std::string err;

    bool send_all(const char* p, size_t n) {
        while (n && ok()) {
            const ssize_t r = ::send(fd_, p, n, MSG_NOSIGNAL);
            if (r > 0) {
                p += r;
                n -= static_cast<size_t>(r);
            } else if (r < 0 && errno == EINTR) {
                continue;
            } else {
                fail(r < 0 ? std::string("send: ") + strerror(errno) : "send: 0");
            }
        }
        return ok();
    }
    bool send_all(const std::string& s) { return send_all(s.data(), s.size()); }
    // A line without its \r\n.
    bool line(std::string* out) {
        for (;;) {
            const size_t at = buf_.find("\r\n", pos_);
            if (at != std::string::npos) {
                out->assign(buf_, pos_, at - pos_);
                pos_ = at + 2;
                return true;
            }
            if (!more()) return false;
        }
    }
    // Exactly n bytes; with a null out, discards them.
    bool bytes(size_t n, std::string* out) {
        while (buf_.size() - pos_ < n)
            if (!more()) return false;
        if (out) out->assign(buf_, pos_, n);
        pos_ += n;
        return true;
    }
    const char* peek(size_t n) {  // n buffered bytes, valid until the next read
        while (buf_.size() - pos_ < n)
            if (!more()) return nullptr;
        const char* p = buf_.data() + pos_;
        pos_ += n;
        return p;
    }
    int fd() const { return fd_; }
    void fail(std::string why) {
        if (!bad_) err = std::move(why);
        bad_ = true;
    }

  private:
    bool more() {
        if (!ok()) return false;
        if (pos_ > 0 && pos_ == buf_.size()) {
            buf_.clear();
            pos_ = 0;
        } else if (pos_ > (1u << 20)) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
        char tmp[65536];
        for (;;) {
            const ssize_t r = recv(fd_, tmp, sizeof tmp, 0);
            if (r > 0) {
                buf_.append(tmp, static_cast<size_t>(r));
                return true;
            }
            if (r < 0 && errno == EINTR) continue;
            fail(r == 0 ? "connection closed by the server"
                 : (errno == EAGAIN || errno == EWOULDBLOCK) ? "no reply within the timeout"
                                                             : std::string("recv: ") + strerror(errno));
            return false;
        }
    }
    int fd_ = -1;
    bool bad_ = false;
    std::string buf_;
    size_t pos_ = 0;
};

// get: 1 hit (value in *v, flags in *flags), 0 miss, -1 error.
int get(Conn& c, const std::string& key, std::string* v, uint32_t* flags) {
    if (!c.send_all("get " + key + "\r\n")) return -1;
    std::string l;
    if (!c.line(&l)) return -1;
    if (l == "END") return 0;
    char k[256];
    unsigned f = 0;
    size_t n = 0;
    if (sscanf(l.c_str(), "VALUE %255s %u %zu", k, &f, &n) != 3 || key != k) {
        c.fail("get " + key + ": unexpected reply: " + l.substr(0, 80));
        return -1;
    }
    const char* p = c.peek(n + 2);
    if (!p) return -1;
    v->assign(p, n);
    if (p[n] != '\r' || p[n + 1] != '\n') {
        c.fail("get " + key + ": value not followed by \\r\\n");
        return -1;
    }
    if (!c.line(&l)) return -1;
    if (l != "END") {
        c.fail("get " + key + ": no END: " + l.substr(0, 80));
        return -1;
    }
    *flags = f;
    return 1;
}

// set: true when STORED.
bool set(Conn& c, const std::string& key, const std::string& v, uint32_t flags, std::string* reply) {
    std::string req = "set " + key + " " + std::to_string(flags) + " 0 " + std::to_string(v.size()) + "\r\n";
    req += v;
    req += "\r\n";
    if (!c.send_all(req)) return false;
    if (!c.line(reply)) return false;
    return *reply == "STORED";
}

// ---------------------------------------------------------------- options

struct Args {
    std::map<std::string, std::string> opt;
    std::vector<std::string> files;  // repeated --file
    std::vector<std::string> rest;
    std::string get(const std::string& k, const std::string& dflt = "") const {
        auto it = opt.find(k);
        return it == opt.end() ? dflt : it->second;
    }
    long long num(const std::string& k, long long dflt) const {
        auto it = opt.find(k);
        return it == opt.end() ? dflt : atoll(it->second.c_str());
    }
    bool has(const std::string& k) const { return opt.count(k) != 0; }
};

[[noreturn]] void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvcheck: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

int need_port(const Args& a) {
    const long long p = a.num("port", 0);
    if (p <= 0 || p > 65535) die("--port PORT is required");
    return static_cast<int>(p);
}

DataSet data_set(const Args& a) {
    DataSet d;
    d.items = static_cast<uint64_t>(a.num("items", 0));
    d.value_size = static_cast<uint32_t>(a.num("value-size", 1024));
    if (d.value_size < 16 || d.value_size > 900000) die("--value-size: 16 to 900000");
    return d;
}

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
void catch_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

std::string fmt_bytes_mib(double b) {
    char s[64];
    snprintf(s, sizeof s, "%.0f", b / 1048576.0);
    return s;
}

// ------------------------------------------------------------------- load

// "set kvd:<i> 0 0 <n>[ noreply]\r\n<value>\r\n" for items [from, to), appended.
void append_sets(const DataSet& d, uint64_t from, uint64_t to, bool noreply, std::string* out, std::string* tmp) {
    for (uint64_t i = from; i < to; i++) {
        d.value(i, tmp);
        *out += "set ";
        *out += DataSet::key(i);
        *out += " 0 0 ";
        *out += std::to_string(tmp->size());
        if (noreply) *out += " noreply";
        *out += "\r\n";
        *out += *tmp;
        *out += "\r\n";
    }
}

int cmd_load(const Args& a) {
    const int port = need_port(a);
    const DataSet d = data_set(a);
    const int conns = static_cast<int>(std::max(1ll, a.num("conns", 2)));
    const bool quiet = a.has("quiet");
    std::atomic<uint64_t> stored{0}, bytes{0}, errors{0};
    std::string first_error;
    std::mutex mu;
    uint64_t total_bytes = 0;
    for (uint64_t i = 0; i < d.items; i++) total_bytes += d.size(i);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < conns; t++) {
        const uint64_t from = d.items * t / conns, to = d.items * (t + 1) / conns;
        threads.emplace_back([&, from, to] {
            Conn c(connect_to(port, 60));
            if (!c.ok()) {
                std::lock_guard<std::mutex> g(mu);
                errors += to - from;
                if (first_error.empty()) first_error = "cannot connect";
                return;
            }
            // The writer pipelines, this thread reads the replies.
            std::thread writer([&c, &d, &bytes, from, to] {
                std::string out, tmp;
                for (uint64_t i = from; i < to; i += 256) {
                    const uint64_t end = std::min(to, i + 256);
                    out.clear();
                    append_sets(d, i, end, false, &out, &tmp);
                    if (!c.send_all(out)) return;
                    bytes += out.size();
                }
            });
            std::string l;
            for (uint64_t i = from; i < to; i++) {
                if (!c.line(&l)) {
                    errors += to - i;
                    std::lock_guard<std::mutex> g(mu);
                    if (first_error.empty()) first_error = c.err;
                    break;
                }
                if (l == "STORED") {
                    stored++;
                } else {
                    std::lock_guard<std::mutex> g(mu);
                    if (errors++ == 0) first_error = "set " + DataSet::key(i) + ": " + l;
                }
            }
            shutdown(c.fd(), SHUT_RDWR);  // unblocks the writer if it is stuck
            writer.join();
        });
    }
    // On a terminal, one updating line; else a line every 2 s.
    const bool tty = isatty(2);
    std::thread progress([&] {
        for (int tick = 1; stored + errors < d.items; tick++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            if (quiet || (!tty && tick % 10)) continue;
            const double s = secs_since(t0), done = static_cast<double>(stored + errors);
            const double vb = done / static_cast<double>(std::max<uint64_t>(1, d.items)) * total_bytes;
            fprintf(stderr, "%s   loading: %s / %s MiB of values (%3.0f%%), %.0f MiB/s, %" PRIu64 " errors   %s",
                    tty ? "\r" : "",
                    fmt_bytes_mib(vb).c_str(), fmt_bytes_mib(static_cast<double>(total_bytes)).c_str(),
                    100.0 * done / static_cast<double>(std::max<uint64_t>(1, d.items)), vb / 1048576.0 / s,
                    errors.load(), tty ? "" : "\n");
        }
    });
    for (auto& t : threads) t.join();
    progress.join();
    const double s = secs_since(t0);
    if (!quiet && tty) fprintf(stderr, "\n");
    printf("loaded %" PRIu64 " items (%s MiB of values, %s MiB on the wire) in %.2f s: %.0f items/s, %.0f MiB/s; %" PRIu64
           " errors%s%s\n",
           stored.load(), fmt_bytes_mib(static_cast<double>(total_bytes)).c_str(),
           fmt_bytes_mib(static_cast<double>(bytes.load())).c_str(), s, static_cast<double>(stored) / s,
           static_cast<double>(total_bytes) / 1048576.0 / s, errors.load(), first_error.empty() ? "" : ": ",
           first_error.c_str());
    return errors ? 1 : 0;
}

// The data set as the stream of noreply sets that reloads it.
int cmd_dump(const Args& a) {
    const DataSet d = data_set(a);
    const std::string path = a.get("file");
    if (path.empty()) die("--file PATH is required");
    FILE* f = fopen(path.c_str(), "w");
    if (!f) die("%s: %s", path.c_str(), strerror(errno));
    std::string out, tmp;
    uint64_t total = 0;
    for (uint64_t i = 0; i < d.items; i += 1024) {
        out.clear();
        append_sets(d, i, std::min(d.items, i + 1024), true, &out, &tmp);
        if (fwrite(out.data(), 1, out.size(), f) != out.size()) die("%s: %s", path.c_str(), strerror(errno));
        total += out.size();
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0) die("%s: %s", path.c_str(), strerror(errno));
    printf("wrote %" PRIu64 " items, %s MiB, to %s\n", d.items, fmt_bytes_mib(static_cast<double>(total)).c_str(),
           path.c_str());
    return 0;
}

// Streams the dump to the server (sendfile: no copy through this process),
// then asks "version": its answer comes once every set before it is done.
int cmd_reload(const Args& a) {
    const int port = need_port(a);
    const std::string path = a.get("file");
    const int f = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) die("%s: %s", path.c_str(), strerror(errno));
    struct stat st;
    fstat(f, &st);
    const auto t0 = std::chrono::steady_clock::now();
    int fd = -1;
    while ((fd = connect_to(port, 120)) < 0 && secs_since(t0) < 30)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (fd < 0) die("cannot connect to port %d", port);
    Conn c(fd);
    off_t off = 0;
    while (off < st.st_size) {
        const ssize_t n = sendfile(fd, f, &off, static_cast<size_t>(st.st_size - off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("sendfile: %s", n < 0 ? strerror(errno) : "0 bytes");
    }
    close(f);
    std::string l;
    if (!c.send_all("version\r\n") || !c.line(&l)) die("reload: %s", c.err.c_str());
    if (l.rfind("VERSION", 0) != 0) die("reload: unexpected reply: %s", l.c_str());
    const double s = secs_since(t0);
    printf("reloaded %s MiB in %.2f s (%.0f MiB/s)\n", fmt_bytes_mib(static_cast<double>(st.st_size)).c_str(), s,
           static_cast<double>(st.st_size) / 1048576.0 / s);
    return 0;
}

// -------------------------------------------------------------------- run

enum Kind : uint8_t { kDsHit, kDsMiss, kOwnGet, kOwnSet, kFailed };

struct Rec {
    int64_t end_us;   // wall clock, when the reply was complete (or the request failed)
    uint32_t lat_us;  // from the moment the request was due (reconnection included)
    uint8_t kind;
};

struct Worker {
    std::atomic<uint64_t> sent{0}, failed{0}, wrong{0}, lost{0}, ds_gets{0}, ds_hits{0}, reconnects{0};
    std::atomic<uint64_t> max_lat_us{0};
    std::vector<Rec> log;
    std::vector<std::string> problems;  // the first few, for the report
    std::mutex mu;
    void problem(const std::string& p) {
        std::lock_guard<std::mutex> g(mu);
        if (problems.size() < 5) problems.push_back(p);
    }
};

constexpr size_t kMaxLog = 40u << 20;  // per thread: bounded memory for long runs

void worker_loop(int port, const DataSet& d, const std::string& tag, int id, Worker& w, uint64_t own_keys) {
    std::mt19937_64 rng(mix(static_cast<uint64_t>(now_us()) ^ static_cast<uint64_t>(id)));
    const uint64_t tseed = mix(std::hash<std::string>{}(tag) ^ static_cast<uint64_t>(id));
    // What this thread last stored under each own key: version (0: none),
    // and while a set's outcome is unknown (its connection broke), the
    // version before it, which is then as acceptable.
    std::vector<uint32_t> ver(own_keys, 0), prev(own_keys, 0);
    std::vector<bool> unsure(own_keys, false);
    std::vector<uint32_t> next_ver(own_keys, 0);
    Conn c;
    std::string v, expect, reply;
    w.log.reserve(1 << 20);
    while (!g_stop) {
        const int64_t t0 = now_us();
        if (!c.ok()) {
            int fd;
            int64_t last_report = t0;
            while ((fd = connect_to(port)) < 0 && !g_stop) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                if (now_us() - last_report > 5000000) {
                    w.problem("cannot connect for 5 s");
                    last_report = now_us();
                }
            }
            if (fd < 0) break;
            if (c.fd() >= 0) w.reconnects++;
            c.reset(fd);
        }
        const unsigned r = static_cast<unsigned>(rng() % 100);
        uint8_t kind = kFailed;
        bool ok = true;
        w.sent++;
        uint32_t flags = 0;
        if (r < 60) {
            const uint64_t i = rng() % std::max<uint64_t>(1, d.items);
            const std::string key = DataSet::key(i);
            const int got = get(c, key, &v, &flags);
            if (got < 0) {
                ok = false;
            } else {
                w.ds_gets++;
                kind = got ? kDsHit : kDsMiss;
                if (got) {
                    w.ds_hits++;
                    d.value(i, &expect);
                    if (v != expect || flags != 0) {
                        w.wrong++;
                        w.problem("wrong value for " + key + " (" + std::to_string(v.size()) + " bytes, want " +
                                  std::to_string(expect.size()) + ")");
                    }
                }
            }
        } else {
            const uint32_t j = static_cast<uint32_t>(rng() % own_keys);
            const std::string key = "kvc:" + tag + ":" + std::to_string(id) + ":" + std::to_string(j);
            if (r < 85) {
                const int got = get(c, key, &v, &flags);
                if (got < 0) {
                    ok = false;
                } else {
                    kind = kOwnGet;
                    auto matches = [&](uint32_t version) {
                        if (version == 0) return false;
                        const uint64_t s = own_seed(tseed, j, version);
                        expect.resize(own_size(s));
                        fill(expect.data(), expect.size(), s);
                        return v == expect && flags == j;
                    };
                    // Unsure: every version after the last one stored
                    // was a set whose outcome is unknown.
                    bool any = matches(ver[j]);
                    for (uint32_t u = ver[j]; unsure[j] && !any && u-- > prev[j];) any = matches(u);
                    const bool absent_ok = ver[j] == 0 || (unsure[j] && prev[j] == 0);
                    if (!got && !absent_ok) {  // counted once: from now on it is absent
                        w.lost++;
                        w.problem("lost write: " + key + " is missing");
                        ver[j] = 0;
                        unsure[j] = false;
                    } else if (got && !any) {
                        w.wrong++;
                        w.problem("wrong value for " + key);
                    }
                }
            } else {
                const uint32_t nv = ++next_ver[j];
                const uint64_t s = own_seed(tseed, j, nv);
                v.resize(own_size(s));
                fill(v.data(), v.size(), s);
                if (set(c, key, v, j, &reply)) {
                    ver[j] = nv;
                    unsure[j] = false;
                    kind = kOwnSet;
                } else if (c.ok()) {  // the server answered, with an error
                    ok = false;
                    c.fail("set " + key + ": " + reply.substr(0, 80));
                } else {
                    ok = false;
                }
                if (!ok) {  // it may or may not have been stored
                    if (!unsure[j]) prev[j] = ver[j];
                    unsure[j] = true;
                    ver[j] = nv;
                }
            }
        }
        const int64_t t1 = now_us();
        if (!ok) {
            if (g_stop) break;  // a request cut by our own stop is not the server's failure
            w.failed++;
            w.problem(c.err);
            c.fail(c.err);
        }
        const uint64_t lat = static_cast<uint64_t>(std::max<int64_t>(0, t1 - t0));
        if (lat > w.max_lat_us) w.max_lat_us = lat;
        if (w.log.size() < kMaxLog)
            w.log.push_back({t1, static_cast<uint32_t>(std::min<uint64_t>(lat, UINT32_MAX)), kind});
    }
}

std::map<std::string, int64_t> read_events(const std::string& path) {
    std::map<std::string, int64_t> ev;
    std::ifstream f(path);
    std::string name, when;
    while (f >> name >> when) {
        const size_t dot = when.find('.');
        int64_t us = atoll(when.substr(0, dot).c_str()) * 1000000;
        if (dot != std::string::npos) {
            std::string frac = when.substr(dot + 1, 6);
            while (frac.size() < 6) frac += '0';
            us += atoll(frac.c_str());
        }
        ev[name] = us;
    }
    return ev;
}

std::string ms(double us) {
    char s[32];
    snprintf(s, sizeof s, us >= 10000 ? "%.0f" : "%.1f", us / 1000.0);
    return s;
}

int cmd_run(const Args& a) {
    const int port = need_port(a);
    const DataSet d = data_set(a);
    const int conns = static_cast<int>(std::max(1ll, a.num("conns", 4)));
    const double duration = static_cast<double>(a.num("duration", 0));
    const std::string status_path = a.get("status"), report_path = a.get("report"), events_path = a.get("events");
    const std::string tag = a.get("tag", std::to_string(getpid()));
    const uint64_t own_keys = static_cast<uint64_t>(std::max(1ll, a.num("own-keys", 2000)));
    catch_stop_signals();

    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < conns; i++) workers.push_back(std::make_unique<Worker>());
    const int64_t start_us = now_us();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < conns; i++)
        threads.emplace_back(worker_loop, port, std::cref(d), std::cref(tag), i, std::ref(*workers[i]), own_keys);

    // The status line, for the script's progress display.
    uint64_t last_gets = 0, last_hits = 0, last_sent = 0;
    double last_t = 0;
    std::string hit_1s = "-", rate_1s = "-";
    for (int tick = 0; !g_stop; tick++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        const double t = secs_since(t0);
        if (duration > 0 && t >= duration) g_stop = true;
        uint64_t sent = 0, failed = 0, wrong = 0, lost = 0, gets = 0, hits = 0, max_lat = 0;
        for (auto& w : workers) {
            sent += w->sent;
            failed += w->failed;
            wrong += w->wrong;
            lost += w->lost;
            gets += w->ds_gets;
            hits += w->ds_hits;
            max_lat = std::max<uint64_t>(max_lat, w->max_lat_us);
        }
        if (t - last_t >= 0.99) {
            char s[64];
            snprintf(s, sizeof s, gets > last_gets ? "%.1f%%" : "-",
                     gets > last_gets ? 100.0 * static_cast<double>(hits - last_hits) / static_cast<double>(gets - last_gets) : 0.0);
            hit_1s = s;
            snprintf(s, sizeof s, "%.1fk/s", static_cast<double>(sent - last_sent) / (t - last_t) / 1000.0);
            rate_1s = s;
            last_gets = gets;
            last_hits = hits;
            last_sent = sent;
            last_t = t;
        }
        if (!status_path.empty()) {
            char line[512];
            snprintf(line, sizeof line,
                     "kvcheck %5.1fs: %" PRIu64 " requests (%s), %" PRIu64 " failed, %" PRIu64 " wrong, %" PRIu64
                     " lost, hit rate %s, longest stall %s ms",
                     t, sent, rate_1s.c_str(), failed, wrong, lost, hit_1s.c_str(),
                     ms(static_cast<double>(max_lat)).c_str());
            const std::string tmp = status_path + ".tmp";
            if (FILE* f = fopen(tmp.c_str(), "w")) {
                fprintf(f, "%s\n", line);
                fclose(f);
                rename(tmp.c_str(), status_path.c_str());
            }
        }
    }
    for (auto& t : threads) t.join();
    const int64_t end_us = now_us();

    // ---- the report
    uint64_t sent = 0, failed = 0, wrong = 0, lost = 0, gets = 0, hits = 0, reconnects = 0;
    std::vector<Rec> all;
    std::vector<std::string> problems;
    for (auto& w : workers) {
        sent += w->sent;
        failed += w->failed;
        wrong += w->wrong;
        lost += w->lost;
        gets += w->ds_gets;
        hits += w->ds_hits;
        reconnects += w->reconnects;
        all.insert(all.end(), w->log.begin(), w->log.end());
        for (auto& p : w->problems)
            if (problems.size() < 8) problems.push_back(p);
        w->log.clear();
        w->log.shrink_to_fit();
    }
    std::sort(all.begin(), all.end(), [](const Rec& x, const Rec& y) { return x.end_us < y.end_us; });
    const auto ev = read_events(events_path);
    const bool has_down = ev.count("down") != 0;
    const int64_t down = has_down ? ev.at("down") : start_us;
    auto rel = [&](int64_t t) { return static_cast<double>(t - down); };

    // Longest request and longest gap between two completed requests.
    Rec worst{0, 0, 0};
    for (const Rec& r : all)
        if (r.lat_us >= worst.lat_us) worst = r;
    int64_t gap = 0, gap_from = start_us;
    int64_t prev_done = start_us;
    for (const Rec& r : all) {
        if (r.kind == kFailed) continue;
        if (r.end_us - prev_done > gap) {
            gap = r.end_us - prev_done;
            gap_from = prev_done;
        }
        prev_done = r.end_us;
    }
    // Hit rate of the data-set gets in [from, to).
    auto hit_rate = [&](int64_t from, int64_t to, uint64_t* n) {
        uint64_t g = 0, h = 0;
        auto it = std::lower_bound(all.begin(), all.end(), from, [](const Rec& r, int64_t t) { return r.end_us < t; });
        for (; it != all.end() && it->end_us < to; ++it) {
            if (it->kind == kDsHit) h++;
            if (it->kind == kDsHit || it->kind == kDsMiss) g++;
        }
        if (n) *n = g;
        return g ? 100.0 * static_cast<double>(h) / static_cast<double>(g) : NAN;
    };
    auto first_done_after = [&](int64_t t) -> std::optional<int64_t> {
        auto it = std::upper_bound(all.begin(), all.end(), t, [](int64_t x, const Rec& r) { return x < r.end_us; });
        while (it != all.end() && it->kind == kFailed) ++it;
        if (it == all.end()) return std::nullopt;
        return it->end_us;
    };

    std::ostringstream rep;  // key=value, for the scripts
    auto put = [&](const std::string& k, const std::string& v) { rep << k << "=" << v << "\n"; };
    auto putd = [&](const std::string& k, double v) {
        char s[64];
        snprintf(s, sizeof s, "%.3f", v);
        put(k, std::isnan(v) ? "nan" : s);
    };
    put("requests", std::to_string(sent));
    put("failed", std::to_string(failed));
    put("wrong", std::to_string(wrong));
    put("lost", std::to_string(lost));
    put("reconnects", std::to_string(reconnects));
    put("ds_gets", std::to_string(gets));
    put("ds_hits", std::to_string(hits));
    putd("seconds", static_cast<double>(end_us - start_us) / 1e6);
    putd("max_latency_ms", worst.lat_us / 1000.0);
    putd("max_latency_end_ms", rel(worst.end_us) / 1000.0);
    putd("longest_gap_ms", static_cast<double>(gap) / 1000.0);
    putd("longest_gap_from_ms", rel(gap_from) / 1000.0);

    // Before: the 5 s before "down" (the first half second of the run is
    // warm-up); after: from the last event to the end.
    const int64_t before_from = std::max(start_us + 500000, down - 5000000);
    const double hit_before = hit_rate(before_from, down, nullptr);
    int64_t last_ev = down;
    for (auto& [name, t] : ev) last_ev = std::max(last_ev, t);
    const double hit_after = hit_rate(last_ev, end_us, nullptr);
    putd("hit_before_pct", hit_before);
    putd("hit_after_pct", hit_after);
    putd("hit_all_pct", gets ? 100.0 * static_cast<double>(hits) / static_cast<double>(gets) : NAN);
    if (has_down) {
        for (auto& [name, t] : ev) {
            putd("event_" + name + "_ms", rel(t) / 1000.0);
            if (auto f = first_done_after(t)) putd("first_done_after_" + name + "_ms", rel(*f) / 1000.0);
        }
        // Around the update: from "down" to a second after the last event.
        const int64_t around_to = last_ev + 1000000;
        uint32_t worst_around = 0;
        int64_t gap_around = 0, prev_ok = down;
        for (const Rec& r : all) {
            if (r.end_us < down) {
                if (r.kind != kFailed) prev_ok = r.end_us;
                continue;
            }
            if (r.end_us > around_to) break;
            worst_around = std::max(worst_around, r.lat_us);
            if (r.kind == kFailed) continue;
            gap_around = std::max(gap_around, r.end_us - prev_ok);
            prev_ok = r.end_us;
        }
        putd("max_latency_around_ms", worst_around / 1000.0);
        putd("longest_gap_around_ms", static_cast<double>(gap_around) / 1000.0);
        // Back: the first data-set get served after the old server is gone
        // (event --back-after, default "ready"; else "down") from which the
        // next 100 ms of data-set gets (50 at least) hit as often as before,
        // less one point.
        const std::string after_ev = a.get("back-after", "ready");
        const int64_t scan_from = ev.count(after_ev) ? ev.at(after_ev) : down;
        const double want = std::isnan(hit_before) ? 100.0 : hit_before - 1.0;
        std::vector<const Rec*> dg;
        for (const Rec& r : all)
            if (r.end_us > scan_from && (r.kind == kDsHit || r.kind == kDsMiss)) dg.push_back(&r);
        size_t hi = 0, h = 0;
        std::optional<int64_t> back;
        for (size_t lo = 0; lo < dg.size(); lo++) {
            if (hi < lo) hi = lo, h = 0;
            while (hi < dg.size() && (dg[hi]->end_us < dg[lo]->end_us + 100000 || hi - lo < 50)) {
                if (dg[hi]->kind == kDsHit) h++;
                hi++;
            }
            if (hi - lo < 50) break;
            if (100.0 * static_cast<double>(h) / static_cast<double>(hi - lo) >= want) {
                back = dg[lo]->end_us;
                break;
            }
            if (dg[lo]->kind == kDsHit) h--;
        }
        putd("hit_back_ms", back ? rel(*back) / 1000.0 : NAN);
    }
    // Per second, relative to "down" (or the start).
    std::ostringstream timeline;
    const int64_t first_s = -static_cast<int64_t>(std::min<int64_t>(5, (down - start_us) / 1000000));
    for (int64_t s = first_s; down + (s + 1) * 1000000 <= end_us; s++) {  // whole seconds
        uint64_t n = 0;
        const double hr = hit_rate(down + s * 1000000, down + (s + 1) * 1000000, &n);
        char cell[32];
        snprintf(cell, sizeof cell, n ? "%+" PRId64 "s:%.0f%% " : "%+" PRId64 "s:- ", s, hr);
        timeline << cell;
    }
    put("hit_per_second", timeline.str());
    for (size_t i = 0; i < problems.size(); i++) put("problem_" + std::to_string(i), problems[i]);
    // --trace FILE: every request completed from 1 s before "down" to 1 s
    // after the last event (ms from "down", latency ms, kind), to look into.
    if (const std::string trace = a.get("trace"); !trace.empty()) {
        std::ofstream f(trace);
        static const char* kinds[] = {"ds-hit", "ds-miss", "own-get", "own-set", "failed"};
        for (const Rec& r : all)
            if (r.end_us >= down - 1000000 && r.end_us <= last_ev + 1000000)
                f << rel(r.end_us) / 1000.0 << " " << r.lat_us / 1000.0 << " " << kinds[r.kind] << "\n";
    }
    if (!report_path.empty()) {
        std::ofstream f(report_path);
        f << rep.str();
    } else {
        fputs(rep.str().c_str(), stdout);
    }
    return failed || wrong || lost ? 3 : 0;
}

// ------------------------------------------------------------ small tools

int cmd_version(const Args& a) {
    Conn c(connect_to(need_port(a)));
    std::string l;
    if (!c.ok() || !c.send_all("version\r\n") || !c.line(&l) || l.rfind("VERSION ", 0) != 0)
        die("version: %s", c.ok() ? l.c_str() : c.err.empty() ? "cannot connect" : c.err.c_str());
    printf("%s\n", l.substr(8).c_str());
    return 0;
}

int cmd_stat(const Args& a) {
    Conn c(connect_to(need_port(a)));
    if (!c.ok() || !c.send_all("stats\r\n")) die("stats: cannot connect");
    std::map<std::string, std::string> st;
    std::string l;
    while (c.line(&l) && l != "END") {
        char k[128], v[256];
        if (sscanf(l.c_str(), "STAT %127s %255s", k, v) == 2) st[k] = v;
    }
    if (!c.ok()) die("stats: %s", c.err.c_str());
    for (const std::string& name : a.rest) printf("%s\n", st.count(name) ? st[name].c_str() : "");
    return 0;
}

// Until the server answers "version" (it accepts and serves).
int cmd_wait(const Args& a) {
    const int port = need_port(a);
    const double timeout = static_cast<double>(a.num("timeout", 60));
    const auto t0 = std::chrono::steady_clock::now();
    while (secs_since(t0) < timeout) {
        Conn c(connect_to(port, 5));
        std::string l;
        if (c.ok() && c.send_all("version\r\n") && c.line(&l) && l.rfind("VERSION", 0) == 0) return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    fprintf(stderr, "kvcheck: port %d: no server within %.0f s\n", port, timeout);
    return 1;
}

// Sends a signal and writes "NAME EPOCH-SECONDS" to the events file, the
// time taken right before kill(2): a shell writing the time and then sending
// the signal can be descheduled in between. --poke PORT: then connects to
// the port once (memcached notices a SIGUSR1 only at its next event).
int cmd_signal(const Args& a) {
    const std::string sig_name = a.get("signal"), events = a.get("events"), name = a.get("name", "down");
    const pid_t pid = static_cast<pid_t>(a.num("pid", 0));
    static const std::map<std::string, int> sigs = {{"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM},
                                                    {"INT", SIGINT}, {"KILL", SIGKILL}, {"HUP", SIGHUP}};
    const auto it = sigs.find(sig_name);
    if (pid <= 0 || it == sigs.end() || events.empty())
        die("signal: --pid PID --signal USR1|USR2|TERM|INT|KILL|HUP --events FILE [--name NAME] [--poke PORT]");
    FILE* f = fopen(events.c_str(), "a");
    if (!f) die("%s: %s", events.c_str(), strerror(errno));
    const int64_t t = now_us();
    if (kill(pid, it->second) < 0) die("kill %d: %s", pid, strerror(errno));
    if (a.has("poke")) {
        const int fd = connect_to(static_cast<int>(a.num("poke", 0)), 1);
        if (fd >= 0) close(fd);
    }
    fprintf(f, "%s %" PRId64 ".%06" PRId64 "\n", name.c_str(), t / 1000000, t % 1000000);
    return fclose(f) == 0 ? 0 : 1;
}

int cmd_freeport() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0)
        die("bind: %s", strerror(errno));
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

// Peak memory of a set of processes (their pids in --pidfile, re-read at
// every sample, so it may change as they are replaced): the sum of their
// private resident memory (RssAnon + RssFile) plus, counted once however
// many of them map or hold it, the memory of each shared-memory file that
// holds their data (their memfds, and each --file, e.g. on tmpfs: its
// allocated blocks). Sampled every 20 ms until SIGTERM.
int cmd_memwatch(const Args& a) {
    const std::string pidfile = a.get("pidfile"), report = a.get("report");
    if (pidfile.empty() || report.empty()) die("--pidfile and --report are required");
    catch_stop_signals();
    uint64_t peak = 0, peak_private = 0, peak_shared = 0, samples = 0;
    auto status_kb = [](const std::string& text, const char* field) -> uint64_t {
        const size_t at = text.find(field);
        return at == std::string::npos ? 0 : strtoull(text.c_str() + at + strlen(field), nullptr, 10);
    };
    while (!g_stop) {
        std::vector<int> pids;
        {
            std::ifstream f(pidfile);
            int p;
            while (f >> p)
                if (p > 0) pids.push_back(p);
        }
        uint64_t priv = 0, shared = 0;
        std::set<std::pair<dev_t, ino_t>> seen;
        auto count_file = [&](const std::string& path) {
            struct stat st;
            if (stat(path.c_str(), &st) == 0 && seen.insert({st.st_dev, st.st_ino}).second)
                shared += static_cast<uint64_t>(st.st_blocks) * 512;
        };
        for (int p : pids) {
            const std::string dir = "/proc/" + std::to_string(p);
            std::ifstream f(dir + "/status");
            std::stringstream ss;
            ss << f.rdbuf();
            const std::string text = ss.str();
            priv += (status_kb(text, "RssAnon:") + status_kb(text, "RssFile:")) * 1024;
            if (DIR* dd = opendir((dir + "/fd").c_str())) {
                while (dirent* e = readdir(dd)) {
                    if (e->d_name[0] == '.') continue;
                    char target[256];
                    const std::string link = dir + "/fd/" + e->d_name;
                    const ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
                    if (n <= 0) continue;
                    target[n] = 0;
                    if (strncmp(target, "/memfd:", 7) == 0) count_file(link);
                }
                closedir(dd);
            }
        }
        for (const std::string& path : a.files) count_file(path);
        if (priv + shared > peak) {
            peak = priv + shared;
            peak_private = priv;
            peak_shared = shared;
        }
        samples++;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::ofstream f(report);
    f << "peak_mib=" << peak / 1048576.0 << "\npeak_private_mib=" << peak_private / 1048576.0
      << "\npeak_shared_mib=" << peak_shared / 1048576.0 << "\nsamples=" << samples << "\n";
    return 0;
}

int usage() {
    fprintf(stderr,
            "usage: kvcheck load     --port P --items N [--value-size B] [--conns C] [--quiet]\n"
            "       kvcheck dump     --items N [--value-size B] --file PATH\n"
            "       kvcheck reload   --port P --file PATH\n"
            "       kvcheck run      --port P --items N [--value-size B] [--conns C] [--duration S]\n"
            "                        [--status FILE] [--report FILE] [--events FILE] [--tag T]\n"
            "                        [--trace FILE] [--own-keys N] [--back-after EVENT]\n"
            "       kvcheck version  --port P\n"
            "       kvcheck stat     --port P NAME...\n"
            "       kvcheck wait     --port P [--timeout S]\n"
            "       kvcheck memwatch --pidfile FILE [--file PATH]... --report FILE\n"
            "       kvcheck signal   --pid PID --signal NAME --events FILE [--name NAME] [--poke PORT]\n"
            "       kvcheck freeport\n"
            "options common to all: --host ADDR (IPv4, default 127.0.0.1)\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage();
    const std::string cmd = argv[1];
    Args a;
    for (int i = 2; i < argc; i++) {
        const std::string s = argv[i];
        if (s == "--quiet") {
            a.opt["quiet"] = "1";
        } else if (s.rfind("--", 0) == 0) {
            if (i + 1 >= argc) return usage();
            if (s == "--file" && cmd == "memwatch")
                a.files.push_back(argv[++i]);
            else
                a.opt[s.substr(2)] = argv[++i];
        } else {
            a.rest.push_back(s);
        }
    }
    if (a.has("host")) g_host = a.get("host");
    if (cmd == "load") return cmd_load(a);
    if (cmd == "dump") return cmd_dump(a);
    if (cmd == "reload") return cmd_reload(a);
    if (cmd == "run") return cmd_run(a);
    if (cmd == "version") return cmd_version(a);
    if (cmd == "stat") return cmd_stat(a);
    if (cmd == "wait") return cmd_wait(a);
    if (cmd == "memwatch") return cmd_memwatch(a);
    if (cmd == "signal") return cmd_signal(a);
    if (cmd == "freeport") return cmd_freeport();
    return usage();
}
