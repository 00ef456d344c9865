// SPDX-License-Identifier: Apache-2.0
// The handover's fd table: what each slot records of its file, and the check
// that the fds received are those files, before anything is walked.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "handover_layout.hpp"
#include "split_check.hpp"

namespace lu {

using handover_layout::fail;

FdSlot fd_slot_of(const struct stat& st) {
    return {static_cast<uint32_t>(st.st_mode & S_IFMT), static_cast<uint64_t>(st.st_dev),
            static_cast<uint64_t>(st.st_ino)};
}

int check_handover_fds(const HandoverImage& image, std::span<const int> fds, std::string* why) {
    if (fds.size() != image.fd_slots.size())
        return fail(why, std::to_string(fds.size()) + " fds for " +
                             std::to_string(image.fd_slots.size()) + " fd slots");
    return split_check(fds.size(), [&](size_t begin, size_t end, std::string* part_why) {
        for (size_t i = begin; i < end; i++) {
            // Built only on failure: this runs once per fd handed over.
            auto at = [i] { return "fd slot " + std::to_string(i); };
            struct stat st;
            if (fstat(fds[i], &st) != 0) {  // EBADF: the fd is not open
                const int err = errno;
                return fail(part_why, at() + ": fd " + std::to_string(fds[i]) + ": " + std::strerror(err),
                            -err);
            }
            const FdSlot got = fd_slot_of(st);
            const FdSlot& want = image.fd_slots[i];
            if (got.type != want.type)
                return fail(part_why, at() + ": type " + std::to_string(got.type) + ", expected " +
                                          std::to_string(want.type));
            if (got.dev != want.dev || got.ino != want.ino)
                return fail(part_why, at() + ": not the recorded file (dev/inode differ)");
        }
        return 0;
    }, why);
}

}  // namespace lu
