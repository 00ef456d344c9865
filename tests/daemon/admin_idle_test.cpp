// SPDX-License-Identifier: Apache-2.0
// Idle admin clients cannot lock everyone out of status and reboot: past the
// bound of 16 connections, one that has sent nothing for 2 s makes room.
#include <poll.h>

#include <chrono>
#include <thread>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

TEST(AdminAccess, IdleClientsMakeRoomForANewRequest) {
    DaemonProcess d;
    std::vector<Fd> idle;
    for (int i = 0; i < 16; i++) {
        idle.push_back(raw_connect(d.dir() + "/admin"));
        ASSERT_TRUE(idle.back());
    }
    // Each idle client has been accepted once status answers (the loop
    // accepts in order); then they grow old.
    std::this_thread::sleep_for(std::chrono::milliseconds(2200));
    nlohmann::json s;
    for (int i = 0; i < 50 && s.is_null(); i++) {  // bounded: a few loop turns
        s = d.status();
        if (s.is_null()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(s.is_object()) << "16 idle admin clients locked status out";
    EXPECT_EQ(s["pid"], d.pid());
    // The evicted client sees its connection end, nothing else.
    size_t ended = 0;
    for (auto& fd : idle) {
        pollfd p{fd.get(), POLLIN, 0};
        ended += poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLIN));
    }
    EXPECT_GE(ended, 1u);
}

}  // namespace
}  // namespace lu::testing
