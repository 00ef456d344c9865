// SPDX-License-Identifier: Apache-2.0
#include "testing/test_handler.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace lu {

namespace {

int id_of(const FileOpArgs& args) {
    int id = -1;
    if (args.serialized_data.size() == sizeof(id)) memcpy(&id, args.serialized_data.data(), sizeof(id));
    return id;
}

std::string entry(const char* op, const FileOpArgs& args) {
    return std::string(op) + ":" + std::to_string(id_of(args));
}

}  // namespace

bool TestHandler::can_preserve(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

int TestHandler::preserve(FileOpArgs& args) {
    if (fail_preserve) {
        log.push_back("preserve-failed");
        return fail_preserve;
    }
    int id = next_id_++;
    args.serialized_data.resize(sizeof(id));
    memcpy(args.serialized_data.data(), &id, sizeof(id));
    log.push_back(entry("preserve", args));
    return 0;
}

void TestHandler::unpreserve(FileOpArgs& args) { log.push_back(entry("unpreserve", args)); }

int TestHandler::freeze(FileOpArgs& args) {
    if (freeze_calls++ == fail_freeze_at) {
        log.push_back(entry("freeze-failed", args));
        return fail_freeze_errno;
    }
    log.push_back(entry("freeze", args));
    return 0;
}

void TestHandler::unfreeze(FileOpArgs& args) { log.push_back(entry("unfreeze", args)); }

int TestHandler::retrieve(FileOpArgs& args) {
    retrieve_calls++;
    log.push_back(entry("retrieve", args));
    if (fail_retrieve) return fail_retrieve;
    if (id_of(args) < 0) return -EINVAL;
    args.file = fcntl(args.preserved, F_DUPFD_CLOEXEC, 0);
    return args.file < 0 ? -errno : 0;
}

bool TestHandler::can_finish(FileOpArgs& args) {
    log.push_back(entry("can_finish", args));
    return !refuse_finish;
}

void TestHandler::finish(FileOpArgs& args) {
    log.push_back(entry("finish", args));
    finish_status.push_back(args.retrieve_status);
}

int TestHandler::get_id(int fd, const FdSlot& slot, FileId* id) {
    log.push_back("get_id");
    return FileHandler::get_id(fd, slot, id);
}

}  // namespace lu
