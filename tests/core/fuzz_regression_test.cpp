// SPDX-License-Identifier: Apache-2.0
// handover_fuzz inputs replayed through decode_handover: the seed corpus
// (fuzz/corpus/handover_fuzz, written by fuzz/corpus_gen.cpp) must stay valid
// blobs that round-trip, so a format change that breaks them is noticed (then
// regenerate them, fuzz/README.md). Crashes the fuzzer finds go here too.
// journal_fuzz's seeds likewise, through the fuzz target's own checks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "../../fuzz/journal_driver.hpp"
#include "handover_format.hpp"

namespace lu {
namespace {

namespace fs = std::filesystem;

const fs::path kCorpus = fs::path(LU_SOURCE_DIR) / "fuzz/corpus/handover_fuzz";
const fs::path kJournalCorpus = fs::path(LU_SOURCE_DIR) / "fuzz/corpus/journal_fuzz";

TEST(HandoverFuzzRegression, SeedCorpusDecodesAndRoundTrips) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(kCorpus)) {
        std::ifstream f(e.path(), std::ios::binary);
        const std::vector<uint8_t> blob(std::istreambuf_iterator<char>(f), {});
        HandoverImage image, again;
        std::string why;
        ASSERT_EQ(decode_handover(blob, &image, &why), 0) << e.path() << ": " << why;
        EXPECT_EQ(encode_handover(image), blob) << e.path();
        ASSERT_EQ(decode_handover(encode_handover(image), &again), 0) << e.path();
        EXPECT_EQ(again, image) << e.path();
        n++;
    }
    EXPECT_GE(n, 5);
}

// Every seed is a journal parse_journal accepts, as is and resealed, and
// keeps journal_fuzz's invariants.
TEST(JournalFuzzRegression, SeedCorpusParsesAndKeepsTheInvariants) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(kJournalCorpus)) {
        std::ifstream f(e.path(), std::ios::binary);
        const std::vector<uint8_t> input(std::istreambuf_iterator<char>(f), {});
        int accepted = 0;
        EXPECT_EQ(journal_fuzz::check_input(input, &accepted), "") << e.path();
        EXPECT_EQ(accepted, 2) << e.path();
        n++;
    }
    EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace lu
