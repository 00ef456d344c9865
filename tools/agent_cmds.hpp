// SPDX-License-Identifier: Apache-2.0
//
// liveupdatectl's commands for people testing LUO agents
// (docs/testing-luo-agents.md): `fault` arms an error path of a daemon
// started with --agent-faults; `trace` prints what agents asked.
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace lu::ctl {

struct FaultArgs {
    std::string kind;
    uint64_t file = 0;
    std::string session;
    uint64_t token = 0;
    std::string err;  // a number or a name (EIO); empty: the daemon's default
    bool json = false;
};

struct TraceArgs {
    bool follow = false;
    bool json = false;
};

CLI::App* add_fault_command(CLI::App& app, FaultArgs* a);
CLI::App* add_trace_command(CLI::App& app, TraceArgs* a);
int run_fault(const FaultArgs& a);
int run_trace(const TraceArgs& a);

}  // namespace lu::ctl
