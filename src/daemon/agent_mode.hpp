// SPDX-License-Identifier: Apache-2.0
// How this daemon was started for people testing LUO agents
// (docs/testing-luo-agents.md): --strict (only what the kernel has),
// --kernel-release (which release's uAPI checks), --agent-faults (error
// paths on demand). One per daemon process, as the kernel's LUO
// is one per boot: the hooks in the server, the admin requests and the live
// update reach it through agent_mode() rather than through every
// constructor. A daemon started without these options behaves as it always
// did.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernel_profile.hpp"

namespace CLI {
class App;
}

namespace lu {

struct AgentMode {
    // --strict: the kernel's handlers (memfd alone) and no userspace
    // extension; docs/kernel-differences.md lists what is refused.
    bool strict = false;
    const KernelProfile* profile = &newest_kernel_profile();
    // --agent-faults: the admin request "fault" is allowed (agent_faults.hpp).
    bool faults = false;
    // The previous instance was asked to make this one's deserialization
    // fail (the hidden --agent-fault deserialize it passes).
    bool fail_deserialize = false;
    // Armed here: the next instance gets --agent-fault deserialize.
    bool next_fails_deserialize = false;
};

AgentMode& agent_mode();

// The command line, as parsed; apply_agent_options() checks it.
struct AgentOptions {
    bool strict = false;
    std::string kernel_release;
    bool faults = false;
    std::string fault;  // hidden, from the previous instance: "deserialize"
};

void add_agent_options(CLI::App& app, AgentOptions* o);
// Stores the options into agent_mode(). An error
// message (a usage error) or "".
std::string apply_agent_options(const AgentOptions& o, bool test_handler);
// What the next instance must be told to behave as this one. An armed
// deserialization fault goes with it, unless the next instance only
// validates (a dry run), and is then disarmed.
void add_next_instance_args(std::vector<std::string>* args, bool validate_only);
// "strict", "kernel_release", "agent_faults" for status.
void add_agent_status(nlohmann::json* status);

}  // namespace lu
