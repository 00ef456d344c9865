// SPDX-License-Identifier: Apache-2.0
// The memfd file handler, compatible "memfd-v2": the kernel's mm/memfd_luo.c
// in userspace. The data never moves: the memfd's inode travels to
// the next instance as the engine's fd, and retrieve reopens it.
//
// Accepted: a regular file on shmem (fstatfs TMPFS_MAGIC) with st_nlink == 0,
// that is a memfd or an unlinked tmpfs / O_TMPFILE file, as the kernel's
// shmem_file && !i_nlink. Hugetlb memfds are not shmem and are refused.
//
// Differences from the kernel (for docs/kernel-differences.md):
// - Size is not frozen. The kernel sets SHMEM_F_MAPPING_FROZEN at preserve
//   (ftruncate, writes past EOF and fallocate fail with EPERM until
//   unpreserve); userspace cannot do that reversibly to another process's
//   memfd. We record the size at preserve and again at freeze, and retrieve
//   refuses (EINVAL) a memfd whose size changed after the freeze.
// - The retrieved file is the same inode, not a fresh one. So: seals added
//   after preserve are still on it (seals can never be removed; the kernel's
//   new inode gets only the preserve-time seals), and retrieve accepts actual
//   seals that are a superset of the recorded ones; the name, owner, mode and
//   holes are kept (the kernel recreates an unnamed, fully allocated memfd
//   owned by the retriever); and any process of the old instance that still
//   holds the memfd shares the data with the retriever. The checks at
//   retrieve are a snapshot of a file others may still change.
// - Pages are not pinned: they may be swapped or migrated while preserved.
// - The new fd is a reopen of /proc/self/fd/N: a new open file description,
//   O_LARGEFILE|O_CLOEXEC with the access mode below, position set to the
//   recorded one, as the kernel's fresh file. Write seals do not prevent an O_RDWR open (writes then
//   fail with EPERM, as on the kernel's resealed file), but the open is subject
//   to the inode's permission bits: a memfd whose owner chmod-ed it away from
//   the daemon's uid fails with EACCES (a daemon running as root is not
//   affected). It needs /proc mounted.
// - The new fd never grants more than the preserved one held: its access
//   mode is the preserved fd's (the kernel always gives O_RDWR, but on a new
//   inode, to its one agent, once every old holder is gone; here the inode
//   is shared and the daemon may be root, whose reopen ignores the mode
//   bits). Preserve asks the inode the reopen's permission question
//   (faccessat with AT_EMPTY_PATH), so a memfd this daemon could not reopen
//   (mode bits against a non-root daemon) is refused at preserve with the
//   reopen's errno (EACCES), not at retrieve for good.
#pragma once

#include <fcntl.h>

#include <cstdint>

#include "file_handler.hpp"
#include "unique_fd.hpp"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

namespace lu {

// The kernel's MEMFD_LUO_ALL_SEALS: the seals a preserved memfd may carry.
inline constexpr uint32_t kMemfdLuoAllSeals =
    F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

// serialized_data: exactly these 32 bytes, native-endian (the handover never
// leaves the machine). Retrieve refuses any other length, version or flags, a
// non-zero pad, a pos above INT64_MAX or a size above UINT32_MAX pages with
// EINVAL, and seals outside kMemfdLuoAllSeals with EOPNOTSUPP (the kernel's
// errno for them, in memfd_luo_retrieve).
struct MemfdSer {
    uint32_t version;  // kMemfdSerVersion
    uint32_t flags;    // kMemfdNoRead/kMemfdNoWrite: what the preserved fd could not do
    uint64_t pos;      // file position of the preserved open file description, refreshed at freeze
    uint64_t size;     // st_size at preserve, refreshed at freeze
    uint32_t seals;    // F_GET_SEALS at preserve only (as the kernel)
    uint32_t pad;      // 0
};
static_assert(sizeof(MemfdSer) == 32);
inline constexpr uint32_t kMemfdSerVersion = 1;
// The preserved fd's access mode, as what it lacked: 0 is O_RDWR, which a
// handover written before these flags existed also means.
inline constexpr uint32_t kMemfdNoWrite = 1u << 0;  // O_RDONLY
inline constexpr uint32_t kMemfdNoRead = 1u << 1;   // O_WRONLY

class MemfdHandler final : public FileHandler {
  public:
    MemfdHandler();
    std::string_view compatible() const override { return "memfd-v2"; }
    bool can_preserve(int fd) override;
    int preserve(FileOpArgs& args) override;
    // Nothing to undo: preserve pins and freezes nothing in userspace.
    void unpreserve(FileOpArgs&) override {}
    int freeze(FileOpArgs& args) override;
    int retrieve(FileOpArgs& args) override;
    // A never-retrieved memfd is released when the engine closes its fd.
    void finish(FileOpArgs&) override {}

  private:
    UniqueFd proc_fds_;  // /proc/self/fd, where retrieve reopens (-1: the full path is walked)
};

}  // namespace lu
