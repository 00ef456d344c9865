// SPDX-License-Identifier: Apache-2.0
#include "agent_mode.hpp"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace lu {

AgentMode& agent_mode() {
    static AgentMode mode;
    return mode;
}

void add_agent_options(CLI::App& app, AgentOptions* o) {
    std::string releases;
    for (const KernelProfile& p : kernel_profiles())
        releases += (releases.empty() ? "" : ", ") + std::string(p.release);
    app.add_flag("--strict", o->strict,
                 "only what the kernel has: the memfd handler alone, no userspace extension");
    app.add_option("--kernel-release", o->kernel_release,
                   "the kernel release whose uAPI behaviour to reproduce (" + releases +
                       "; default: " + std::string(newest_kernel_profile().release) + ")");
    app.add_flag("--agent-faults", o->faults,
                 "allow error paths on demand (`liveupdatectl fault`); for agents' tests, "
                 "never in production");
    app.add_option("--agent-fault", o->fault)->group("");  // set by the previous instance
}

std::string apply_agent_options(const AgentOptions& o, bool test_handler) {
    AgentMode& m = agent_mode();
    if (!o.kernel_release.empty()) {
        m.profile = find_kernel_profile(o.kernel_release);
        if (!m.profile) return "--kernel-release " + o.kernel_release + ": not a modelled release";
    }
    if (o.strict && test_handler) return "--strict: the test handler is not the kernel's";
    if (!o.fault.empty() && (o.fault != "deserialize" || !o.faults))
        return "--agent-fault " + o.fault + ": unknown, or without --agent-faults";
    m.strict = o.strict;
    m.faults = o.faults;
    m.fail_deserialize = o.fault == "deserialize";
    return "";
}


void add_next_instance_args(std::vector<std::string>* args, bool validate_only) {
    // Only what differs from the defaults: a next binary older than these
    // options must still start when they are not used.
    AgentMode& m = agent_mode();
    if (m.strict) args->push_back("--strict");
    if (m.profile != &newest_kernel_profile())
        args->insert(args->end(), {"--kernel-release", std::string(m.profile->release)});
    if (m.faults) args->push_back("--agent-faults");
    if (m.next_fails_deserialize && !validate_only) {
        args->insert(args->end(), {"--agent-fault", "deserialize"});
        m.next_fails_deserialize = false;
    }
}

void add_agent_status(nlohmann::json* status) {
    const AgentMode& m = agent_mode();
    (*status)["strict"] = m.strict;
    (*status)["kernel_release"] = std::string(m.profile->release);
    (*status)["agent_faults"] = m.faults;
}

}  // namespace lu
