// SPDX-License-Identifier: Apache-2.0
// The admin request "fault": error paths on demand for agents' tests
// (docs/testing-luo-agents.md#error-paths-on-demand), allowed only on a
// daemon started with --agent-faults (EPERM otherwise), and only to the
// daemon's own user or root, as a reboot:
//
//   {"op":"fault","kind":"freeze","file":K[,"errno":E]}   the next reboot's freeze fails at file K
//   {"op":"fault","kind":"deserialize"}                   the next instance's deserialization fails
//   {"op":"fault","kind":"retrieve","session":S,"token":T[,"errno":E]}
//                                                         RETRIEVE_FD of T in incoming S fails for good
//   {"op":"fault","kind":"finish","session":S}            S's next finish is refused once (EBUSY)
//
// E defaults to EIO. The engine does the failing (src/core/engine_faults.cpp).
#pragma once

#include <sys/types.h>

#include <nlohmann/json_fwd.hpp>

#include "admin.hpp"

namespace lu {

class Server;

void handle_fault_request(Server& server, AdminRef admin, uid_t peer_uid, const nlohmann::json& req);

}  // namespace lu
