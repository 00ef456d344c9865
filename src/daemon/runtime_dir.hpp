// SPDX-License-Identifier: Apache-2.0
// The runtime directory and the listening sockets in it, made so that no
// other user can put anything there or redirect what the daemon creates.
//
// The directory is opened once, without following a symlink, and checked by
// its fd: owned by the daemon's user, and writable by nobody else (others
// could have planted entries or could swap them later). Everything after
// works relative to that fd: a stale socket is unlinked in it, and the
// sockets are bound in it with their final mode and group from the start
// (a private umask; the group inherited from a setgid directory), so no
// chown or chmod by path ever follows a name someone else controls.
// docs/security.md has the threat model.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "unique_fd.hpp"

namespace lu {

// Opens (creating it 0700, or 02750 owned by `group`, if missing) the
// runtime directory at `path`, and checks it. Returns the directory's fd, or
// an invalid fd with *why set to a message an operator can act on.
UniqueFd open_runtime_dir(const std::string& path, std::optional<gid_t> group, std::string* why);

// Binds a listening SOCK_SEQPACKET socket named `name` in the directory
// `dirfd` (from open_runtime_dir, with the same group) with mode `mode`, refusing to take the name from a daemon that
// still serves it. REQUIRES: the process is single-threaded (the current
// directory moves to dirfd while binding, and back to "/").
UniqueFd listen_in(int dirfd, const char* name, mode_t mode, std::optional<gid_t> group,
                   std::string* why);

}  // namespace lu
