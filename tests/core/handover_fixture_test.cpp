// SPDX-License-Identifier: Apache-2.0
// Compatibility across releases: a handover blob written by release 0.1.0
// (format version 1) is committed in tests/fixtures/. Every later release
// must decode it to the same image, or refuse it cleanly (-EPROTONOSUPPORT,
// which makes a live update roll back) if the format version changed — and
// then docs/handover-format.md must say so. Regenerate only when the format
// version changes: LU_WRITE_FIXTURE=1 core_tests --gtest_filter='HandoverFixture.*'
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "handover_format.hpp"

namespace lu {
namespace {

const char* kFixture = LU_SOURCE_DIR "/tests/fixtures/handover-v1.bin";

// What the fixture holds: an empty session, memfd and socket files with
// handler data, the test handler's FLB, one fd slot per file.
HandoverImage fixture_image() {
    HandoverImage img;
    img.liveupdate_num = 3;
    img.sessions.push_back(SessionImage{"empty", {}});
    SessionImage vm{"vm0", {}};
    vm.files.push_back(FileImage{"memfd-v2", 1, std::vector<uint8_t>(32, 0x11), 0});
    vm.files.push_back(FileImage{"socket-v1", 0xffffffffffffffffull, std::vector<uint8_t>(288, 0x22), 1});
    vm.files.push_back(FileImage{"memfd-v2", 7, {}, 2});
    img.sessions.push_back(vm);
    img.flbs.push_back(FlbImage{"test-flb-v1", {'f', 'l', 'b'}, 2});
    img.fd_slots = {{S_IFREG, 1, 100}, {S_IFSOCK, 2, 200}, {S_IFREG, 1, 101}};
    return img;
}

TEST(HandoverFixture, ReleaseV1BlobStillDecodes) {
    if (getenv("LU_WRITE_FIXTURE")) {
        std::vector<uint8_t> blob = encode_handover(fixture_image());
        std::ofstream(kFixture, std::ios::binary).write(reinterpret_cast<char*>(blob.data()),
                                                        static_cast<std::streamsize>(blob.size()));
    }
    std::ifstream in(kFixture, std::ios::binary);
    ASSERT_TRUE(in) << kFixture;
    std::vector<uint8_t> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    HandoverImage got;
    std::string why;
    int err = decode_handover(blob, &got, &why);
    if (kHandoverFormatVersion != 1) {
        // A new format must refuse the old one cleanly, never half-read it.
        EXPECT_EQ(err, -EPROTONOSUPPORT) << why;
        return;
    }
    ASSERT_EQ(err, 0) << why;
    EXPECT_EQ(got, fixture_image());
    EXPECT_EQ(encode_handover(got), blob);  // and we would write the same bytes
}

}  // namespace
}  // namespace lu
