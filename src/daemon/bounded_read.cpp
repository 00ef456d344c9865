// SPDX-License-Identifier: Apache-2.0
#include "bounded_read.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace lu {

int read_whole_file(int fd, uint64_t max_size, std::vector<uint8_t>* out) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        static_cast<uint64_t>(st.st_size) > max_size)
        return -EINVAL;
    out->resize(static_cast<size_t>(st.st_size));
    for (size_t off = 0; off < out->size();) {
        ssize_t n = pread(fd, out->data() + off, out->size() - off, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -EIO;
        off += static_cast<size_t>(n);
    }
    return 0;
}

int recv_message_within(int sock, size_t max_bytes, size_t max_fds, int timeout_ms, Message* out) {
    for (;;) {
        pollfd p{sock, POLLIN, 0};
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -ETIMEDOUT;
        int r = recv_message(sock, max_bytes, max_fds, out);
        if (transient(r)) usleep(1000);
        else if (r != -EAGAIN) return r;
    }
}

}  // namespace lu
