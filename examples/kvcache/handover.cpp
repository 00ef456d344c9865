// SPDX-License-Identifier: Apache-2.0
#include "handover.hpp"

#include <cstdint>
#include <cstring>
#include <set>

namespace kvcache {

namespace {

constexpr uint64_t kStateMagic = 0x31534e4e4f43564bull;  // "KVCONNS1"
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kCloseAfterWrite = 1, kPeerClosed = 2;
constexpr uint64_t kMaxOut = 1ull << 30;  // a reply larger than this is not ours
constexpr uint32_t kMaxConns = 1u << 20;

struct StateHeader {
    uint64_t magic;
    uint32_t version;
    uint32_t count;
    uint64_t size;  // of the whole state
};

struct ConnRecord {
    uint64_t token;
    uint64_t swallow;
    uint64_t in_len, out_len;
    uint32_t flags, pad;
};

constexpr uint64_t pad8(uint64_t v) { return (v + 7) & ~7ull; }

}  // namespace

std::string encode_state(const std::vector<HandedConn>& conns) {
    std::string s(sizeof(StateHeader), '\0');
    for (const HandedConn& h : conns) {
        ConnRecord r{};
        r.token = h.token;
        r.swallow = h.conn.swallow;
        r.in_len = h.conn.in_avail();
        r.out_len = h.conn.out_avail();
        r.flags = (h.conn.close_after_write ? kCloseAfterWrite : 0) | (h.peer_closed ? kPeerClosed : 0);
        s.append(reinterpret_cast<const char*>(&r), sizeof r);
        s.append(h.conn.in, h.conn.in_pos);
        s.append(h.conn.out, h.conn.out_pos);
        s.resize(pad8(s.size()), '\0');
    }
    StateHeader hdr{kStateMagic, kStateVersion, static_cast<uint32_t>(conns.size()), s.size()};
    std::memcpy(s.data(), &hdr, sizeof hdr);
    return s;
}

std::string decode_state(const std::string& bytes, std::vector<HandedConn>* out) {
    out->clear();
    StateHeader hdr;
    if (bytes.size() < sizeof hdr) return "too short";
    std::memcpy(&hdr, bytes.data(), sizeof hdr);
    if (hdr.magic != kStateMagic) return "bad magic";
    if (hdr.version != kStateVersion) return "version " + std::to_string(hdr.version);
    if (hdr.size != bytes.size() || hdr.count > kMaxConns) return "bad size or count";
    std::set<uint64_t> tokens;
    uint64_t pos = sizeof hdr;
    for (uint32_t i = 0; i < hdr.count; i++) {
        ConnRecord r;
        if (bytes.size() - pos < sizeof r) return "record " + std::to_string(i) + " truncated";
        std::memcpy(&r, bytes.data() + pos, sizeof r);
        pos += sizeof r;
        if (r.token < kFirstConnToken || !tokens.insert(r.token).second || r.in_len > kInCap ||
            r.out_len > kMaxOut || r.swallow > INT32_MAX ||
            (r.flags & ~(kCloseAfterWrite | kPeerClosed)) || r.pad)
            return "record " + std::to_string(i) + " invalid";
        if (bytes.size() - pos < pad8(r.in_len + r.out_len)) return "record " + std::to_string(i) + " truncated";
        HandedConn& h = out->emplace_back();
        h.token = r.token;
        h.conn.swallow = r.swallow;
        h.conn.close_after_write = r.flags & kCloseAfterWrite;
        h.peer_closed = r.flags & kPeerClosed;
        h.conn.in.assign(bytes, pos, r.in_len);
        h.conn.out.assign(bytes, pos + r.in_len, r.out_len);
        pos += pad8(r.in_len + r.out_len);
    }
    if (pos != bytes.size()) return "trailing bytes";
    return "";
}

}  // namespace kvcache
