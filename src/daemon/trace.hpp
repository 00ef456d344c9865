// SPDX-License-Identifier: Apache-2.0
// A trace of what agents asked (docs/testing-luo-agents.md#the-trace): every
// uAPI request, one line each, with the sender's pid and command name, the
// arguments that matter (session name, token, fd type) and the errno. The
// daemon keeps the last kTraceLines in a ring, returned by the admin request
// {"op":"trace"[,"since":SEQ]} (`liveupdatectl trace`), and logs each line at
// debug level (--log-level debug).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "admin.hpp"
#include "server.hpp"

namespace lu {

inline constexpr size_t kTraceLines = 2048;

// One request on its way: described before the engine consumes its fd,
// completed with its errno.
struct TraceEntry {
    pid_t pid = 0;
    std::string what;  // "PRESERVE_FD session=\"s\" token=7 fd=memfd"
};

// Called by the uAPI dispatch (hooks in uapi_dispatch.cpp and server.cpp).
TraceEntry trace_begin(const Conn& c, const Message& m);
void trace_end(const TraceEntry& e, int err);  // err: positive errno or 0
// open("/dev/liveupdate"): a control connection accepted or refused.
void trace_open(pid_t pid, int err);

void handle_trace_request(Server& server, AdminRef admin, const nlohmann::json& req);

// Sender credentials on each request (SO_PASSCRED): the pid of the process
// that sent it, which for a session shared by fork or SCM_RIGHTS is not the
// process that created it.
void enable_sender_pid(int sock);

}  // namespace lu
