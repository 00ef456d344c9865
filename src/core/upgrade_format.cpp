// SPDX-License-Identifier: Apache-2.0
// The upgrade's blob, both ways: written from an UpgradeImage, read back
// only once every byte has been checked. docs/handover-format.md describes
// the bytes; handover_root.cpp writes and checks the FDT root.
#include "upgrade_format.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string_view>

#include "handover_format.hpp"
#include "handover_layout.hpp"
#include "split_check.hpp"

namespace lu {

using namespace handover_layout;

namespace {

struct UpgradeHeader {
    char compatible[8];  // kUpgradeCompatible, NUL-padded
    uint32_t version;    // kUpgradeFormatVersion
    uint32_t flags;      // kHaveIncoming
    uint64_t liveupdate_num;
    int32_t deserialize_err;  // 0 or -errno
    uint32_t pad;
    uint64_t upgrades;
    uint64_t leaked_fds;
    Extent outgoing;     // bytes: a reboot handover blob
    Extent incoming;     // bytes: a reboot handover blob
    Extent in_sessions;  // InSessionRec, per incoming session
    Extent in_files;     // int32_t retrieve status, per incoming file
    Extent in_flbs;      // InFlbRec, per incoming FLB
    Extent conns;        // ConnRec
    Extent data;         // bytes: held replies
};

struct InSessionRec {
    uint32_t flags;  // kUpgradeSession*
    uint32_t pad;
    uint64_t since_ns;  // handed over at (CLOCK_MONOTONIC)
};

struct InFlbRec {
    int32_t retrieve_status;
    uint32_t finished;  // 0 or 1
};

struct ConnRec {
    uint32_t kind;   // ConnImage::Kind
    uint32_t flags;  // kHasPending | kPendingFd
    uint32_t uid;
    int32_t pid;
    uint32_t incoming;  // 0 or 1
    uint32_t pad;
    uint64_t session;
    uint64_t peer_ino;
    uint64_t pending_off;  // into the data area
    uint64_t pending_len;
};

static_assert(sizeof(UpgradeHeader) == 160 && sizeof(InSessionRec) == 16 && sizeof(InFlbRec) == 8 &&
              sizeof(ConnRec) == 56);

constexpr uint32_t kHaveIncoming = 1;
constexpr uint32_t kHasPending = 1, kPendingFd = 2;
constexpr uint64_t kMaxLeakedFds = 16u << 20;
constexpr RootKind kUpgradeRoot{kUpgradeRootCompatible, kUpgradeFormatVersion, sizeof(UpgradeHeader)};

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// A retrieve status as the engine keeps it: 0, 1, or a -errno.
bool valid_status(int32_t s) { return s == 0 || s == 1 || (s < 0 && s >= -4095); }

size_t incoming_files(const HandoverImage& img) {
    size_t n = 0;
    for (const SessionImage& s : img.sessions) n += s.files.size();
    return n;
}

}  // namespace

size_t upgrade_fd_count(const UpgradeImage& img) {
    size_t n = img.outgoing.fd_slots.size() + img.incoming.fd_slots.size() + img.conns.size();
    for (const ConnImage& c : img.conns) n += c.pending_fd;
    return n + img.leaked_fds;
}

// ---- writing ----

std::vector<uint8_t> encode_upgrade(const UpgradeImage& img) {
    const std::vector<uint8_t> out_blob = encode_handover(img.outgoing);
    const std::vector<uint8_t> in_blob = encode_handover(img.incoming);
    uint64_t pending = 0;
    for (const ConnImage& c : img.conns) pending += c.pending.size();

    // Tables in a fixed order, each on an 8-byte boundary.
    UpgradeHeader h{};
    std::memcpy(h.compatible, kUpgradeCompatible, sizeof kUpgradeCompatible);
    h.version = kUpgradeFormatVersion;
    h.flags = img.have_incoming ? kHaveIncoming : 0;
    h.liveupdate_num = img.liveupdate_num;
    h.deserialize_err = img.deserialize_err;
    h.upgrades = img.upgrades;
    h.leaked_fds = img.leaked_fds;
    uint64_t at = sizeof h;
    auto place = [&at](Extent* e, uint64_t count, uint64_t size) {
        e->off = count ? at : 0;
        e->count = count;
        if (count) at = align8(at + count * size);
    };
    place(&h.in_sessions, img.incoming_flags.size(), sizeof(InSessionRec));
    place(&h.in_files, img.incoming_status.size(), sizeof(int32_t));
    place(&h.in_flbs, img.incoming_flb_status.size(), sizeof(InFlbRec));
    place(&h.conns, img.conns.size(), sizeof(ConnRec));
    place(&h.data, pending, 1);
    place(&h.outgoing, out_blob.size(), 1);
    place(&h.incoming, in_blob.size(), 1);

    const uint64_t root = luo_offset(kUpgradeRoot);
    if (at > kMaxHandoverSize - root) throw std::length_error("upgrade: image larger than 1 GiB");
    std::vector<uint8_t> out(root + at);
    uint8_t* p = out.data() + root;
    store(p, h);
    for (size_t i = 0; i < img.incoming_flags.size(); i++) {
        const uint64_t since = i < img.incoming_since_ns.size() ? img.incoming_since_ns[i] : 0;
        store(p + h.in_sessions.off + i * sizeof(InSessionRec), InSessionRec{img.incoming_flags[i], 0, since});
    }
    for (size_t i = 0; i < img.incoming_status.size(); i++)
        store(p + h.in_files.off + i * sizeof(int32_t), img.incoming_status[i]);
    for (size_t i = 0; i < img.incoming_flb_status.size(); i++) {
        const IncomingFlbStatus& f = img.incoming_flb_status[i];
        store(p + h.in_flbs.off + i * sizeof(InFlbRec), InFlbRec{f.retrieve_status, f.finished});
    }
    uint64_t data_at = 0;
    for (size_t i = 0; i < img.conns.size(); i++) {
        const ConnImage& c = img.conns[i];
        ConnRec r{};
        r.kind = c.kind;
        r.flags = (c.has_pending ? kHasPending : 0) | (c.pending_fd ? kPendingFd : 0);
        r.uid = c.uid;
        r.pid = c.pid;
        r.incoming = c.incoming;
        r.session = c.session;
        r.peer_ino = c.peer_ino;
        r.pending_off = c.has_pending ? data_at : 0;
        r.pending_len = c.pending.size();
        if (!c.pending.empty()) std::memcpy(p + h.data.off + data_at, c.pending.data(), c.pending.size());
        data_at += c.pending.size();
        store(p + h.conns.off + i * sizeof(ConnRec), r);
    }
    if (!out_blob.empty()) std::memcpy(p + h.outgoing.off, out_blob.data(), out_blob.size());
    if (!in_blob.empty()) std::memcpy(p + h.incoming.off, in_blob.data(), in_blob.size());
    write_root(out.data(), at, XXH3_64bits(p, at), kUpgradeRoot);
    return out;
}

// ---- reading ----

namespace {

class UpgradeReader {
  public:
    static int read(std::span<const uint8_t> p, UpgradeImage* out, std::string* why) {
        UpgradeReader r(p, why);
        UpgradeImage img;
        if (int e = r.check(&img)) return e;
        *out = std::move(img);
        return 0;
    }

  private:
    UpgradeReader(std::span<const uint8_t> p, std::string* why) : p_(p), why_(why) {}

    int bad(const std::string& msg, int err = -EINVAL) const { return fail(why_, msg, err); }

    // Checks and, as it goes, fills *img: nothing of it is kept on failure.
    int check(UpgradeImage* img) {
        h_ = load<UpgradeHeader>(p_.data());
        if (int r = check_header()) return r;
        if (int r = check_extents()) return r;
        if (int r = embedded(h_.outgoing, "outgoing", &img->outgoing)) return r;
        if (int r = embedded(h_.incoming, "incoming", &img->incoming)) return r;
        img->liveupdate_num = h_.liveupdate_num;
        img->have_incoming = h_.flags & kHaveIncoming;
        img->deserialize_err = h_.deserialize_err;
        img->upgrades = h_.upgrades;
        img->leaked_fds = h_.leaked_fds;
        if (int r = check_incoming(img)) return r;
        return check_conns(img);
    }

    int check_header() {
        if (std::memcmp(h_.compatible, kUpgradeCompatible, sizeof h_.compatible) != 0)
            return bad("upgrade compatible is not " + std::string(kUpgradeCompatible),
                       -EPROTONOSUPPORT);
        if (h_.version != kUpgradeFormatVersion)
            return bad("upgrade version " + std::to_string(h_.version) + ", this build reads only " +
                           std::to_string(kUpgradeFormatVersion),
                       -EPROTONOSUPPORT);
        if (h_.pad != 0 || (h_.flags & ~kHaveIncoming)) return bad("upgrade header: unknown bits");
        if (h_.deserialize_err > 0 || h_.deserialize_err < -4095)
            return bad("upgrade header: deserialize error out of range");
        if (h_.leaked_fds > kMaxLeakedFds) return bad("upgrade header: leaked fd count out of range");
        return 0;
    }

    // Every table inside the payload, none overlapping another.
    int check_extents() {
        struct Span {
            uint64_t begin, end;
            const char* name;
        };
        std::vector<Span> spans{{0, sizeof h_, "header"}};
        auto add = [&](const Extent& e, uint64_t size, const char* name) {
            const uint64_t n = p_.size();
            if (e.off > n || e.count > (n - e.off) / size)
                return bad(std::string(name) + " exceeds the upgrade payload");
            if (e.count) spans.push_back({e.off, e.off + e.count * size, name});
            return 0;
        };
        if (int r = add(h_.outgoing, 1, "outgoing blob")) return r;
        if (int r = add(h_.incoming, 1, "incoming blob")) return r;
        if (int r = add(h_.in_sessions, sizeof(InSessionRec), "incoming session table")) return r;
        if (int r = add(h_.in_files, sizeof(int32_t), "incoming file table")) return r;
        if (int r = add(h_.in_flbs, sizeof(InFlbRec), "incoming FLB table")) return r;
        if (int r = add(h_.conns, sizeof(ConnRec), "connection table")) return r;
        if (int r = add(h_.data, 1, "data area")) return r;
        std::sort(spans.begin(), spans.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
        for (size_t i = 1; i < spans.size(); i++)
            if (spans[i].begin < spans[i - 1].end)
                return bad(std::string(spans[i].name) + " overlaps " + spans[i - 1].name);
        return 0;
    }

    // An embedded reboot blob, checked as a reboot's, for the same epoch.
    int embedded(const Extent& e, const char* name, HandoverImage* out) {
        std::string inner;
        int r = decode_handover(p_.subspan(e.off, e.count), out, &inner);
        if (r) return bad(std::string(name) + " sessions: " + inner, r == -EPROTONOSUPPORT ? r : -EINVAL);
        if (out->liveupdate_num != h_.liveupdate_num)
            return bad(std::string(name) + " sessions: epoch differs from the upgrade's");
        return 0;
    }

    int check_incoming(UpgradeImage* img) {
        const HandoverImage& in = img->incoming;
        if (!img->have_incoming && (!in.sessions.empty() || !in.flbs.empty()))
            return bad("incoming sessions without an incoming handover");
        if (h_.in_sessions.count != in.sessions.size())
            return bad("incoming session states do not match the incoming sessions");
        if (h_.in_files.count != incoming_files(in))
            return bad("incoming file states do not match the incoming files");
        if (h_.in_flbs.count != in.flbs.size())
            return bad("incoming FLB states do not match the incoming FLBs");
        for (uint64_t i = 0; i < h_.in_sessions.count; i++) {
            const InSessionRec r =
                load<InSessionRec>(p_.data() + h_.in_sessions.off + i * sizeof(InSessionRec));
            const uint32_t f = r.flags;
            if ((f & ~kUpgradeSessionFlags) || r.pad ||
                ((f & kUpgradeSessionOrphaned) && !(f & kUpgradeSessionRetrieved)))
                return bad("incoming session " + std::to_string(i) + ": invalid state");
            img->incoming_flags.push_back(f);
            img->incoming_since_ns.push_back(r.since_ns);
        }
        for (uint64_t i = 0; i < h_.in_files.count; i++) {
            const int32_t s = load<int32_t>(p_.data() + h_.in_files.off + i * 4);
            if (!valid_status(s)) return bad("incoming file " + std::to_string(i) + ": invalid status");
            img->incoming_status.push_back(s);
        }
        for (uint64_t i = 0; i < h_.in_flbs.count; i++) {
            const InFlbRec r = load<InFlbRec>(p_.data() + h_.in_flbs.off + i * sizeof(InFlbRec));
            if (!valid_status(r.retrieve_status) || r.finished > 1)
                return bad("incoming FLB " + std::to_string(i) + ": invalid state");
            img->incoming_flb_status.push_back({r.retrieve_status, r.finished == 1});
        }
        return 0;
    }

    // At most one control connection; each session socket names a session
    // that exists, no session twice; held replies tile the data area.
    int check_conns(UpgradeImage* img) {
        bool control = false;
        std::set<std::pair<uint32_t, uint64_t>> sessions;
        uint64_t data_at = 0;
        for (uint64_t i = 0; i < h_.conns.count; i++) {
            const std::string at = "connection " + std::to_string(i);
            const ConnRec r = load<ConnRec>(p_.data() + h_.conns.off + i * sizeof(ConnRec));
            if (r.pad || (r.flags & ~(kHasPending | kPendingFd)) ||
                ((r.flags & kPendingFd) && !(r.flags & kHasPending)))
                return bad(at + ": unknown bits");
            if (r.kind == ConnImage::Control) {
                if (control) return bad(at + ": a second control connection");
                if (r.incoming || r.session || r.peer_ino) return bad(at + ": session fields set");
                control = true;
            } else if (r.kind == ConnImage::Session) {
                if (r.incoming > 1) return bad(at + ": invalid direction");
                const HandoverImage& side = r.incoming ? img->incoming : img->outgoing;
                if (r.session >= side.sessions.size()) return bad(at + ": no such session");
                if (!sessions.emplace(r.incoming, r.session).second)
                    return bad(at + ": session served twice");
            } else if (r.kind == ConnImage::Stale) {
                if (r.incoming || r.session || r.peer_ino) return bad(at + ": session fields set");
            } else {
                return bad(at + ": invalid kind");
            }
            if (!(r.flags & kHasPending) && (r.pending_off || r.pending_len))
                return bad(at + ": held reply without the flag");
            if ((r.flags & kHasPending) &&
                (r.pending_off != data_at || r.pending_len > h_.data.count - data_at))
                return bad(at + ": held reply outside the data area");
            data_at += r.pending_len;
            ConnImage& c = img->conns.emplace_back();
            c.kind = r.kind;
            c.uid = r.uid;
            c.pid = r.pid;
            c.incoming = r.incoming;
            c.session = r.session;
            c.peer_ino = r.peer_ino;
            c.has_pending = r.flags & kHasPending;
            c.pending_fd = r.flags & kPendingFd;
            const uint8_t* d = p_.data() + h_.data.off + r.pending_off;
            c.pending.assign(d, d + r.pending_len);
        }
        if (data_at != h_.data.count) return bad("data area bytes belong to no connection");
        return 0;
    }

    std::span<const uint8_t> p_;
    std::string* why_;
    UpgradeHeader h_{};
};

}  // namespace

int decode_upgrade(std::span<const uint8_t> blob, UpgradeImage* out, std::string* why) {
    std::span<const uint8_t> payload;
    if (int r = check_root(blob, &payload, why, kUpgradeRoot)) return r;
    return UpgradeReader::read(payload, out, why);
}

int check_upgrade_fds(const UpgradeImage& img, std::span<const int> fds, std::string* why) {
    if (fds.size() != upgrade_fd_count(img)) return fail(why, "fd count does not match the upgrade");
    size_t at = 0;
    auto take = [&](size_t n) {
        std::span<const int> s = fds.subspan(at, n);
        at += n;
        return s;
    };
    if (int r = check_handover_fds(img.outgoing, take(img.outgoing.fd_slots.size()), why)) return r;
    if (int r = check_handover_fds(img.incoming, take(img.incoming.fd_slots.size()), why)) return r;
    std::span<const int> conns = take(img.conns.size());
    int r = split_check(conns.size(), [&](size_t begin, size_t end, std::string* part_why) {
        for (int fd : conns.subspan(begin, end - begin)) {
            struct stat st;
            int domain = 0, type = 0;
            socklen_t len = sizeof domain;
            if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
                getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX ||
                (len = sizeof type, getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) ||
                type != SOCK_SEQPACKET)
                return fail(part_why, "a connection's fd is not a unix seqpacket socket");
        }
        return 0;
    }, why);
    if (r) return r;
    for (int fd : fds.subspan(at))
        if (fd < 0 || fcntl(fd, F_GETFD) < 0) return fail(why, "a held or leaked fd is missing", -EBADF);
    return 0;
}

}  // namespace lu
