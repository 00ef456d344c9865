// SPDX-License-Identifier: Apache-2.0
// Admin requests (the admin socket): status, and the live update.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace lu {

class Server;

// An admin connection, by fd and by the serial it was accepted with: an fd
// number is reused as soon as it is closed, and an answer (the outcome of a
// live update, say) must never reach another client that got the same fd.
struct AdminRef {
    int fd = -1;
    uint64_t serial = 0;
};

void handle_admin_request(Server& server, AdminRef admin, uid_t peer_uid, const std::string& request);
std::string status_json(Server& server);

}  // namespace lu
