// SPDX-License-Identifier: Apache-2.0
// The keeper: the small process that makes a crash of liveupdated lose
// nothing (docs/crash-safety.md). It holds, for the instance that serves,
// a copy of the listening sockets, of every preserved fd and the journal's
// records (journal_format.hpp), and never reads a client's input: only
// its instances' links (keeper_protocol.hpp). When the serving instance's
// link ends without a STOP, it starts a new instance with the same
// arguments and hands it all of that (RECOVER): a reboot at the moment of
// the crash.
//
// It interprets nothing of a record but its id and whether it carries an
// fd; the instance that recovers validates the journal as any handover.
// Its death loses nothing while the instance lives (the instance starts a
// new keeper and records everything again); the death of both at once
// loses the state, as a kernel panic does.
#pragma once

namespace lu {

// liveupdated --keeper: serves the link on fd 3 until a STOP, or until it
// holds nothing and no instance is linked. The exit code.
int run_keeper();

}  // namespace lu
