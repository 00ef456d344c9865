// SPDX-License-Identifier: Apache-2.0
// The memcached text protocol (memcached's protocol.txt, and memcached
// 1.6's replies where the text leaves room), over a connection's buffers and
// no socket: main.cpp moves the bytes, this file turns requests into
// replies. A request is served only once it is complete in the input buffer,
// so between two calls a connection is always at a request boundary: the
// unserved bytes are exactly the start of the next request, which is what a
// live update carries to the next version.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store.hpp"

namespace kvcache {

// Bounds of a connection's buffers.
inline constexpr size_t kMaxLine = 2048;               // memcached's, for lines but gets
inline constexpr size_t kMaxGetLine = 256 * 1024;      // a multi-get line
inline constexpr size_t kOutHigh = 1 << 20;            // stop serving while this much waits to go out
inline constexpr size_t kInCap = kMaxGetLine + kMaxValue + 2 + 65536;  // fits any single request

struct Conn {
    std::string in;  // received, not yet served: in[in_pos..]
    size_t in_pos = 0;
    std::string out;  // replies not yet sent: out[out_pos..]
    size_t out_pos = 0;
    uint64_t swallow = 0;            // bytes of a refused value still to discard
    bool close_after_write = false;  // quit
    bool close_now = false;          // a request we will not serve (line too long, HTTP)

    size_t in_avail() const { return in.size() - in_pos; }
    size_t out_avail() const { return out.size() - out_pos; }
};

// What the process knows that the arena does not.
struct ProcessInfo {
    std::string version;  // "1.6.0-kvcache+TAG"
    pid_t pid = 0;
    int64_t started = 0;  // this process
    uint64_t curr_connections = 0;
    uint64_t bytes_read = 0, bytes_written = 0;
    uint64_t limit_maxbytes = 0;
    bool evictions = true;
};

// memcached's exptime rule: 0 never; up to 30 days relative; above, absolute
// unix time; negative: already expired. Returns an absolute time (0 = never).
int64_t absolute_time(int64_t exptime, int64_t now);

class Protocol {
  public:
    Protocol(Store* store, ProcessInfo* info) : store_(store), info_(info) {}
    // Serves the complete requests in c.in; stops when the next one is not
    // complete, when c.out holds more than kOutHigh, or when c must close.
    void serve(Conn& c, int64_t now);

  private:
    // Returns false when the request needs more input (nothing consumed).
    bool serve_one(Conn& c, std::string_view line, size_t line_bytes, int64_t now);
    bool storage(Conn& c, Mode mode, size_t line_bytes, int64_t now);
    void get(Conn& c, bool with_cas, bool touch, int64_t now);
    void delta(Conn& c, bool incr, int64_t now);
    void del(Conn& c, int64_t now);
    void touch(Conn& c, int64_t now);
    void flush_all(Conn& c, int64_t now);
    void stats(Conn& c, int64_t now);

    Store* store_;
    ProcessInfo* info_;
    std::vector<std::string_view> tok_;
    bool noreply_ = false;
};

}  // namespace kvcache
