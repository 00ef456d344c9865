// SPDX-License-Identifier: Apache-2.0
#include "file_handler.hpp"

#include <cerrno>

namespace lu {

// The kernel keys the managed set by inode for memfd and by struct file
// otherwise; the inode is the identity that survives dup() and /proc reopen,
// so it is the safer default for every handler here.
int FileHandler::get_id(int, const FdSlot& slot, FileId* id) {
    if (slot.type == 0) return -EBADF;  // the engine could not fstat the fd
    *id = FileId{slot.dev, slot.ino};
    return 0;
}

}  // namespace lu
