// SPDX-License-Identifier: Apache-2.0
#include "memfd_handler.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "unique_fd.hpp"

namespace lu {

namespace {

// The kernel's test: shmem-backed and unlinked (shmem_file && !i_nlink).
bool is_memfd_like(int fd, struct stat* st) {
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_nlink != 0) return false;
    struct statfs sfs;
    return fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// The kernel refuses more than UINT_MAX pages (its folio count is 32-bit).
bool too_many_pages(uint64_t size) {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    return size / page + (size % page != 0) > UINT_MAX;
}

// Size and position: what preserve records and freeze refreshes.
int capture_size_pos(int fd, MemfdSer* ser) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    const off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos < 0) return -errno;
    if (too_many_pages(static_cast<uint64_t>(st.st_size))) return -EFBIG;
    ser->size = static_cast<uint64_t>(st.st_size);
    ser->pos = static_cast<uint64_t>(pos);
    return 0;
}

// The access mode of the retrieved fd: never more than the preserved fd had.
int open_mode(uint32_t flags) {
    if (flags & kMemfdNoWrite) return O_RDONLY;
    if (flags & kMemfdNoRead) return O_WRONLY;
    return O_RDWR;
}

uint32_t access_flags(int fd_flags) {
    switch (fd_flags & O_ACCMODE) {
        case O_RDONLY: return kMemfdNoWrite;
        case O_WRONLY: return kMemfdNoRead;
        default: return 0;
    }
}

// A new open file description of `fd`'s inode, as the kernel's new file:
// its /proc/self/fd link opened, from that directory when we hold it (a
// third less than walking the whole path).
int reopen(int proc_fds, int fd, uint32_t flags) {
    char path[32];
    std::snprintf(path, sizeof path, proc_fds >= 0 ? "%d" : "/proc/self/fd/%d", fd);
    const int r = openat(proc_fds >= 0 ? proc_fds : AT_FDCWD, path, open_mode(flags) | O_CLOEXEC | O_LARGEFILE);
    return r < 0 ? -errno : r;
}

// Whether reopen(fd, flags) would pass the inode's permission check, with
// this process's effective ids, as open() checks them. False with errno.
// A kernel before faccessat2 (5.8) takes no AT_EMPTY_PATH: there the
// reopen itself is tried.
bool may_reopen(int proc_fds, int fd, uint32_t flags) {
    const int mode = open_mode(flags);
    const int want = mode == O_RDONLY ? R_OK : mode == O_WRONLY ? W_OK : R_OK | W_OK;
    if (faccessat(fd, "", want, AT_EMPTY_PATH | AT_EACCESS) == 0) return true;
    if (errno != EINVAL && errno != ENOSYS) return false;
    const int probe = reopen(proc_fds, fd, flags);
    if (probe < 0) return errno = -probe, false;
    close(probe);
    return true;
}

// The record's bytes, exactly one MemfdSer, or false.
bool load(const std::vector<uint8_t>& bytes, MemfdSer* ser) {
    if (bytes.size() != sizeof *ser) return false;
    std::memcpy(ser, bytes.data(), sizeof *ser);
    return true;
}

// In place: freeze rewrites a record of the same size, no allocation per file.
void store(const MemfdSer& ser, std::vector<uint8_t>* bytes) {
    const auto* p = reinterpret_cast<const uint8_t*>(&ser);
    bytes->assign(p, p + sizeof ser);
}

}  // namespace

MemfdHandler::MemfdHandler() : proc_fds_(open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC)) {}

bool MemfdHandler::can_preserve(int fd) {
    struct stat st;
    return is_memfd_like(fd, &st);
}

int MemfdHandler::preserve(FileOpArgs& args) {
    MemfdSer ser{};
    ser.version = kMemfdSerVersion;
    // A memfd created without MFD_ALLOW_SEALING reports F_SEAL_SEAL: fine.
    const int seals = fcntl(args.file, F_GET_SEALS);
    if (seals < 0) return -errno;
    if (static_cast<uint32_t>(seals) & ~kMemfdLuoAllSeals) return -EOPNOTSUPP;
    ser.seals = static_cast<uint32_t>(seals);
    const int fl = fcntl(args.file, F_GETFL);
    if (fl < 0) return -errno;
    ser.flags = access_flags(fl);
    if (int r = capture_size_pos(args.file, &ser); r < 0) return r;
    // What could not be retrieved is refused now, not at retrieve for good:
    // the reopen's permission check, asked of the inode itself (a probe
    // reopen through /proc cost more than the rest of a preserve together).
    if (!may_reopen(proc_fds_.get(), args.file, ser.flags)) return -errno;
    store(ser, &args.serialized_data);
    return 0;
}

// The kernel refreshes only pos here; we refresh the size too, because we
// could not freeze it at preserve (see the header).
int MemfdHandler::freeze(FileOpArgs& args) {
    MemfdSer ser;
    if (!load(args.serialized_data, &ser)) return -EINVAL;
    if (int r = capture_size_pos(args.file, &ser); r < 0) return r;
    store(ser, &args.serialized_data);
    return 0;
}

int MemfdHandler::retrieve(FileOpArgs& args) {
    // The bytes and the fd both come from the previous instance: check both.
    MemfdSer ser;
    if (!load(args.serialized_data, &ser)) return -EINVAL;
    if (ser.version != kMemfdSerVersion || (ser.flags & ~(kMemfdNoWrite | kMemfdNoRead)) ||
        ser.flags == (kMemfdNoWrite | kMemfdNoRead) || ser.pad != 0)
        return -EINVAL;
    if (ser.seals & ~kMemfdLuoAllSeals) return -EOPNOTSUPP;
    if (ser.pos > static_cast<uint64_t>(INT64_MAX) || too_many_pages(ser.size)) return -EINVAL;

    struct stat st;
    if (!is_memfd_like(args.preserved, &st) || static_cast<uint64_t>(st.st_size) != ser.size)
        return -EINVAL;
    // Seals cannot be removed, so the recorded ones must all still be there;
    // more is fine (added after preserve; see the header).
    const int seals = fcntl(args.preserved, F_GET_SEALS);
    if (seals < 0 || (static_cast<uint32_t>(seals) & ser.seals) != ser.seals) return -EINVAL;

    const int r = reopen(proc_fds_.get(), args.preserved, ser.flags);
    if (r < 0) return r;
    UniqueFd fd(r);
    if (lseek(fd.get(), static_cast<off_t>(ser.pos), SEEK_SET) < 0) return -errno;
    args.file = fd.release();
    return 0;
}

}  // namespace lu
