// SPDX-License-Identifier: Apache-2.0
// liveupdated --recover: the instance the keeper starts after a crash
// (keeper.hpp). In order: receive what the keeper kept (the journal, the
// listeners, the file fds) on the link it gave us as fd 3, validate the
// journal as any handover (journal_format.hpp), bring the sessions back as
// after a reboot at the moment of the crash (Daemon::from_crash), record
// the new state with the keeper, and serve.
#pragma once

#include <memory>
#include <string>

#include "daemon_config.hpp"

namespace lu {

class Daemon;

// The daemon, serving the recovered state (or answering EIO, its state
// kept unreachable, if the journal was refused); null, logged, if nothing
// usable came from the keeper (it then tries again).
std::unique_ptr<Daemon> recover_from_keeper(const DaemonConfig& config);

}  // namespace lu
