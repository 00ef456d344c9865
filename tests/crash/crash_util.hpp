// SPDX-License-Identifier: Apache-2.0
// Helpers for the crash tests: the live-update helpers (real daemons, real
// fds), and waiting for the instance the keeper starts after a kill.
#pragma once

#include "reboot/reboot_util.hpp"

namespace lu::crash_test {

using namespace lu::reboot_test;

// The status of the instance serving after `killed` died, or null if none
// answers within 10 s (a liveness bound: it takes milliseconds).
inline json wait_recovered(const DaemonProcess& d, pid_t killed) {
    for (int i = 0; i < 1000; i++) {
        json s = d.status();
        if (!s.is_null() && s["pid"].get<pid_t>() != killed) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no instance serves after pid " << killed << " was killed";
    return {};
}

// The names of the sessions a status lists.
inline std::set<std::string> names_of(const json& status) {
    std::set<std::string> names;
    if (status.is_object())
        for (const json& s : status["sessions"]) names.insert(s["name"].get<std::string>());
    return names;
}

}  // namespace lu::crash_test
