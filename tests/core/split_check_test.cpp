// SPDX-License-Identifier: Apache-2.0
// split_check: every item checked exactly once, whatever the split, and the
// failure reported is the one a single pass would have reported first.
#include "split_check.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>

namespace lu {
namespace {

// Items whose index is in `bad` fail, each with its own errno and text.
struct Counting {
    std::vector<std::atomic<int>> seen;
    std::set<size_t> bad;
    explicit Counting(size_t n, std::set<size_t> b = {}) : seen(n), bad(std::move(b)) {}
    int operator()(size_t begin, size_t end, std::string* why) {
        for (size_t i = begin; i < end; i++) {
            seen[i]++;
            if (bad.count(i)) return *why = "item " + std::to_string(i), -static_cast<int>(1 + i % 100);
        }
        return 0;
    }
};

TEST(SplitCheck, EveryItemOnceAtEverySize) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{1023}, size_t{1024}, size_t{2048}, size_t{5000},
                     size_t{100'001}}) {
        Counting c(n);
        std::string why;
        EXPECT_EQ(split_check(n, std::ref(c), &why), 0) << n;
        for (size_t i = 0; i < n; i++) ASSERT_EQ(c.seen[i].load(), 1) << "n " << n << " item " << i;
    }
}

TEST(SplitCheck, TheFirstFailureInItemOrderIsTheOneReported) {
    // Failures late in the last part and early in a middle one: the middle
    // one's comes first in item order.
    Counting c(10'000, {9'999, 6'001, 6'500});
    std::string why;
    EXPECT_EQ(split_check(10'000, std::ref(c), &why), -static_cast<int>(1 + 6'001 % 100));
    EXPECT_EQ(why, "item 6001");
    // One failure only, in the first part.
    Counting first(10'000, {3});
    EXPECT_EQ(split_check(10'000, std::ref(first), &why), -4);
    EXPECT_EQ(why, "item 3");
}

}  // namespace
}  // namespace lu
