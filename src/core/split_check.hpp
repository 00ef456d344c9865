// SPDX-License-Identifier: Apache-2.0
// A check over many fds, split across threads. A live update's next instance
// checks every fd it received before using any (one inode read each, ~1 us
// here): at 10,000 fds that is a third of the time no client is served, and
// nothing else runs then, so the machine's other CPUs may as well share it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace lu {

// check(begin, end, &why) checks items [begin, end): 0 or -errno with *why.
// Runs it over [0, n) in up to four parts of at least kMinPart items, and
// returns the failure of the lowest part that failed (the one a single pass
// would have reported first), or 0. Items must be independent.
template <typename Check>
int split_check(size_t n, Check check, std::string* why) {
    constexpr size_t kMinPart = 1024;  // below, a thread costs more than it saves
    const size_t cpus = std::max(1u, std::thread::hardware_concurrency());
    const size_t parts = std::min({cpus, size_t{4}, std::max<size_t>(1, n / kMinPart)});
    if (parts == 1) return check(size_t{0}, n, why);
    std::vector<int> errs(parts, 0);
    std::vector<std::string> whys(parts);
    std::vector<std::thread> helpers;
    auto range = [&](size_t i) { return std::pair{n * i / parts, n * (i + 1) / parts}; };
    for (size_t i = 1; i < parts; i++) {
        auto part = [&, i] {
            auto [b, e] = range(i);
            errs[i] = check(b, e, &whys[i]);
        };
        try {
            helpers.emplace_back(part);
        } catch (const std::system_error&) {
            part();  // no thread to be had: done here
        }
    }
    auto [b, e] = range(0);
    errs[0] = check(b, e, &whys[0]);
    for (auto& t : helpers) t.join();
    for (size_t i = 0; i < parts; i++)
        if (errs[i]) return *why = whys[i], errs[i];
    return 0;
}

}  // namespace lu
