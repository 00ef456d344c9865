// SPDX-License-Identifier: Apache-2.0
// Socket activation: the control and admin listeners, when systemd (or
// systemd-socket-activate) created them and passed them as LISTEN_FDS. Each
// is recognized by its name in LISTEN_FDNAMES ("control", "admin"), else by
// the file it is bound to (<dir>/control, <dir>/admin). Taking them instead
// of binding our own lets the sockets exist before the daemon does (clients
// queue until it serves) and outlive a restart of the service.
#pragma once

#include <string>

#include "unique_fd.hpp"

namespace lu {

struct ActivatedListeners {
    UniqueFd control, admin;  // both set, or neither (nothing was passed)
    std::string error;        // set if something was passed but is not usable
};

// Takes the listeners the service manager passed, checking that each is a
// listening AF_UNIX SOCK_SEQPACKET socket, and made non-blocking and
// close-on-exec as our own are. Clears LISTEN_FDS and friends, so that no
// child takes them for its own.
ActivatedListeners take_activated_listeners();

}  // namespace lu
