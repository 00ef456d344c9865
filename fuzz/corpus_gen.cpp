// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpora of the fuzz targets (not a fuzz target; run by hand
// when the formats change, see fuzz/README.md):
//   fuzz_corpus_gen [DIR, default fuzz/corpus]
// DIR/handover_fuzz: valid handover blobs of different shapes.
// DIR/journal_fuzz: nr_fds, then a crash journal (valid, torn, orphans, shadowed).
// DIR/dispatch_fuzz: op sequences (dispatch_ops.hpp) with valid requests.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dispatch_ops.hpp"
#include "handover_format.hpp"
#include "journal_format.hpp"
#include "wire.h"

namespace {

using Bytes = std::vector<uint8_t>;

void write_file(const std::filesystem::path& p, const Bytes& b) {
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

lu::FdSlot slot(uint32_t type, uint64_t ino) {
    return lu::FdSlot{type, 0x2a, ino};
}

std::vector<lu::HandoverImage> handover_images() {
    std::vector<lu::HandoverImage> v;
    lu::HandoverImage empty;
    empty.liveupdate_num = 1;
    v.push_back(empty);

    lu::HandoverImage one;
    one.liveupdate_num = 2;
    one.sessions.push_back({"vm-0", {}});
    v.push_back(one);

    lu::HandoverImage memfd;
    memfd.liveupdate_num = 3;
    memfd.sessions.push_back({"kv", {{"memfd-v2", 7, Bytes(32, 0x11), 0}}});
    memfd.fd_slots.push_back(slot(S_IFREG, 100));
    v.push_back(memfd);

    lu::HandoverImage many;
    many.liveupdate_num = 42;
    many.sessions.push_back(
        {"a", {{"memfd-v2", 1, Bytes(32, 1), 1}, {"socket-v1", 2, Bytes(288, 2), 0}}});
    many.sessions.push_back({"b", {}});
    many.sessions.push_back({"c", {{"test-v1", UINT64_MAX, {}, 2}}});
    many.flbs.push_back({"test-flb-v1", Bytes{1, 2, 3, 4}, 1});
    many.fd_slots = {slot(S_IFSOCK, 5), slot(S_IFREG, 6), slot(S_IFREG, 7)};
    v.push_back(many);

    lu::HandoverImage longest;  // names and compatibles at their maximum lengths
    longest.liveupdate_num = UINT64_MAX - 1;
    longest.sessions.push_back(
        {std::string(63, 'n'), {{std::string(47, 'c'), 0, Bytes(1, 0xff), 0}}});
    longest.flbs.push_back({std::string(47, 'f'), {}, 0});
    longest.fd_slots.push_back(slot(S_IFIFO, 9));
    v.push_back(longest);
    return v;
}

// ---- journal_fuzz inputs: [u8 nr_fds][journal] ----

void add(Bytes& b, const Bytes& rec) {
    b.insert(b.end(), rec.begin(), rec.end());
}

std::vector<std::pair<std::string, Bytes>> journal_inputs() {
    std::vector<std::pair<std::string, Bytes>> v;
    Bytes in{0};
    add(in, lu::journal_epoch_record(1, 0, 0));
    v.emplace_back("epoch-only", in);

    // Two outgoing sessions and an incoming one, files in each, as the keeper
    // hands them over: ascending ids.
    in = {4};
    add(in, lu::journal_epoch_record(5, 2, 1700000000123456789ull));
    add(in, lu::journal_session_record(1, false, "vm-0"));
    add(in, lu::journal_file_record(2, 1, 10));
    add(in, lu::journal_file_record(3, 1, 11));
    add(in, lu::journal_session_record(4, true, "old-db"));
    add(in, lu::journal_file_record(5, 4, 0));
    add(in, lu::journal_session_record(6, false, std::string(63, 'n')));
    add(in, lu::journal_file_record(7, 6, UINT64_MAX));
    v.emplace_back("three-sessions", in);

    // An orphan file, an incoming session shadowed by an outgoing one,
    // and two fds more than the files.
    in = {5};
    add(in, lu::journal_epoch_record(9, 1, 1));
    add(in, lu::journal_file_record(2, 1, 7));
    add(in, lu::journal_session_record(3, true, "kv"));
    add(in, lu::journal_file_record(4, 3, 1));
    add(in, lu::journal_session_record(5, false, "kv"));
    v.emplace_back("orphan-shadowed-extra-fds", in);

    // A File before its Session, out of id order, then a torn tail.
    in = {2};
    add(in, lu::journal_epoch_record(2, 0, 0));
    add(in, lu::journal_file_record(9, 8, 3));
    add(in, lu::journal_session_record(8, false, "late"));
    Bytes torn = lu::journal_file_record(10, 8, 4);
    torn.resize(torn.size() - 8);
    add(in, torn);
    v.emplace_back("file-first-torn-tail", in);
    return v;
}

// ---- dispatch_fuzz inputs ----

using namespace dispatch_fuzz;

Bytes put32(Bytes b, size_t off, uint32_t v) {
    if (b.size() < off + 4) b.resize(off + 4);
    memcpy(b.data() + off, &v, 4);
    return b;
}

// A kControlReq / kSessionReq payload: selector, then the struct.
Bytes req(unsigned cmd_index, Bytes strct) {
    Bytes p{static_cast<uint8_t>(cmd_index)};
    p.insert(p.end(), strct.begin(), strct.end());
    return p;
}
Bytes named(uint32_t size, const char* name) {  // create/retrieve session, get_name
    Bytes s = put32(Bytes(size, 0), 0, size);
    memcpy(s.data() + 8, name, strlen(name));
    return s;
}
Bytes token_struct(uint64_t token) {  // preserve_fd, retrieve_fd
    Bytes s = put32(Bytes(16, 0), 0, 16);
    memcpy(s.data() + 8, &token, 8);
    return s;
}
Bytes finish_struct() {
    return put32(Bytes(8, 0), 0, 8);
}
Bytes text(const char* s) {
    return Bytes(s, s + strlen(s));
}

std::vector<std::pair<std::string, Bytes>> dispatch_inputs() {
    std::vector<std::pair<std::string, Bytes>> v;
    Bytes in;

    // Create, preserve a memfd and a socket, get the name, close: released.
    append_record(in, kControlReq, 0, req(0, named(72, "seed")));
    append_record(in, kSessionReq, kMemfd, req(2, token_struct(7)));
    append_record(in, kSessionReq, kTcpListener, req(2, token_struct(8)));
    append_record(in, kSessionReq, 0, req(5, named(72, "")));
    append_record(in, kCloseSession, 0, {});
    v.emplace_back("create-preserve-getname", in);

    // Retrieve an incoming session, its files, finish it.
    in.clear();
    append_record(in, kControlReq, 0, req(1, named(72, "incoming-a")));
    append_record(in, kSessionReq, 0, req(3, token_struct(1)));
    append_record(in, kSessionReq, 0, req(3, token_struct(2)));
    append_record(in, kSessionReq, 0, req(4, finish_struct()));
    append_record(in, kSessionReq, 0, req(5, named(72, "")));
    v.emplace_back("retrieve-finish", in);

    // Retrieve the session with a socket and a failing memfd; release unfinished.
    in.clear();
    append_record(in, kControlReq, 0, req(1, named(72, "incoming-b")));
    append_record(in, kSessionReq, 0, req(3, token_struct(3)));
    append_record(in, kSessionReq, 0, req(3, token_struct(4)));
    append_record(in, kSessionReq, 0, req(4, finish_struct()));
    append_record(in, kCloseSession, 0, {});
    append_record(in, kControlReq, 0, req(1, named(72, "incoming-c")));
    v.emplace_back("retrieve-failing", in);

    // Admin status while a session is open.
    in.clear();
    append_record(in, kControlReq, 0, req(0, named(72, "status-me")));
    append_record(in, kAdmin, 0, text(R"({"op":"status"})"));
    append_record(in, kAdmin, 0, text(R"({"op":"nope"})"));
    v.emplace_back("admin-status", in);

    // A raw CREATE (wire header written out), dups, a reconnect, a name clash.
    in.clear();
    Bytes raw(sizeof(lu_wire_request));
    lu_wire_request h{LU_WIRE_MAGIC, LIVEUPDATE_IOCTL_CREATE_SESSION, 0, 72};
    memcpy(raw.data(), &h, sizeof h);
    Bytes body = named(72, "raw");
    raw.insert(raw.end(), body.begin(), body.end());
    append_record(in, kControlRaw, 0, raw);
    append_record(in, kDupSession, 0, {});
    append_record(in, kSessionReq, kSessionSelf | kMemfd, req(2, token_struct(1)));
    append_record(in, kCloseSession, 0, {});
    append_record(in, kCloseControl, 0, {});
    append_record(in, kControlReq, 0, req(0, named(72, "raw")));
    append_record(in, kCloseSession, 0, {});
    append_record(in, kControlReq, 0, req(0, named(72, "raw")));
    v.emplace_back("raw-dup-reconnect", in);

    // Session requests on the wrong session type, odd sizes and flags.
    in.clear();
    append_record(in, kControlReq, 0, req(0, named(72, "odd")));
    append_record(in, kSessionReq, 0, req(4, finish_struct()));
    append_record(in, kSessionReq, 0, req(3, token_struct(1)));
    append_record(in, kSessionReq, kMemfd | kPipe, req(2, token_struct(2)));
    append_record(in, kSessionReq, 0, req(5 | LU_WIRE_TAIL_NONZERO << 3, named(80, "")));
    append_record(in, kSessionReq, kDevNull, req(2, token_struct(3)));
    v.emplace_back("wrong-type-odd-sizes", in);

    // Backpressure: bursts of GET_NAME and of CREATE before any reply is read.
    in.clear();
    append_record(in, kControlReq, 0, req(0, named(72, "burst")));
    append_record(in, kBurst, 16, req(5, named(72, "")));
    append_record(in, kCloseSession, 0, {});
    append_record(in, kBurst, 2, req(0, named(72, "b")));
    v.emplace_back("burst", in);

    // Requests whose connection is closed before the daemon reads them.
    in.clear();
    append_record(in, kControlReq, 0, req(0, named(72, "closing")));
    append_record(in, kDupSession, 0, {});
    append_record(in, kSendThenClose, kMemfd, req(2, token_struct(5)));
    append_record(in, kSendThenClose, 0, req(5, named(72, "")));
    append_record(in, kSendThenClose, 0, req(0x80, named(72, "orphan")));
    append_record(in, kSendThenClose, 0, req(0x81, named(72, "incoming-a")));
    append_record(in, kControlReq, 0, req(0, named(72, "orphan")));
    v.emplace_back("send-then-close", in);

    // shutdown() of a session fd a dup of which is still held; an empty message.
    in.clear();
    append_record(in, kControlReq, 0, req(0, named(72, "shut")));
    append_record(in, kDupSession, 0, {});
    append_record(in, kShutdown, 1, {});
    append_record(in, kSessionReq, 1 << kSessionShift, req(5, named(72, "")));
    append_record(in, kSessionRaw, 1 << kSessionShift, {});
    append_record(in, kControlRaw, 0, {});
    v.emplace_back("shutdown", in);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    const std::filesystem::path dir = argc > 1 ? argv[1] : "fuzz/corpus";
    std::filesystem::create_directories(dir / "handover_fuzz");
    std::filesystem::create_directories(dir / "dispatch_fuzz");
    std::filesystem::create_directories(dir / "journal_fuzz");
    int i = 0;
    for (const auto& img : handover_images())
        write_file(dir / "handover_fuzz" / ("seed-" + std::to_string(i++)),
                   lu::encode_handover(img));
    for (const auto& [name, bytes] : dispatch_inputs())
        write_file(dir / "dispatch_fuzz" / ("seed-" + name), bytes);
    for (const auto& [name, bytes] : journal_inputs())
        write_file(dir / "journal_fuzz" / ("seed-" + name), bytes);
    printf("wrote %d handover blobs, %zu dispatch inputs and %zu journals under %s\n", i,
           dispatch_inputs().size(), journal_inputs().size(), dir.c_str());
    return 0;
}
