// SPDX-License-Identifier: Apache-2.0
#include "file_handler.hpp"

#include <sys/stat.h>

#include <cerrno>

namespace lu {

// The kernel keys the managed set by inode for memfd and by struct file
// otherwise; the inode is the identity that survives dup() and /proc reopen,
// so it is the safer default for every handler here.
int FileHandler::get_id(int fd, FileId* id) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    *id = FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    return 0;
}

}  // namespace lu
