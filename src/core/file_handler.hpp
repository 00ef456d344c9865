// SPDX-License-Identifier: Apache-2.0
// The file handler interface: the userspace twin of the kernel's
// struct liveupdate_file_handler / liveupdate_file_ops.
//
// A "file" here is a file descriptor owned by the engine. In the kernel, LUO
// holds a reference to the struct file; here the engine holds its own fd to
// the same open file description. Across a live update, that fd is what
// travels to the next instance (as KHO-preserved pages do in the kernel): the
// incoming side sees it as `preserved`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "handover_image.hpp"

namespace lu {

class Flb;
class FileHandler;

// What identifies the backing object of a file, for the global "managed
// files" set (the kernel's luo_preserved_files xarray, keyed by get_id()).
struct FileId {
    uint64_t dev = 0;
    uint64_t ino = 0;
    bool operator==(const FileId&) const = default;
};

// The kernel's struct liveupdate_file_op_args. Which op reads or writes which
// field follows the kernel's (include/linux/liveupdate.h):
//   preserve:                    file in; serialized_data, private_data out
//   freeze/unfreeze/unpreserve:  file, serialized_data, private_data in
//                                (freeze may update serialized_data)
//   retrieve:                    preserved, serialized_data in; file out
//   can_finish/finish:           preserved, serialized_data, retrieve_status;
//                                file is -1 if never retrieved or failed;
//                                preserved is -1 once retrieved (the engine
//                                closes it: the retrieved file replaced it)
struct FileOpArgs {
    FileHandler* handler = nullptr;
    int retrieve_status = 0;  // 0 never attempted, 1 succeeded, <0 -errno of the failure
    int file = -1;            // borrowed; the engine owns it
    int preserved = -1;       // incoming only: the fd the previous instance handed over
    std::vector<uint8_t> serialized_data;
    void* private_data = nullptr;
};

class FileHandler {
public:
    virtual ~FileHandler() = default;

    // At most 47 bytes: it is stored in a 48-byte field with its NUL.
    virtual std::string_view compatible() const = 0;

    virtual bool can_preserve(int fd) = 0;
    // On failure the handler undoes its own partial work: the engine does not
    // call unpreserve for a failed preserve (as in the kernel).
    virtual int preserve(FileOpArgs& args) = 0;
    virtual void unpreserve(FileOpArgs& args) = 0;
    virtual int freeze(FileOpArgs&) { return 0; }
    virtual void unfreeze(FileOpArgs&) {}
    // Sets args.file to a new fd (owned by the engine from then on) or fails
    // with -errno. A failure is permanent: the engine never calls it again.
    virtual int retrieve(FileOpArgs& args) = 0;
    virtual bool can_finish(FileOpArgs&) { return true; }
    // Cannot fail. Called for every incoming file at finish, retrieved or not.
    virtual void finish(FileOpArgs& args) = 0;
    // Identity of the backing object. `slot` is the fd's type and inode as
    // the engine read them, once per file (the handover records the same
    // slot; type 0 if the read failed). The default is that inode, with no
    // system call of its own: one fstat per file at preserve, and none in
    // the next instance beyond the check of the fds it received.
    virtual int get_id(int fd, const FdSlot& slot, FileId* id);
};

}  // namespace lu
