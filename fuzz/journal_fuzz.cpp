// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the crash journal's parser: the first byte is the
// number of fds that came with the journal (% 64), the rest the journal.
// parse_journal must never crash, and what it accepts must account for
// every fd exactly once and write back to the same sessions
// (journal_driver.hpp says what is checked).
//
// Built by fuzz/CMakeLists.txt (fuzz/README.md, scripts/fuzz.sh); by hand:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I src/core \
//       fuzz/journal_fuzz.cpp src/core/journal_format.cpp -lz -o journal_fuzz
#include <cstdio>
#include <cstdlib>

#include "journal_driver.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string err = journal_fuzz::check_input({data, size});
    if (!err.empty()) {
        fprintf(stderr, "journal_fuzz: %s\n", err.c_str());
        abort();
    }
    return 0;
}
