// SPDX-License-Identifier: Apache-2.0
#include "runtime_dir.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace lu {

namespace {

std::string errno_text(const std::string& what, int err) {
    return what + ": " + strerror(err);
}

}  // namespace

// 1. Create the parents (ordinary directories) and the directory itself if
//    missing: mkdir gives a new directory only to us.
// 2. Open it without following a symlink at its last component.
// 3. Check by the fd: a directory, ours, writable by nobody else.
// 4. Set the group and the mode by the fd; with a group, setgid, so that the
//    sockets made in it are the group's from their creation.
UniqueFd open_runtime_dir(const std::string& path, std::optional<gid_t> group, std::string* why) {
    const mode_t mode = group ? 02750 : 0700;
    std::error_code ec;
    std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    if (mkdir(path.c_str(), 0700) < 0 && errno != EEXIST) {
        *why = errno_text("cannot create the runtime directory " + path, errno);
        return UniqueFd();
    }
    UniqueFd dir(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) {
        int err = errno;
        struct stat lst;
        if (lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) err = ELOOP;
        if (err == ELOOP)
            *why = "the runtime directory " + path + " is a symlink: refusing to follow it";
        else if (err == ENOTDIR)
            *why = "the runtime directory " + path + " is not a directory";
        else
            *why = errno_text("cannot open the runtime directory " + path, err);
        return UniqueFd();
    }
    struct stat st;
    if (fstat(dir.get(), &st) < 0) {
        *why = errno_text("cannot stat the runtime directory " + path, errno);
        return UniqueFd();
    }
    if (st.st_uid != geteuid()) {
        *why = "the runtime directory " + path + " belongs to uid " + std::to_string(st.st_uid) +
               ", not to this daemon's uid " + std::to_string(geteuid()) +
               ": remove it, or give it to that uid";
        return UniqueFd();
    }
    // Others could already have put entries in it: the mode cannot be
    // trusted back after the fact.
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        *why = "the runtime directory " + path + " is writable by its group or by others: "
               "remove it, or make it writable by its owner only";
        return UniqueFd();
    }
    if (group && fchown(dir.get(), static_cast<uid_t>(-1), *group) < 0) {
        *why = errno_text("cannot give the runtime directory " + path + " to group " +
                              std::to_string(*group), errno);
        return UniqueFd();
    }
    if (fchmod(dir.get(), mode) < 0) {
        *why = errno_text("cannot set the mode of the runtime directory " + path, errno);
        return UniqueFd();
    }
    return dir;
}

// 1. Refuse to take the name from a daemon that answers on it.
// 2. Remove a stale socket (a daemon that is gone): the directory is ours
//    alone, so whatever is there was made by this user.
// 3. Bind under a umask that gives the final mode from the start.
// 4. Check what was made, by name in our directory, without following it.
UniqueFd listen_in(int dirfd, const char* name, mode_t mode, std::optional<gid_t> group,
                   std::string* why) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, name, sizeof addr.sun_path - 1);
    // Bound by a name relative to the directory's fd: no path component
    // another user controls is resolved.
    UniqueFd cwd(open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (fchdir(dirfd) < 0) {
        *why = errno_text("cannot enter the runtime directory", errno);
        return UniqueFd();
    }
    UniqueFd fd;
    UniqueFd probe(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        *why = std::string("another liveupdated already serves ") + name;
    } else if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) {
        *why = errno_text(std::string("cannot remove the stale ") + name, errno);
    } else {
        fd.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        const mode_t old = umask(0777 & ~mode);
        const int r = fd ? bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) : -1;
        umask(old);
        if (r < 0 || listen(fd.get(), SOMAXCONN) < 0) {
            *why = errno_text(std::string("cannot listen on ") + name, errno);
            fd.reset();
        }
    }
    if ((cwd ? fchdir(cwd.get()) : chdir("/")) < 0 && chdir("/") < 0) {
        *why = errno_text("cannot leave the runtime directory", errno);
        return UniqueFd();
    }
    if (!fd) return fd;
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(st.st_mode) ||
        (st.st_mode & 07777) != mode || st.st_uid != geteuid() || (group && st.st_gid != *group)) {
        *why = std::string("the socket ") + name + " was not created as asked";
        return UniqueFd();
    }
    return fd;
}

}  // namespace lu
