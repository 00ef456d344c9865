// SPDX-License-Identifier: Apache-2.0
// The upgrade's blob and the engine's side of an upgrade: round trips,
// every truncation and bit flip of a sample, images whose checksum is valid
// but whose structure is not, the fds, the committed fixture, and an engine
// taking another's state over with every state it can be in.
#include "upgrade_format.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>

#include "engine_test_util.hpp"
#include "handover_format.hpp"

namespace lu {
namespace {

using testing::Instance;
using testing::name_of;

// Every kind of record, each field away from its zero.
UpgradeImage sample() {
    UpgradeImage img;
    img.liveupdate_num = 4;
    img.have_incoming = true;
    img.upgrades = 7;
    img.outgoing.liveupdate_num = img.incoming.liveupdate_num = 4;
    img.outgoing.sessions.push_back(SessionImage{"vm0", {}});
    img.outgoing.sessions[0].files.push_back(FileImage{"memfd-v2", 1, std::vector<uint8_t>(32, 0x11), 0});
    img.outgoing.sessions[0].files.push_back(FileImage{"test-v1", 9, {}, 1});
    img.outgoing.sessions.push_back(SessionImage{"empty", {}});
    img.outgoing.flbs.push_back(FlbImage{"test-flb-v1", {'f', 'l', 'b'}, 1});
    img.outgoing.fd_slots = {{S_IFREG, 1, 100}, {S_IFIFO, 2, 200}};
    img.incoming.sessions.push_back(SessionImage{"old-a", {}});
    img.incoming.sessions[0].files.push_back(FileImage{"memfd-v2", 3, {1, 2, 3}, 0});
    img.incoming.sessions[0].files.push_back(FileImage{"memfd-v2", 4, {}, 1});
    img.incoming.sessions.push_back(SessionImage{"old-b", {}});
    img.incoming.fd_slots = {{S_IFREG, 1, 300}, {S_IFREG, 1, 301}};
    img.incoming.flbs.push_back(FlbImage{"test-flb-v1", {'f', 'l', 'b'}, 2});
    img.incoming_flags = {kUpgradeSessionRetrieved | kUpgradeSessionRefuseFinishOnce, 0};
    img.incoming_since_ns = {123456789, 987654321};
    img.incoming_status = {1, -EIO};
    img.incoming_flb_status = {{1, false}};
    ConnImage control;
    control.kind = ConnImage::Control;
    control.uid = 1000;
    control.pid = 42;
    ConnImage held;
    held.kind = ConnImage::Session;
    held.uid = 1001;
    held.pid = 43;
    held.session = 0;
    held.peer_ino = 5555;
    held.has_pending = true;
    held.pending_fd = true;
    held.pending = {9, 8, 7, 6};
    ConnImage in;
    in.kind = ConnImage::Session;
    in.incoming = 1;
    in.session = 0;
    in.peer_ino = 6666;
    img.conns = {control, held, in};
    img.leaked_fds = 1;
    return img;
}

TEST(UpgradeFormat, RoundTrip) {
    const UpgradeImage img = sample();
    std::vector<uint8_t> blob = encode_upgrade(img);
    UpgradeImage got;
    std::string why;
    ASSERT_EQ(decode_upgrade(blob, &got, &why), 0) << why;
    EXPECT_EQ(got, img);
    EXPECT_EQ(upgrade_fd_count(got), 2u + 2u + 3u + 1u + 1u);
    EXPECT_EQ(decode_upgrade(encode_upgrade(UpgradeImage{}), &got, &why), 0) << why;
    EXPECT_EQ(got, UpgradeImage{});
}

// The checksum and the canonical root refuse every flipped bit, and every
// prefix is refused: nothing is built from a blob that was not written whole.
TEST(UpgradeFormat, EveryTruncationAndBitFlipIsRefused) {
    const std::vector<uint8_t> blob = encode_upgrade(sample());
    UpgradeImage out;
    for (size_t n = 0; n < blob.size(); n++)
        ASSERT_NE(decode_upgrade(std::span(blob.data(), n), &out), 0) << "prefix " << n;
    for (size_t i = 0; i < blob.size(); i++)
        for (uint8_t mask : {0x01, 0x80, 0xff}) {
            std::vector<uint8_t> b = blob;
            b[i] ^= mask;
            ASSERT_NE(decode_upgrade(b, &out), 0) << "byte " << i << " ^ " << int(mask);
        }
}

// A reboot's blob is not an upgrade's, nor the other way round.
TEST(UpgradeFormat, TheOtherKindIsRefusedAtTheRoot) {
    UpgradeImage up;
    HandoverImage reboot;
    std::string why;
    EXPECT_NE(decode_upgrade(encode_handover(HandoverImage{}), &up, &why), 0);
    EXPECT_NE(why.find("liveupdate,upgrade-v1"), std::string::npos) << why;
    EXPECT_NE(decode_handover(encode_upgrade(UpgradeImage{}), &reboot, &why), 0);
}

// Images the encoder writes faithfully (with a valid checksum) but that no
// daemon makes: each is refused with a reason, never walked.
TEST(UpgradeFormat, BrokenStructureIsRefused) {
    struct Case {
        const char* name;
        std::function<void(UpgradeImage&)> edit;
    };
    const Case cases[] = {
        {"epoch differs inside", [](UpgradeImage& i) { i.incoming.liveupdate_num = 5; }},
        {"incoming without a handover", [](UpgradeImage& i) { i.have_incoming = false; }},
        {"a session state too few", [](UpgradeImage& i) {
             i.incoming_flags.pop_back();
             i.incoming_since_ns.pop_back();
         }},
        {"unknown session bits", [](UpgradeImage& i) { i.incoming_flags[1] = 1u << 9; }},
        {"orphaned, never retrieved", [](UpgradeImage& i) { i.incoming_flags[1] = kUpgradeSessionOrphaned; }},
        {"a file status too many", [](UpgradeImage& i) { i.incoming_status.push_back(0); }},
        {"status out of range", [](UpgradeImage& i) { i.incoming_status[0] = 2; }},
        {"errno out of range", [](UpgradeImage& i) { i.incoming_status[1] = -5000; }},
        {"FLB status missing", [](UpgradeImage& i) { i.incoming_flb_status.clear(); }},
        {"two control connections", [](UpgradeImage& i) { i.conns.push_back(i.conns[0]); }},
        {"a session served twice", [](UpgradeImage& i) { i.conns.push_back(i.conns[2]); }},
        {"no such session", [](UpgradeImage& i) { i.conns[2].session = 2; }},
        {"invalid direction", [](UpgradeImage& i) { i.conns[2].incoming = 2; }},
        {"invalid kind", [](UpgradeImage& i) { i.conns[0].kind = 4; }},
        {"stale with a session", [](UpgradeImage& i) {
             i.conns[2].kind = ConnImage::Stale;
             i.conns[2].session = 1;
         }},
        {"control with a session", [](UpgradeImage& i) { i.conns[0].session = 1; }},
        {"held fd without a reply", [](UpgradeImage& i) { i.conns[2].pending_fd = true; }},
        {"deserialize error positive", [](UpgradeImage& i) { i.deserialize_err = 5; }},
        {"leaked fds out of range", [](UpgradeImage& i) { i.leaked_fds = uint64_t{1} << 40; }},
        {"duplicate token", [](UpgradeImage& i) { i.outgoing.sessions[0].files[1].token = 1; }},
    };
    for (const Case& c : cases) {
        UpgradeImage img = sample();
        c.edit(img);
        UpgradeImage out;
        std::string why;
        EXPECT_EQ(decode_upgrade(encode_upgrade(img), &out, &why), -EINVAL) << c.name;
        EXPECT_FALSE(why.empty()) << c.name;
    }
}

TEST(UpgradeFormat, FdsAreCheckedByKind) {
    UpgradeImage img;
    ConnImage control;
    control.kind = ConnImage::Control;
    img.conns = {control};
    img.leaked_fds = 1;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
    std::string why;
    EXPECT_EQ(check_upgrade_fds(img, std::vector<int>{a.get(), null.get()}, &why), 0) << why;
    EXPECT_EQ(check_upgrade_fds(img, std::vector<int>{null.get(), null.get()}, &why), -EINVAL);
    EXPECT_EQ(check_upgrade_fds(img, std::vector<int>{a.get()}, &why), -EINVAL);
    EXPECT_EQ(check_upgrade_fds(img, std::vector<int>{a.get(), 999999}, &why), -EBADF);
}

// Compatibility across releases, as for the reboot's blob: the blob of
// upgrade format 1 is committed; a later release reads it to the same image
// or refuses it cleanly (-EPROTONOSUPPORT) and says so in
// docs/handover-format.md. Regenerate only when the format version changes:
// LU_WRITE_FIXTURE=1 core_tests --gtest_filter='UpgradeFormat.Fixture*'
TEST(UpgradeFormat, FixtureOfFormatOneStillDecodes) {
    const char* path = LU_SOURCE_DIR "/tests/fixtures/upgrade-v1.bin";
    if (getenv("LU_WRITE_FIXTURE")) {
        std::vector<uint8_t> blob = encode_upgrade(sample());
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    std::vector<uint8_t> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    UpgradeImage got;
    std::string why;
    int err = decode_upgrade(blob, &got, &why);
    if (kUpgradeFormatVersion != 1) {
        EXPECT_EQ(err, -EPROTONOSUPPORT) << why;
        return;
    }
    ASSERT_EQ(err, 0) << why;
    EXPECT_EQ(got, sample());
    EXPECT_EQ(encode_upgrade(got), blob);
}

// ---- the engine ----

// The state after `from` hands everything to `to`, as an upgrade does (fds
// duplicated, as SCM_RIGHTS would).
int upgrade(Instance& from, Instance& to, std::vector<Session*>* out, std::vector<Session*>* in) {
    Engine::UpgradeState st = from.engine.upgrade_state();
    UpgradeImage img;
    std::string why;
    EXPECT_EQ(decode_upgrade(encode_upgrade(st.image), &img, &why), 0) << why;
    std::vector<UniqueFd> slots, leaked;
    for (int fd : st.slot_fds) slots.push_back(testing::dup_fd(fd));
    for (int fd : st.leaked_fds) leaked.push_back(testing::dup_fd(fd));
    return to.engine.adopt(img, std::move(slots), std::move(leaked), out, in);
}

TEST(EngineUpgrade, EveryStateMovesAndWorksOn) {
    Instance first;
    Session* s = first.create("gone-to-incoming");
    ASSERT_EQ(first.preserve(s, 1), 0);
    ASSERT_EQ(first.preserve(s, 2), 0);
    first.create("fresh-incoming");
    Instance second;
    ASSERT_EQ(testing::hand_over(first, second), 0);
    Session* in = second.retrieve("gone-to-incoming");
    int fd = -1;
    ASSERT_EQ(second.engine.retrieve_fd(in, 1, &fd), 0);
    ASSERT_EQ(second.engine.fail_retrieve("gone-to-incoming", 2, EIO), 0);
    ASSERT_EQ(second.engine.refuse_finish_once("gone-to-incoming"), 0);
    Session* out = second.create("outgoing");
    ASSERT_EQ(second.preserve(out, 7), 0);
    ASSERT_EQ(second.preserve(out, 8), 0);
    second.create("empty");

    Instance third;
    std::vector<Session*> outs, ins;
    ASSERT_EQ(upgrade(second, third, &outs, &ins), 0);
    Engine& e = third.engine;
    EXPECT_EQ(e.liveupdate_num(), 1u);
    ASSERT_EQ(outs.size(), 2u);
    ASSERT_EQ(ins.size(), 2u);
    EXPECT_EQ(outs[0]->name(), "outgoing");
    EXPECT_EQ(outs[0]->files().size(), 2u);
    EXPECT_EQ(outs[0]->files()[1]->token, 8u);
    EXPECT_EQ(e.preserved_files(), second.engine.preserved_files());
    // Outgoing goes on: tokens taken, a new file, and its FLB's count.
    EXPECT_EQ(third.preserve(outs[0], 7), -EEXIST);
    EXPECT_EQ(third.preserve(outs[0], 9), 0);
    // Incoming: retrieved once, the retrieved file again, the failure final,
    // the armed refusal still armed, then finished.
    EXPECT_TRUE(ins[0]->retrieved());
    EXPECT_EQ(e.retrieve_session(name_of("gone-to-incoming"), &in), -EINVAL);
    int again = -1;
    ASSERT_EQ(e.retrieve_fd(ins[0], 1, &again), 0);
    struct stat a, b;
    ASSERT_EQ(fstat(fd, &a), 0);
    ASSERT_EQ(fstat(again, &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_EQ(e.retrieve_fd(ins[0], 2, &again), -EIO);
    EXPECT_EQ(e.finish_session(ins[0]), -EBUSY);
    EXPECT_EQ(e.finish_session(ins[0]), 0);
    Session* fresh = nullptr;
    EXPECT_EQ(e.retrieve_session(name_of("fresh-incoming"), &fresh), 0);
    EXPECT_EQ(e.finish_session(fresh), 0);
}

TEST(EngineUpgrade, AStateThisBuildCannotHoldIsRefused) {
    Instance from;
    Session* s = from.create("app");
    ASSERT_EQ(from.preserve(s, 1), 0);
    Engine bare;  // no test handler: its files have nowhere to go
    Engine::UpgradeState st = from.engine.upgrade_state();
    std::vector<UniqueFd> slots;
    for (int fd : st.slot_fds) slots.push_back(testing::dup_fd(fd));
    std::vector<Session*> outs, ins;
    EXPECT_EQ(bare.adopt(st.image, std::move(slots), {}, &outs, &ins), -ENOENT);
}

}  // namespace
}  // namespace lu
