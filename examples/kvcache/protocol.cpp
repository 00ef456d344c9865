// SPDX-License-Identifier: Apache-2.0
#include "protocol.hpp"

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kvcache {

namespace {

constexpr int64_t kMaxRelative = 60 * 60 * 24 * 30;  // memcached's REALTIME_MAXDELTA

// memcached's number parsers (safe_strtoul / safe_strtol / safe_strtoull):
// decimal, optional leading white space and sign as strtol takes them, no
// trailing garbage, and no negative number read as a huge unsigned one.
bool ends_ok(const char* s, const char* end) {
    return end != s && (*end == '\0' || isspace(static_cast<unsigned char>(*end)));
}

bool to_u64(std::string_view t, uint64_t* out) {
    const std::string s(t);
    errno = 0;
    char* end;
    unsigned long long v = strtoull(s.c_str(), &end, 10);
    if (errno == ERANGE || !ends_ok(s.c_str(), end)) return false;
    if (static_cast<long long>(v) < 0 && s.find('-') != std::string::npos) return false;
    *out = v;
    return true;
}

bool to_u32(std::string_view t, uint32_t* out) {
    uint64_t v;
    if (!to_u64(t, &v) || v > UINT32_MAX) return false;
    *out = static_cast<uint32_t>(v);
    return true;
}

bool to_i32(std::string_view t, int32_t* out) {
    const std::string s(t);
    errno = 0;
    char* end;
    long v = strtol(s.c_str(), &end, 10);
    if (errno == ERANGE || !ends_ok(s.c_str(), end) || v > INT32_MAX || v < INT32_MIN) return false;
    *out = static_cast<int32_t>(v);
    return true;
}

void append_num(std::string& out, uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

void stat(std::string& out, std::string_view name, uint64_t v) {
    out.append("STAT ").append(name).append(" ");
    append_num(out, v);
    out.append("\r\n");
}

void stat(std::string& out, std::string_view name, std::string_view v) {
    out.append("STAT ").append(name).append(" ").append(v).append("\r\n");
}

}  // namespace

int64_t absolute_time(int64_t exptime, int64_t now) {
    if (exptime == 0) return 0;
    if (exptime < 0) return 1;  // a time long past: expired at once
    if (exptime > kMaxRelative) return exptime;  // absolute (in the past: expired)
    return now + exptime;
}

void Protocol::serve(Conn& c, int64_t now) {
    while (!c.close_now && !c.close_after_write) {
        if (c.swallow) {
            const size_t n = std::min<uint64_t>(c.swallow, c.in_avail());
            c.in_pos += n;
            c.swallow -= n;
            if (c.swallow) break;
            continue;
        }
        if (c.out_avail() > kOutHigh) break;
        const char* start = c.in.data() + c.in_pos;
        const auto* nl = static_cast<const char*>(memchr(start, '\n', c.in_avail()));
        if (!nl) {
            // As memcached: a long line without a newline is only allowed
            // for a multi-get; anything else is not memcached talking.
            const std::string_view head(start, std::min<size_t>(c.in_avail(), 6));
            const bool get_line = head.starts_with("get ") || head.starts_with("gets ") ||
                                  head.starts_with("gat ") || head.starts_with("gats ");
            if (c.in_avail() > (get_line ? kMaxGetLine : kMaxLine)) c.close_now = true;
            break;
        }
        const size_t line_bytes = static_cast<size_t>(nl - start) + 1;
        std::string_view line(start, line_bytes - 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        bool served;
        try {
            served = serve_one(c, line, line_bytes, now);
        } catch (const ArenaCorrupt& e) {
            // Never serve from a corrupt arena: start empty, say so once.
            fprintf(stderr, "kvcache: arena corrupt (%s): cache emptied\n", e.what());
            store_->reset(now);
            c.out.append("SERVER_ERROR cache corrupt, emptied\r\n");
            c.close_after_write = true;  // where the request ended is unknown
            break;
        }
        if (!served) break;
    }
    // Keep the buffer small: drop what was served.
    if (c.in_pos == c.in.size()) {
        c.in.clear();
        c.in_pos = 0;
        if (c.in.capacity() > (256u << 10)) c.in.shrink_to_fit();  // idle connections stay small
    } else if (c.in_pos > 65536) {
        c.in.erase(0, c.in_pos);
        c.in_pos = 0;
    }
}

// A reply line, unless the request said noreply (memcached then also drops
// errors found after it saw noreply).
static void reply(Conn& c, bool noreply, std::string_view s) {
    if (!noreply) c.out.append(s).append("\r\n");
}

bool Protocol::serve_one(Conn& c, std::string_view line, size_t line_bytes, int64_t now) {
    tok_.clear();
    for (size_t i = 0; i < line.size();) {
        if (line[i] == ' ') {
            i++;
            continue;
        }
        size_t j = line.find(' ', i);
        if (j == std::string_view::npos) j = line.size();
        tok_.push_back(line.substr(i, j - i));
        i = j;
    }
    const size_t n = tok_.size();
    noreply_ = n > 1 && tok_.back() == "noreply";
    const std::string_view cmd = n ? tok_[0] : std::string_view();

    struct StorageCmd {
        std::string_view name;
        Mode mode;
    };
    static constexpr StorageCmd kStorage[] = {{"set", Mode::Set},         {"add", Mode::Add},
                                              {"replace", Mode::Replace}, {"append", Mode::Append},
                                              {"prepend", Mode::Prepend}, {"cas", Mode::Cas}};
    for (const auto& s : kStorage) {
        if (cmd != s.name) continue;
        const size_t want = s.mode == Mode::Cas ? 6 : 5;
        if (n != want && n != want + 1) break;  // ERROR, below
        return storage(c, s.mode, line_bytes, now);
    }
    c.in_pos += line_bytes;  // every other request is its line

    if (n == 0 || cmd.size() < 2) {
        reply(c, false, "ERROR");
    } else if ((cmd == "get" || cmd == "gets") && n >= 2) {
        get(c, cmd == "gets", false, now);
    } else if ((cmd == "gat" || cmd == "gats") && n >= 3) {
        get(c, cmd == "gats", true, now);
    } else if ((cmd == "incr" || cmd == "decr") && (n == 3 || n == 4)) {
        delta(c, cmd == "incr", now);
    } else if (cmd == "delete" && n >= 2 && n <= 4) {
        del(c, now);
    } else if (cmd == "touch" && (n == 3 || n == 4)) {
        touch(c, now);
    } else if (cmd == "stats") {
        stats(c, now);
    } else if (tok_.back().starts_with("HTTP/")) {
        c.close_now = true;  // as memcached: a web client, not ours
    } else if (cmd == "flush_all" && n <= 3) {
        flush_all(c, now);
    } else if (cmd == "version") {
        reply(c, false, "VERSION " + info_->version);
    } else if (cmd == "quit") {
        c.close_after_write = true;
    } else if (cmd == "verbosity" && (n == 2 || n == 3)) {
        uint32_t level;
        reply(c, noreply_, to_u32(tok_[1], &level) ? "OK" : "CLIENT_ERROR bad command line format");
    } else {
        reply(c, false, "ERROR");
    }
    return true;
}

bool Protocol::storage(Conn& c, Mode mode, size_t line_bytes, int64_t now) {
    const std::string_view key = tok_[1];
    uint32_t flags;
    int32_t exptime, vlen;
    uint64_t cas = 0;
    // As memcached: an error in the line consumes only the line (the data
    // that follows is then read as a request, and gets ERROR).
    if (key.size() > kMaxKey || !to_u32(tok_[2], &flags) || !to_i32(tok_[3], &exptime) ||
        !to_i32(tok_[4], &vlen) || (mode == Mode::Cas && !to_u64(tok_[5], &cas)) || vlen < 0 ||
        vlen > INT_MAX - 2) {
        c.in_pos += line_bytes;
        reply(c, noreply_, "CLIENT_ERROR bad command line format");
        return true;
    }
    const uint64_t need = static_cast<uint64_t>(vlen) + 2;
    if (static_cast<uint64_t>(vlen) > kMaxValue) {
        // As memcached: refuse, discard the data as it comes, and do not
        // leave an old value readable under a key whose set failed.
        c.in_pos += line_bytes;
        c.swallow = need;
        if (mode == Mode::Set) store_->unlink_for_set_failure(key, now);
        reply(c, noreply_, "SERVER_ERROR object too large for cache");
        return true;
    }
    if (c.in_avail() < line_bytes + need) return false;  // wait for the data
    const std::string_view data(c.in.data() + c.in_pos + line_bytes, vlen);
    const std::string_view end(data.data() + vlen, 2);
    if (end != "\r\n") {
        c.in_pos += line_bytes + need;
        reply(c, noreply_, "CLIENT_ERROR bad data chunk");
        return true;
    }
    const Result r = store_->store(mode, key, flags, absolute_time(exptime, now), data, cas, now);
    c.in_pos += line_bytes + need;
    switch (r) {
        case Result::Stored: reply(c, noreply_, "STORED"); break;
        case Result::NotStored: reply(c, noreply_, "NOT_STORED"); break;
        case Result::Exists: reply(c, noreply_, "EXISTS"); break;
        case Result::NotFound: reply(c, noreply_, "NOT_FOUND"); break;
        case Result::TooLarge: reply(c, noreply_, "SERVER_ERROR object too large for cache"); break;
        case Result::NoMemory: reply(c, noreply_, "SERVER_ERROR out of memory storing object"); break;
    }
    return true;
}

void Protocol::get(Conn& c, bool with_cas, bool touch, int64_t now) {
    const size_t mark = c.out.size();
    size_t first = 1;
    int64_t exptime = 0;
    if (touch) {
        int32_t e;
        if (!to_i32(tok_[1], &e)) {
            reply(c, false, "CLIENT_ERROR invalid exptime argument");
            return;
        }
        exptime = absolute_time(e, now);
        first = 2;
    }
    for (size_t i = first; i < tok_.size(); i++) {
        const std::string_view key = tok_[i];
        if (key.size() > kMaxKey) {
            // As memcached: the whole reply is this error.
            c.out.resize(mark);
            reply(c, false, "CLIENT_ERROR bad command line format");
            return;
        }
        const Item* it = touch ? store_->get_and_touch(key, exptime, now) : store_->get(key, now);
        if (!it) continue;
        c.out.append("VALUE ").append(key).append(" ");
        append_num(c.out, it->flags);
        c.out.append(" ");
        append_num(c.out, it->nbytes);
        if (with_cas) {
            c.out.append(" ");
            append_num(c.out, it->cas);
        }
        c.out.append("\r\n").append(it->value()).append("\r\n");
    }
    c.out.append("END\r\n");
}

void Protocol::delta(Conn& c, bool incr, int64_t now) {
    const std::string_view key = tok_[1];
    uint64_t by, result = 0;
    if (key.size() > kMaxKey) return reply(c, noreply_, "CLIENT_ERROR bad command line format");
    if (!to_u64(tok_[2], &by)) return reply(c, noreply_, "CLIENT_ERROR invalid numeric delta argument");
    switch (store_->delta(key, incr, by, now, &result)) {
        case Delta::Ok:
            if (!noreply_) {
                append_num(c.out, result);
                c.out.append("\r\n");
            }
            break;
        case Delta::NotFound: reply(c, noreply_, "NOT_FOUND"); break;
        case Delta::NonNumeric:
            reply(c, noreply_, "CLIENT_ERROR cannot increment or decrement non-numeric value");
            break;
        case Delta::NoMemory: reply(c, noreply_, "SERVER_ERROR out of memory"); break;
    }
}

void Protocol::del(Conn& c, int64_t now) {
    const size_t n = tok_.size();
    if (n > 2) {
        // memcached accepts "delete k 0" (an old hold time of zero) and noreply.
        const bool zero = tok_[2] == "0";
        if (!((n == 3 && (zero || noreply_)) || (n == 4 && zero && noreply_)))
            return reply(c, noreply_, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
    }
    if (tok_[1].size() > kMaxKey) return reply(c, noreply_, "CLIENT_ERROR bad command line format");
    reply(c, noreply_, store_->remove(tok_[1], now) ? "DELETED" : "NOT_FOUND");
}

void Protocol::touch(Conn& c, int64_t now) {
    int32_t e;
    if (tok_[1].size() > kMaxKey) return reply(c, noreply_, "CLIENT_ERROR bad command line format");
    if (!to_i32(tok_[2], &e)) return reply(c, noreply_, "CLIENT_ERROR invalid exptime argument");
    reply(c, noreply_, store_->touch(tok_[1], absolute_time(e, now), now) ? "TOUCHED" : "NOT_FOUND");
}

void Protocol::flush_all(Conn& c, int64_t now) {
    int32_t delay = 0;
    // "flush_all", "flush_all noreply", "flush_all DELAY [noreply]".
    if (tok_.size() != (noreply_ ? 2u : 1u) && !to_i32(tok_[1], &delay))
        return reply(c, noreply_, "CLIENT_ERROR bad command line format");
    store_->flush(delay > 0 ? absolute_time(delay, now) : now, now);
    reply(c, noreply_, "OK");
}

void Protocol::stats(Conn& c, int64_t now) {
    std::string& o = c.out;
    const std::string_view sub = tok_.size() > 1 ? tok_[1] : std::string_view();
    Counters& k = store_->counters();
    if (sub.empty()) {
        stat(o, "pid", static_cast<uint64_t>(info_->pid));
        stat(o, "uptime", static_cast<uint64_t>(std::max<int64_t>(0, now - store_->created())));
        stat(o, "time", static_cast<uint64_t>(now));
        stat(o, "version", info_->version);
        stat(o, "pointer_size", 64);
        stat(o, "process_uptime", static_cast<uint64_t>(std::max<int64_t>(0, now - info_->started)));
        stat(o, "live_updates", store_->generation());
        stat(o, "curr_connections", info_->curr_connections);
        stat(o, "total_connections", k.total_connections);
        stat(o, "cmd_get", k.cmd_get);
        stat(o, "cmd_set", k.cmd_set);
        stat(o, "cmd_flush", k.cmd_flush);
        stat(o, "cmd_touch", k.cmd_touch);
        stat(o, "get_hits", k.get_hits);
        stat(o, "get_misses", k.get_misses);
        stat(o, "get_expired", k.get_expired);
        stat(o, "get_flushed", k.get_flushed);
        stat(o, "delete_misses", k.delete_misses);
        stat(o, "delete_hits", k.delete_hits);
        stat(o, "incr_misses", k.incr_misses);
        stat(o, "incr_hits", k.incr_hits);
        stat(o, "decr_misses", k.decr_misses);
        stat(o, "decr_hits", k.decr_hits);
        stat(o, "cas_misses", k.cas_misses);
        stat(o, "cas_hits", k.cas_hits);
        stat(o, "cas_badval", k.cas_badval);
        stat(o, "touch_hits", k.touch_hits);
        stat(o, "touch_misses", k.touch_misses);
        stat(o, "bytes_read", info_->bytes_read);
        stat(o, "bytes_written", info_->bytes_written);
        stat(o, "limit_maxbytes", info_->limit_maxbytes);
        stat(o, "threads", 1);
        stat(o, "bytes", k.bytes);
        stat(o, "curr_items", k.curr_items);
        stat(o, "total_items", k.total_items);
        stat(o, "evictions", k.evictions);
        stat(o, "reclaimed", k.reclaimed);
    } else if (sub == "reset") {
        // The counters memcached resets; items, bytes and connections stay.
        const Counters keep = k;
        k = Counters{};
        k.curr_items = keep.curr_items;
        k.bytes = keep.bytes;
        return reply(c, false, "RESET");
    } else if (sub == "settings") {
        stat(o, "maxbytes", info_->limit_maxbytes);
        stat(o, "item_size_max", kMaxValue);
        stat(o, "evictions", info_->evictions ? "on" : "off");
        stat(o, "cas_enabled", "yes");
    } else if (sub == "slabs" || sub == "items") {
        uint64_t active = 0;
        for (uint32_t i = 0; i < store_->classes(); i++) {
            uint64_t chunk, pages, items;
            store_->class_info(i, &chunk, &pages, &items);
            if (!pages) continue;
            active++;
            const std::string p = (sub == "items" ? "items:" : "") + std::to_string(i + 1) + ":";
            if (sub == "items") {
                stat(o, p + "number", items);
            } else {
                stat(o, p + "chunk_size", chunk);
                stat(o, p + "total_pages", pages);
                stat(o, p + "used_chunks", items);
            }
        }
        if (sub == "slabs") stat(o, "active_slabs", active);
    } else {
        return reply(c, false, "ERROR");
    }
    o.append("END\r\n");
}

}  // namespace kvcache
