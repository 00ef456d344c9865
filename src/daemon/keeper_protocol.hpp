// SPDX-License-Identifier: Apache-2.0
// The link between a daemon instance and its keeper (keeper.hpp): a
// SOCK_SEQPACKET socketpair, one per instance. This file is the protocol,
// both directions; keeper.cpp and keeper_link.cpp are its two users.
//
//   instance -> keeper   BEGIN            a new generation starts on this link
//                        LISTENERS        fds [control, admin]
//                        RESTART          NUL-separated argv to recover with
//                        PUT              journal records (journal_format.hpp),
//                                         with the fds of the file records
//                        PUT_KEYED        (version 2) the same, each file record
//                                         followed by its KeeperFileRef: an fd
//                                         comes with it, or it names one the
//                                         kept generation holds (no fd sent)
//                        DROP id          that record and its fd go
//                        SYNC             answered SYNCED once everything before
//                                         it is taken (a generation is whole);
//                                         SYNCED's id is the keeper's version
//                        COMMIT pid       the generation is whole: it replaces
//                                         the one kept so far, and this link's
//                                         end of file is now a crash
//                        LINK             fds [the keeper's end of the next
//                                         instance's link] (a live update)
//                        PROMOTE          (the old instance of a live update, once
//                                         it read SERVING) its next instance's
//                                         COMMIT counts: until then, or until
//                                         the old instance's end, it waits
//                        STOP             a stop on purpose: drop everything
//   keeper -> instance   RECOVER          fds [journal memfd, control, admin];
//                                         `id` file fds follow in FDS batches
//                        FDS              at most 253 fds
//                        LINK, SYNCED     the answers to LINK and SYNC
//
// PUT and DROP on the link that committed last change the kept generation
// in place; on a link that sent BEGIN, its pending one.
//
// The keeper outlives the binaries it serves (a live update links the next
// instance to the same keeper), so an instance may talk to an older keeper:
// it learns the version from its first SYNCED (a keeper from before
// versions answers 0) and sends only what that version takes.
#pragma once

#include <signal.h>
#include <spawn.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

extern char** environ;

namespace lu {

enum class KeeperOp : uint32_t {
    Begin = 1,
    Listeners,
    Restart,
    Put,
    Drop,
    Commit,
    Link,
    Stop,
    Sync,
    Promote,
    PutKeyed,
    Recover = 16,
    Fds,
    Synced,
};

struct KeeperMsg {
    uint32_t magic = 0x4c554b50;  // "LUKP"
    KeeperOp op{};
    uint64_t id = 0;    // COMMIT: the instance's pid; RECOVER: the file fds that follow
    uint64_t when = 0;  // RECOVER: CLOCK_REALTIME ns of the crash
};
static_assert(sizeof(KeeperMsg) == 24);

// 1: PUT only (answered SYNCED with id 0). 2: PUT_KEYED.
inline constexpr uint64_t kKeeperVersion = 2;

// After each file record of a PUT_KEYED: the file's identity, as its sender
// read it (fstat, F_GETFL). A generation keeps each identity's fd once, so
// a live update's next instance names the files the keeper already holds
// instead of sending 10,000 fds again in its blackout. The access mode is
// part of it: a read-only fd must never come back writable.
struct KeeperFileRef {
    uint64_t dev = 0;
    uint64_t ino = 0;  // dev and ino 0: unknown (never shared, never named)
    uint32_t accmode = 0;  // O_RDONLY, O_WRONLY or O_RDWR
    uint32_t held = 0;     // 1: no fd comes; the kept generation's file of this identity
};
static_assert(sizeof(KeeperFileRef) == 24);

// The largest message: a header and a journal record, or an argv.
inline constexpr size_t kMaxKeeperMessage = 64 * 1024;

inline std::vector<uint8_t> keeper_msg(KeeperOp op, uint64_t id = 0,
                                       std::span<const uint8_t> payload = {}) {
    KeeperMsg m;
    m.op = op;
    m.id = id;
    std::vector<uint8_t> out(sizeof m + payload.size());
    memcpy(out.data(), &m, sizeof m);
    if (!payload.empty()) memcpy(out.data() + sizeof m, payload.data(), payload.size());
    return out;
}

// Where a keeper, or an instance it starts after a crash, finds its link.
inline constexpr int kLinkFd = 3;

// Starts `args` with `link` (its end of a link) as kLinkFd and no signal
// blocked: the starter's stop signals are blocked (a signalfd reads them),
// the started process's must not be. The keeper starting a recovery and an
// instance starting a keeper both use it. 0 or an errno (positive, as
// posix_spawn's).
inline int spawn_linked(std::vector<std::string> args, int link, pid_t* pid) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, link, kLinkFd);  // dup2 clears CLOEXEC
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    int err = posix_spawn(pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

// False if `bytes` does not start with a well-formed header.
inline bool parse_keeper_msg(std::span<const uint8_t> bytes, KeeperMsg* m) {
    if (bytes.size() < sizeof *m) return false;
    memcpy(m, bytes.data(), sizeof *m);
    return m->magic == KeeperMsg{}.magic;
}

}  // namespace lu
