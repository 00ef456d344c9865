// Admin requests (the admin socket): status, and the live update.
#pragma once

#include <sys/types.h>

#include <string>

namespace lu {

class Server;

void handle_admin_request(Server& server, int admin_fd, uid_t peer_uid, const std::string& request);
std::string status_json(Server& server);

}  // namespace lu
