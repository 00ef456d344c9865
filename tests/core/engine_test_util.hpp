// SPDX-License-Identifier: Apache-2.0
// Shared fixtures for the engine tests: an engine with the test handler and
// its FLB registered, pipes as preservable files, and an in-process "next
// instance" that receives the handover as the daemon's next instance would.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <memory>

#include "engine.hpp"
#include "testing/test_flb.hpp"
#include "testing/test_handler.hpp"

namespace lu::testing {

using Name = std::array<uint8_t, kSessionNameLength>;

inline Name name_of(const char* s) {
    Name n{};
    memcpy(n.data(), s, strnlen(s, n.size()));
    return n;
}

// The read end of a fresh pipe: a file only the test handler accepts.
inline UniqueFd new_pipe() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
    close(p[1]);
    return UniqueFd(p[0]);
}

inline UniqueFd dup_fd(int fd) { return UniqueFd(fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

struct Instance {
    explicit Instance(Limits limits = {}) : engine(limits) {
        auto h = std::make_unique<TestHandler>();
        th = h.get();
        EXPECT_EQ(engine.register_file_handler(std::move(h)), 0);
        EXPECT_EQ(engine.register_flb(th, &flb), 0);
    }
    Session* create(const char* name) {
        Session* s = nullptr;
        EXPECT_EQ(engine.create_session(name_of(name), &s), 0) << name;
        return s;
    }
    Session* retrieve(const char* name) {
        Session* s = nullptr;
        EXPECT_EQ(engine.retrieve_session(name_of(name), &s), 0) << name;
        return s;
    }
    int preserve(Session* s, uint64_t token) { return engine.preserve_fd(s, token, new_pipe()); }

    TestFlb flb;  // declared before engine: outlives it
    Engine engine;
    TestHandler* th = nullptr;
};

// Freezes `from`, hands its state to `to` (fds duplicated, as SCM_RIGHTS
// would) and deserializes it there. Returns deserialize's result.
inline int hand_over(Instance& from, Instance& to) {
    EXPECT_EQ(from.engine.reboot_freeze(), 0);
    Handover h = from.engine.handover();
    std::vector<UniqueFd> fds;
    for (int fd : h.fds) fds.push_back(dup_fd(fd));
    return to.engine.deserialize(std::move(h.image), std::move(fds));
}

}  // namespace lu::testing
