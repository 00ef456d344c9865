// SPDX-License-Identifier: Apache-2.0
#include "procfs.hpp"

#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace lu::ctl {

std::vector<pid_t> all_pids() {
    std::vector<pid_t> pids;
    DIR* d = opendir("/proc");
    if (!d) return pids;
    while (dirent* e = readdir(d)) {
        char* end;
        long v = strtol(e->d_name, &end, 10);
        if (*end == '\0' && v > 0) pids.push_back(static_cast<pid_t>(v));
    }
    closedir(d);
    return pids;
}

pid_t parent_of(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), {});
    size_t close_paren = stat.rfind(')');  // the name may hold spaces and parens
    if (close_paren == std::string::npos) return -1;
    char state;
    int ppid = -1;
    if (sscanf(stat.c_str() + close_paren + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return -1;
    return ppid;
}

}  // namespace lu::ctl
