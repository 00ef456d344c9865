// SPDX-License-Identifier: Apache-2.0
// Helpers for the crash tests: the live-update helpers (real daemons, real
// fds), and waiting for the instance the keeper starts after a kill.
#pragma once

#include "reboot/reboot_util.hpp"

namespace lu::crash_test {

using namespace lu::reboot_test;

// One message with `fds` (SCM_RIGHTS), as an instance or a keeper sends
// them on a link. 0 or -errno.
inline int send_with_fds(int sock, std::span<const uint8_t> bytes, const std::vector<int>& fds) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    std::vector<char> ctl(CMSG_SPACE(sizeof(int) * std::max<size_t>(fds.size(), 1)));
    if (!fds.empty()) {
        mh.msg_control = ctl.data();
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

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
