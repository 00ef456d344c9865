// SPDX-License-Identifier: Apache-2.0
#include "procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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
    // read(2), not a stream: a process that exits between the open and the
    // read makes it fail with ESRCH, which libstdc++'s filebuf throws.
    int fd = open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    std::string stat(buf, static_cast<size_t>(n));
    size_t close_paren = stat.rfind(')');  // the name may hold spaces and parens
    if (close_paren == std::string::npos) return -1;
    char state;
    int ppid = -1;
    if (sscanf(stat.c_str() + close_paren + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return -1;
    return ppid;
}

}  // namespace lu::ctl
