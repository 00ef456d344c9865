// SPDX-License-Identifier: Apache-2.0
#include "socket_activation.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

namespace lu {

namespace {

// The last component of the path a unix socket is bound to ("" if none).
std::string bound_name(int fd) {
    sockaddr_un sa{};
    socklen_t len = sizeof sa;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) < 0 || sa.sun_family != AF_UNIX ||
        len <= offsetof(sockaddr_un, sun_path) || sa.sun_path[0] == '\0')
        return "";
    std::string path(sa.sun_path, strnlen(sa.sun_path, len - offsetof(sockaddr_un, sun_path)));
    return path.substr(path.rfind('/') + 1);
}

}  // namespace

ActivatedListeners take_activated_listeners() {
    ActivatedListeners out;
    char** names = nullptr;
    int n = sd_listen_fds_with_names(1, &names);
    if (n <= 0) {
        if (n < 0) out.error = std::string("socket activation: LISTEN_FDS: ") + strerror(-n);
        return out;
    }
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        std::string name = names && names[i] ? names[i] : "";
        if (names) free(names[i]);
        // Which listener: its name (systemd-socket-activate --fdname), else
        // the file it is bound to. One socket unit gives every fd the same
        // FileDescriptorName=, so liveupdated.socket is told apart by path.
        std::string role = name == "control" || name == "admin" ? name : bound_name(fd);
        UniqueFd* slot = role == "control" ? &out.control : role == "admin" ? &out.admin : nullptr;
        if (!slot || *slot) {
            if (out.error.empty())
                out.error = "socket activation: fd " + std::to_string(fd) + " (name \"" + name +
                            "\", socket \"" + bound_name(fd) +
                            "\") is not the one \"control\" or the one \"admin\" listener";
            close(fd);
            continue;
        }
        slot->reset(fd);
        if (sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, nullptr, 0) <= 0 && out.error.empty())
            out.error = "socket activation: \"" + role +
                        "\" is not a listening AF_UNIX SOCK_SEQPACKET socket "
                        "(ListenSequentialPacket= in the socket unit)";
        // As our own listeners are: the loop accepts until EAGAIN, and no
        // child but the next instance (which gets them explicitly) inherits them.
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    free(names);
    if (out.error.empty() && (!out.control || !out.admin))
        out.error = std::string("socket activation: no \"") + (out.control ? "admin" : "control") +
                    "\" listener was passed; both are needed";
    if (!out.error.empty()) {
        out.control.reset();
        out.admin.reset();
    } else {
        spdlog::info("socket activation: serving on the listeners the service manager passed");
    }
    return out;
}

}  // namespace lu
