// SPDX-License-Identifier: Apache-2.0
// The kill campaign: eight clients create, preserve, release, finish and
// hand off sessions with known content while the daemon is SIGKILLed at
// random instants, with reboots and upgrades among the kills. Each client
// keeps a model of what the daemon acknowledged; after every kill it takes
// its sessions back by name, as a service does after a reboot, and checks
// them against the model: every session and file that must survive is
// there with its bytes, nothing that must be gone comes back, and a request
// cut by the kill left one of its two outcomes, never a third.
// Real processes over their real sockets (docs/crash-safety.md).
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <shared_mutex>

#include "crash/crash_util.hpp"

namespace lu::crash_test {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

constexpr int kClients = 8;

// Every instant the daemon may be killed at answers EOWNERDEAD: the request
// in flight may or may not have been recorded.
bool cut(int rc) { return rc == -EOWNERDEAD; }

// What every thread reports, summed at the end.
struct Tally {
    std::atomic<uint64_t> sessions_checked{0}, files_checked{0}, gone_checked{0};
    std::atomic<uint64_t> lost_sessions{0}, lost_files{0};
    std::atomic<uint64_t> back_sessions{0}, back_files{0};
    std::atomic<uint64_t> doubt_present{0}, doubt_absent{0};
    std::atomic<uint64_t> created{0}, preserved{0}, released{0}, finished{0}, cuts{0};
    std::atomic<uint64_t> handoffs{0}, handoffs_committed{0}, handoffs_cut{0};
    std::atomic<uint64_t> handoff_back_to_old{0}, handoff_kept_by_next{0};
    std::atomic<uint64_t> unexpected{0};
    std::atomic<uint64_t> dropped_after_crash{0};
    std::mutex mu;
    std::vector<std::string> problems;  // the first few, for the failure message

    void problem(std::atomic<uint64_t>& counter, const std::string& what) {
        counter++;
        std::lock_guard<std::mutex> l(mu);
        if (problems.size() < 40) problems.push_back(what);
    }
};

// Reboots need every client between two requests, with nothing it would
// have to take back (so that the reboot drops nothing of theirs); kills
// need nobody's permission. A writer-preferring gate: clients hold it
// shared for one operation, the reboot exclusively.
class OpGate {
  public:
    void lock_shared() {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !writer_ && !writer_waiting_; });
        readers_++;
    }
    void unlock_shared() {
        std::lock_guard<std::mutex> l(mu_);
        if (--readers_ == 0) cv_.notify_all();
    }
    void lock() {
        std::unique_lock<std::mutex> l(mu_);
        writer_waiting_ = true;
        cv_.wait(l, [&] { return readers_ == 0 && !writer_; });
        writer_waiting_ = false;
        writer_ = true;
    }
    void unlock() {
        std::lock_guard<std::mutex> l(mu_);
        writer_ = false;
        cv_.notify_all();
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    int readers_ = 0;
    bool writer_ = false, writer_waiting_ = false;
};

// Shared by the killer and the clients.
struct World {
    DaemonProcess* d = nullptr;
    Tally tally;
    OpGate gate;
    // Bumped after each kill and each reboot: every fd a client holds is
    // then dead or stale, and its sessions are the daemon's incoming ones.
    std::atomic<uint64_t> gen{0};
    std::mutex gen_mu;
    std::condition_variable gen_cv;
    std::atomic<bool> stop{false};
    std::atomic<bool> handoff_wanted{false}, handoff_running{false};

    void bump() {
        {
            std::lock_guard<std::mutex> l(gen_mu);
            gen++;
        }
        gen_cv.notify_all();
    }
    // Waits (bounded) until the generation moves past g.
    bool wait_gen_after(uint64_t g) {
        std::unique_lock<std::mutex> l(gen_mu);
        return gen_cv.wait_for(l, std::chrono::seconds(30), [&] { return gen.load() != g; });
    }
};

struct File {
    Bytes bytes;
    Fd fd;  // the memfd (ours, or the one retrieved after a kill)
};

struct Session {
    enum Life { Open, Doubt, Gone };
    std::string name;
    Life life = Open;
    // Our outgoing session fd, or none: after a kill or a reboot, the
    // daemon holds the session as incoming until we retrieve it.
    Fd fd;
    std::map<uint64_t, File> files;  // PRESERVE_FD answered 0
    std::map<uint64_t, File> doubt;  // PRESERVE_FD cut by a kill
    uint64_t next_token = 1;
    bool release_pending = false;  // closed; the daemon may not have seen it yet
    int gone_checks = 0;           // kills left to check it stays gone
    // A kill cut a hand-off of this session: who ends up with it is counted.
    bool handoff_cut = false, handoff_committed = false;
};

// The hand-off's next version, run in a thread of its own: what it got.
struct NextResult {
    bool retrieved = false, finished = false, finish_cut = false;
    bool created = false, create_cut = false;
    std::map<uint64_t, File> files, doubt;  // of the session it created again
    bool died = false;  // saw the daemon die
    std::string error;
};

class Client {
  public:
    Client(World& w, int id, uint64_t seed) : w_(w), id_(id), rng_(seed * kClients + static_cast<unsigned>(id)) {}

    // Runs until the campaign stops.
    void run() {
        while (!w_.stop) {
            if (dead_) {
                // The kill that cut us may not be counted yet.
                if (!w_.wait_gen_after(seen_gen_)) {
                    w_.tally.problem(w_.tally.unexpected,
                                     name() + ": EOWNERDEAD with no kill of ours (the daemon died by itself?)");
                    return;
                }
                dead_ = false;
            }
            std::shared_lock<OpGate> l(w_.gate);
            if (w_.stop) break;
            const uint64_t g = w_.gen.load();
            if (g != seen_gen_ || settled_gen_.load() != g) {
                seen_gen_ = g;
                if (reconcile()) settled_gen_ = g;
                continue;
            }
            if (w_.handoff_wanted.exchange(false)) {
                if (!handoff()) w_.handoff_wanted = true;  // nothing to hand off: someone else
                continue;
            }
            step();
        }
    }

    // True if every session is known and taken back since generation g.
    bool settled(uint64_t g) const { return settled_gen_.load() == g; }

    // At a reboot (every client between two requests, settled): what it
    // drops must be nothing of ours; what we closed is gone now.
    void after_reboot(const std::set<std::string>& dropped) {
        for (auto& s : sessions_) {
            if (s.life == Session::Gone) {
                if (dropped.count(s.name))
                    w_.tally.problem(w_.tally.back_sessions,
                                     s.name + ": gone, but the reboot dropped it (it was there)");
                continue;
            }
            if (dropped.count(s.name)) {
                // Counted once: it is gone now, as the reboot said.
                w_.tally.problem(w_.tally.lost_sessions,
                                 s.name + ": an outgoing session dropped by the reboot");
                gone(s);
            }
            if (s.release_pending) gone(s);
        }
    }

    // A crash, then a reboot by the recovered instance before anyone took
    // anything back (every client waited at the gate): every session that
    // was there is incoming and unretrieved, so the reboot drops each one,
    // and names it. Nothing gone may be named; nothing there may be missed.
    void after_crash_then_reboot(const std::set<std::string>& dropped) {
        for (auto& s : sessions_) {
            if (s.life == Session::Gone) {
                if (dropped.count(s.name))
                    w_.tally.problem(w_.tally.back_sessions,
                                     s.name + ": gone, but the reboot after a crash dropped it (it was there)");
                continue;
            }
            if (dropped.count(s.name)) w_.tally.dropped_after_crash++;
            else if (s.life == Session::Open)
                w_.tally.problem(w_.tally.lost_sessions,
                                 s.name + ": open before a crash, not among what the reboot after it dropped");
            gone(s);
        }
    }

    // The last look, after the campaign and one more kill: no kill can cut it.
    bool final_check() {
        seen_gen_ = w_.gen.load();
        return reconcile();
    }

    // The session whose check a kill cut last (for a failure's message).
    const std::string& cut_during() const { return cut_during_; }

    size_t live_sessions() const {
        size_t n = 0;
        for (auto& s : sessions_) n += s.life != Session::Gone;
        return n;
    }

  private:
    std::string name() const { return "client " + std::to_string(id_); }

    Bytes fresh_bytes() {
        std::uniform_int_distribution<size_t> size(1, 8192);
        return random_bytes(size(rng_), rng_());
    }

    // The control connection is exclusive: take turns. A connect made while
    // the next instance starts waits in the keeper's backlog; one accepted
    // by the instance being killed fails, and is made again. Eight clients
    // taking it in a loop are not fair to each other (lu_open_wait backs
    // off to 50 ms while the others take it back at once): under ASan and
    // a loaded machine one of them waited over 10 s, so EBUSY is waited out
    // up to a minute, a bound that only a control connection never given
    // back reaches.
    Fd open_control() {
        const uint64_t deadline = now_ns() + 60'000'000'000ull;
        while (now_ns() < deadline) {
            int c = lu_open_wait(1000);
            if (c >= 0) return Fd(c);
            if (c != -EBUSY && c != -EOWNERDEAD && c != -ENOENT && c != -ECONNREFUSED &&
                c != -ECONNRESET && c != -EPIPE) {
                w_.tally.problem(w_.tally.unexpected, name() + ": lu_open: " + strerror(-c));
                return Fd();
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        std::string trace;  // who held it: the trace's last lines
        DaemonProcess::ctl({"trace"}, &trace);
        if (trace.size() > 6000) trace = trace.substr(trace.size() - 6000);
        w_.tally.problem(w_.tally.unexpected, name() + ": no control connection for a minute; trace:\n" + trace);
        return Fd();
    }

    // A reply other than success or a kill's cut: recorded with its context.
    void odd(const std::string& what, int rc) {
        w_.tally.problem(w_.tally.unexpected,
                         name() + ": " + what + ": " + strerror(-rc) + " (" + std::to_string(rc) + ")");
    }

    // The daemon died under this request: stop here until the kill is counted.
    bool died(int rc) {
        if (!cut(rc)) return false;
        w_.tally.cuts++;
        dead_ = true;
        cut_during_ = checking_;
        return true;
    }

    void gone(Session& s) {
        s.life = Session::Gone;
        s.fd.reset();
        s.files.clear();
        s.doubt.clear();
        s.release_pending = false;
        s.gone_checks = 3;
    }

    // One random operation on a settled client.
    void step() {
        std::vector<Session*> open;
        for (auto& s : sessions_)
            if (s.life == Session::Open && s.fd.ok() && !s.release_pending) open.push_back(&s);
        const int r = std::uniform_int_distribution<int>(0, 99)(rng_);
        if (open.size() < 2 || (r < 30 && open.size() < 5)) return create();
        Session& s = *open[std::uniform_int_distribution<size_t>(0, open.size() - 1)(rng_)];
        if (r < 70 && s.files.size() < 4) return preserve(s, fresh_bytes());
        return release(s);
    }

    void create() {
        Session s;
        s.name = "c" + std::to_string(id_) + "-" + std::to_string(next_name_++);
        Fd ctl = open_control();
        if (!ctl.ok()) return;
        int rc = lu_create_session(ctl.get(), s.name.c_str());
        ctl.reset();
        if (rc < 0) {
            if (!died(rc)) return odd("create " + s.name, rc);
            s.life = Session::Doubt;  // recorded or not: both are allowed
            sessions_.push_back(std::move(s));
            return;
        }
        w_.tally.created++;
        s.fd.reset(rc);
        sessions_.push_back(std::move(s));
        Session& added = sessions_.back();
        const int files = std::uniform_int_distribution<int>(1, 2)(rng_);
        for (int i = 0; i < files && !dead_; i++) preserve(added, fresh_bytes());
    }

    void preserve(Session& s, Bytes bytes) {
        Fd mem = make_memfd("kc", bytes);
        preserve_file(s, File{std::move(bytes), std::move(mem)});
    }

    void preserve_file(Session& s, File f) {
        const uint64_t token = s.next_token++;
        int rc = lu_preserve_fd(s.fd.get(), f.fd.get(), token);
        if (rc == 0) {
            w_.tally.preserved++;
            s.files.emplace(token, std::move(f));
        } else if (died(rc)) {
            s.doubt.emplace(token, std::move(f));
        } else {
            odd("preserve " + s.name + " token " + std::to_string(token), rc);
        }
    }

    // Closing the last fd releases the session; no reply says when the
    // daemon saw it, so it is in doubt until a status no longer lists it
    // (or a reboot's gate, which releases closed sessions first).
    void release(Session& s) {
        s.fd.reset();
        s.life = Session::Doubt;
        s.release_pending = true;
        w_.tally.released++;
        for (int i = 0; i < 5; i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            json st = w_.d->status();
            if (st.is_null()) return;  // killed meanwhile: in doubt
            if (find_session(st, s.name).is_null()) {
                // This instance is the one that saw the close: had it been
                // killed before, the status would come from the next one,
                // which would list it as incoming had it come back.
                gone(s);
                return;
            }
        }
    }

    // Checks a retrieved session against the model: the files it must have
    // with their bytes, the ones in doubt either absent or right, and no
    // other token. Fills `keep` with what to preserve again. False if the
    // daemon died meanwhile.
    bool check_files(Session& s, int in, std::map<uint64_t, File>* keep) {
        for (uint64_t t = 1; t <= s.next_token; t++) {
            const bool must = s.files.count(t) != 0, may = s.doubt.count(t) != 0;
            int fd = lu_retrieve_fd(in, t);
            if (fd < 0) {
                if (died(fd)) return false;
                if (fd != -ENOENT) {
                    odd("retrieve_fd " + s.name + " token " + std::to_string(t), fd);
                } else if (must) {
                    w_.tally.problem(w_.tally.lost_files,
                                     s.name + " token " + std::to_string(t) + ": acknowledged, missing");
                } else if (may) {
                    w_.tally.doubt_absent++;
                }
                continue;
            }
            Fd got(fd);
            if (!must && !may) {
                w_.tally.problem(w_.tally.back_files, s.name + " token " + std::to_string(t) +
                                                          ": never acknowledged, came back");
                continue;
            }
            const File& want = must ? s.files.at(t) : s.doubt.at(t);
            const std::string cmp = diff(contents(got.get()), want.bytes);
            if (cmp != "equal") {
                w_.tally.problem(w_.tally.lost_files,
                                 s.name + " token " + std::to_string(t) + ": wrong bytes: " + cmp);
                continue;
            }
            if (must) w_.tally.files_checked++;
            else w_.tally.doubt_present++;
            keep->emplace(t, File{want.bytes, std::move(got)});
        }
        return true;
    }

    // After a kill or a reboot: every session is taken back by name and
    // checked, then finished and created again with the same files, as a
    // service does after a reboot. True if no kill cut it.
    bool reconcile() {
        for (auto& s : sessions_) {
            checking_ = s.name;
            if (s.life == Session::Open && s.fd.ok() && !s.release_pending) {
                // Created on the instance serving now (after the kill, before
                // we noticed): still ours, outgoing.
                char nm[LIVEUPDATE_SESSION_NAME_LENGTH];
                int rc = lu_get_name(s.fd.get(), nm);
                if (rc == 0) continue;
                if (rc != -EOWNERDEAD && rc != -ESTALE) odd("get_name " + s.name, rc);
            }
            s.fd.reset();
            if (s.life == Session::Gone && s.gone_checks == 0) continue;
            Fd ctl = open_control();
            if (!ctl.ok()) return false;
            int rc = lu_retrieve_session(ctl.get(), s.name.c_str());
            if (rc < 0) {
                if (died(rc)) return false;
                if (rc != -ENOENT) {
                    odd("retrieve " + s.name, rc);
                    continue;
                }
                if (s.life == Session::Open) {
                    w_.tally.problem(w_.tally.lost_sessions,
                                     s.name + ": acknowledged open, not retrievable (" +
                                         std::to_string(s.files.size()) + " files)");
                    w_.tally.lost_files += s.files.size();
                } else if (s.life == Session::Doubt) {
                    w_.tally.doubt_absent++;
                    if (s.handoff_cut) w_.tally.handoff_kept_by_next++;
                    gone(s);
                } else {
                    w_.tally.gone_checked++;
                    s.gone_checks--;
                }
                if (s.life != Session::Open) s.handoff_cut = false;
                continue;
            }
            Fd in(rc);
            if (s.life == Session::Gone) {
                w_.tally.problem(w_.tally.back_sessions,
                                 s.name + (s.handoff_committed ? ": handed off (committed), came back too"
                                                               : ": released or finished, came back"));
                // Take it out of the way: finishing it is what its owner would do.
                lu_finish(in.get());
                continue;
            }
            if (s.life == Session::Doubt) w_.tally.doubt_present++;
            else w_.tally.sessions_checked++;
            if (s.handoff_cut) {
                w_.tally.handoff_back_to_old++;
                s.handoff_cut = false;
            }
            std::map<uint64_t, File> keep;
            if (!check_files(s, in.get(), &keep)) return false;
            if (s.release_pending) {
                // Closed before the kill, back with its files: what its
                // owner wanted is still to be rid of it.
                rc = lu_finish(in.get());
                if (rc == 0) gone(s);
                else if (died(rc)) return false;
                else odd("finish " + s.name, rc);
                continue;
            }
            // What came back is what we have now, and what we preserve again.
            s.life = Session::Open;
            s.files.clear();
            s.doubt.clear();
            rc = lu_finish(in.get());
            if (rc != 0) {
                if (died(rc)) {
                    // Finished or not: if it comes back, with all of these.
                    s.life = Session::Doubt;
                    s.files = std::move(keep);
                    return false;
                }
                odd("finish " + s.name, rc);
                continue;
            }
            w_.tally.finished++;
            in.reset();
            rc = lu_create_session(ctl.get(), s.name.c_str());
            ctl.reset();
            if (rc < 0) {
                if (died(rc)) {
                    gone(s);
                    s.life = Session::Doubt;  // an empty session, or none
                    return false;
                }
                odd("create again " + s.name, rc);
                gone(s);
                continue;
            }
            s.fd.reset(rc);
            for (auto& [t, f] : keep) {
                int p = lu_preserve_fd(s.fd.get(), f.fd.get(), t);
                if (p == 0) {
                    s.files.emplace(t, std::move(f));
                } else if (died(p)) {
                    s.doubt.emplace(t, std::move(f));
                    return false;
                } else {
                    odd("preserve again " + s.name, p);
                }
            }
        }
        // Forget what is checked and gone for good.
        std::erase_if(sessions_, [](const Session& s) { return s.life == Session::Gone && s.gone_checks == 0; });
        return !dead_;
    }

    // A hand-off of one of our sessions to its "next version", a thread of
    // its own here, which checks it, finishes it (the commit) and creates it
    // again with new content. The killer may aim at it. False if we had
    // nothing to hand off.
    bool handoff() {
        std::vector<Session*> open;
        for (auto& s : sessions_)
            if (s.life == Session::Open && s.fd.ok() && !s.release_pending && !s.files.empty())
                open.push_back(&s);
        if (open.empty()) return false;
        Session& s = *open[std::uniform_int_distribution<size_t>(0, open.size() - 1)(rng_)];
        w_.tally.handoffs++;
        w_.handoff_running = true;
        int rc = lu_handoff(s.fd.get(), 0, 20000, 0);
        if (rc != 0) {
            w_.handoff_running = false;
            if (died(rc)) {
                // Asked or not: nobody retrieved it, it comes back to us.
                s.handoff_cut = true;
                w_.tally.handoffs_cut++;
                return true;
            }
            odd("handoff " + s.name, rc);
            return true;
        }
        // The next version's new content, chosen before it starts.
        std::map<uint64_t, Bytes> next_bytes;
        for (auto& [t, f] : s.files) next_bytes[t] = fresh_bytes();
        NextResult next;
        std::thread nt([&] { next = next_version(s, next_bytes); });
        int reason = -1;
        int outcome = lu_handoff_wait(s.fd.get(), &reason);
        nt.join();
        w_.handoff_running = false;
        if (!next.error.empty()) w_.tally.problem(w_.tally.unexpected, name() + ": next version: " + next.error);
        if (!next.died && !cut(outcome) &&
            !(next.finished && outcome == LU_HANDOFF_COMMITTED && reason == 0))
            odd("handoff of " + s.name + " outcome " + std::to_string(outcome) + " reason " +
                    std::to_string(reason) + (next.finished ? " (finished)" : ""),
                outcome < 0 ? outcome : -EPROTO);
        const bool was_cut = cut(outcome) || next.died;
        if (was_cut) {
            w_.tally.cuts++;
            dead_ = true;
        }
        s.fd.reset();  // ESTALE after a commit, dead after a kill
        if (!next.finished && !next.finish_cut) {
            // Not committed: the session is still the old owner's, every
            // file as it was; after a kill it comes back to us.
            if (next.died) {
                s.handoff_cut = true;
                w_.tally.handoffs_cut++;
            } else {
                odd("handoff of " + s.name + " neither committed nor cut", -EPROTO);
            }
            return true;
        }
        if (next.finish_cut) {
            // Committed or not: one owner, whichever it is. If it comes
            // back it is ours with every old file; if not, the next
            // version's (whose copy we keep no further).
            s.life = Session::Doubt;
            s.handoff_cut = true;
            w_.tally.handoffs_cut++;
            return true;
        }
        w_.tally.handoffs_committed++;
        // Committed: the old session must never come back; the name is the
        // next version's new session now.
        s.handoff_cut = false;
        if (was_cut) {
            // Committed before the kill: the next version has it, and the
            // old session must not come back beside it.
            w_.tally.handoffs_cut++;
            w_.tally.handoff_kept_by_next++;
        }
        if (next.create_cut) {
            s.files.clear();
            s.doubt.clear();
            s.life = Session::Doubt;
            s.handoff_committed = true;
            return true;
        }
        if (!next.created) {
            // Committed and not created again: the name must stay free.
            s.files.clear();
            s.doubt.clear();
            gone(s);
            s.handoff_committed = true;
            return true;
        }
        s.life = Session::Open;
        s.handoff_committed = false;
        s.files = std::move(next.files);
        s.doubt = std::move(next.doubt);
        s.fd = std::move(next_fd_);
        return true;
    }

    // The next version: retrieve, check every file, finish (the commit),
    // create the session again with new content.
    NextResult next_version(const Session& s, const std::map<uint64_t, Bytes>& next_bytes) {
        NextResult r;
        Fd ctl = open_control();
        if (!ctl.ok()) {
            r.error = "no control connection";
            return r;
        }
        int rc = lu_retrieve_session(ctl.get(), s.name.c_str());
        if (rc < 0) {
            if (cut(rc)) r.died = true;
            else r.error = "retrieve " + s.name + ": " + strerror(-rc);
            return r;
        }
        Fd in(rc);
        r.retrieved = true;
        for (auto& [t, f] : s.files) {
            int fd = lu_retrieve_fd(in.get(), t);
            if (fd < 0) {
                if (cut(fd)) r.died = true;
                else r.error = "retrieve_fd " + s.name + ": " + strerror(-fd);
                return r;
            }
            Fd got(fd);
            const std::string cmp = diff(contents(got.get()), f.bytes);
            if (cmp != "equal") {
                w_.tally.problem(w_.tally.lost_files, s.name + " token " + std::to_string(t) +
                                                          ": handed off with wrong bytes: " + cmp);
            }
        }
        rc = lu_finish(in.get());
        if (rc != 0) {
            if (cut(rc)) {
                r.died = true;
                r.finish_cut = true;
            } else {
                r.error = "finish " + s.name + ": " + strerror(-rc);
            }
            return r;
        }
        r.finished = true;
        in.reset();
        rc = lu_create_session(ctl.get(), s.name.c_str());
        ctl.reset();
        if (rc < 0) {
            if (cut(rc)) {
                r.died = true;
                r.create_cut = true;
            } else {
                r.error = "create again " + s.name + ": " + strerror(-rc);
            }
            return r;
        }
        next_fd_.reset(rc);
        r.created = true;
        for (auto& [t, b] : next_bytes) {
            File f{b, make_memfd("kc-next", b)};
            int p = lu_preserve_fd(next_fd_.get(), f.fd.get(), t);
            if (p == 0) {
                r.files.emplace(t, std::move(f));
            } else if (cut(p)) {
                r.died = true;
                r.doubt.emplace(t, std::move(f));
                break;
            } else {
                r.error = "preserve again " + s.name + ": " + strerror(-p);
                break;
            }
        }
        return r;
    }

    World& w_;
    const int id_;
    std::mt19937_64 rng_;
    std::vector<Session> sessions_;  // deque-like use: pointers are taken only within one step
    int next_name_ = 0;
    uint64_t seen_gen_ = UINT64_MAX;
    std::atomic<uint64_t> settled_gen_{UINT64_MAX};
    bool dead_ = false;
    std::string checking_, cut_during_;  // the session reconcile() is at; where a cut came
    Fd next_fd_;
};

// An environment variable as a positive number, or the default.
uint64_t env_num(const char* name, uint64_t dflt) {
    const char* v = getenv(name);
    if (!v || !*v) return dflt;
    char* end = nullptr;
    unsigned long long n = strtoull(v, &end, 10);
    return (end && *end == '\0' && n > 0) ? n : dflt;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

TEST(KillCampaign, EightClientsAThousandKillsNothingLostNothingBack) {
    // The default takes about half a minute in a release build (some 30 ms
    // a kill, the clients' checks included); the sanitizer build is several
    // times slower per kill, so it does fewer.
    const uint64_t want_kills = env_num("LU_KILL_CAMPAIGN_KILLS", kSanitized ? 150 : 1000);
    const uint64_t bound_s = env_num("LU_KILL_CAMPAIGN_SECONDS", 180);
    // The instants are the timing's anyway; the seed makes the choices of a
    // failed run repeatable.
    const uint64_t seed = env_num("LU_KILL_CAMPAIGN_SEED", now_ns() % 1000000007u);
    std::printf("kill campaign: seed %" PRIu64 " (LU_KILL_CAMPAIGN_SEED)\n", seed);
    DaemonProcess d;
    World w;
    w.d = &d;
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < kClients; i++) clients.push_back(std::make_unique<Client>(w, i, seed));
    std::vector<std::thread> threads;
    for (auto& c : clients) threads.emplace_back([&c] { c->run(); });

    std::mt19937_64 rng(seed);
    std::vector<double> recovery_ms;
    // What the killer did, with the wall clock the daemon's log uses: the
    // last of it is printed with a failure.
    std::vector<std::string> events;
    auto event = [&](const std::string& what) {
        timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        tm t;
        localtime_r(&ts.tv_sec, &t);
        char when[32];
        snprintf(when, sizeof when, "%02d:%02d:%02d.%03ld", t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
        events.push_back(std::string(when) + " " + what);
    };
    uint64_t kills = 0, reboots = 0, upgrades = 0, reboots_skipped = 0, aimed = 0;
    uint64_t update_kills = 0, updates_done_then_killed = 0, reboots_after_crash = 0;
    const uint64_t t_start = now_ns();
    auto elapsed_s = [&] { return static_cast<double>(now_ns() - t_start) / 1e9; };

    // SIGKILL of the serving instance, then the wait for the next one.
    // One keeper holds the state for the whole campaign (nobody kills it):
    // a status naming another means a second lineage of instances, two
    // daemons serving one runtime directory.
    const json first = status_retry(d);
    EXPECT_TRUE(first["keeper"]["pid"].is_number()) << first.dump();
    const pid_t keeper = first["keeper"]["pid"].is_number() ? first["keeper"]["pid"].get<pid_t>() : -1;
    uint64_t keeper_changes = 0;
    auto serving_pid = [&](uint64_t* epoch = nullptr) -> pid_t {
        json st = status_retry(d);
        if (epoch && !st.is_null() && st["epoch"].is_number()) *epoch = st["epoch"].get<uint64_t>();
        if (st.is_null()) ADD_FAILURE() << "no instance serves before kill " << kills;
        if (st.is_null() || !st["pid"].is_number()) return -1;
        if (!st["keeper"]["pid"].is_number() || st["keeper"]["pid"].get<pid_t>() != keeper) {
            if (keeper_changes++ < 5)
                ADD_FAILURE() << "after kill " << kills << " (" << update_kills
                              << " during a live update) the serving instance has another keeper: "
                              << st["keeper"].dump() << ", pid " << st["pid"] << ", epoch " << st["epoch"];
        }
        return st["pid"].get<pid_t>();
    };
    auto kill_once = [&](pid_t victim) -> bool {
        if (victim <= 0) return false;
        const bool ours = is_our_live_child(victim);
        const uint64_t t0 = now_ns();
        if (kill(victim, SIGKILL) != 0) {
            ADD_FAILURE() << "kill " << victim << ": " << strerror(errno);
            return false;
        }
        if (ours) waitpid(victim, nullptr, 0);
        kills++;
        event("kill " + std::to_string(victim));
        w.bump();
        // A status request made now waits in the keeper's backlog for the
        // next instance: the first answer from a new pid is the measure.
        for (int i = 0; i < 10000; i++) {
            json after = d.status();
            if (!after.is_null() && after["pid"].get<pid_t>() != victim) {
                recovery_ms.push_back(static_cast<double>(now_ns() - t0) / 1e6);
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ADD_FAILURE() << "no instance serves 10 s after pid " << victim << " was killed";
        return false;
    };

    // Every client settled on this generation: nothing of theirs is incoming.
    auto all_settled = [&] {
        const uint64_t g = w.gen.load();
        for (auto& c : clients)
            if (!c->settled(g)) return false;
        return true;
    };

    bool ok = true;
    while (ok && kills < want_kills) {
        if (elapsed_s() > static_cast<double>(bound_s)) break;
        std::this_thread::sleep_for(
            std::chrono::microseconds(std::uniform_int_distribution<int>(0, 8000)(rng)));
        const int r = std::uniform_int_distribution<int>(0, 999)(rng);
        if (r < 25) {
            // A reboot, once every client has taken back what the last kill
            // left incoming: it must drop nothing of theirs.
            bool settled = false;
            for (int i = 0; i < 2000 && !(settled = all_settled()); i++)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            if (!settled) {
                reboots_skipped++;
                continue;
            }
            std::lock_guard<OpGate> l(w.gate);
            const pid_t old = d.pid();
            char* reply = nullptr;
            int rc = lu_admin_reboot(nullptr, 0, 0, &reply);
            json j = json::parse(reply ? reply : "null", nullptr, false);
            lu_free(reply);
            if (rc != 0) {
                ADD_FAILURE() << "reboot: " << strerror(-rc) << " " << j.dump();
                ok = false;
                break;
            }
            d.track_update(old);
            std::set<std::string> dropped;
            if (j.is_object() && j["dropped"].is_array())
                for (auto& n : j["dropped"]) dropped.insert(n.get<std::string>());
            for (auto& c : clients) c->after_reboot(dropped);
            reboots++;
            event("reboot from " + std::to_string(old) + ", dropped " + std::to_string(dropped.size()));
            w.bump();
        } else if (r < 50) {
            // An upgrade among the clients' requests: they must not notice.
            const pid_t old = d.pid();
            char* reply = nullptr;
            int rc = lu_admin_upgrade(nullptr, 0, 0, &reply);
            std::string text = reply ? reply : "";
            lu_free(reply);
            if (rc != 0) {
                ADD_FAILURE() << "upgrade: " << strerror(-rc) << " " << text;
                ok = false;
                break;
            }
            d.track_update(old);
            upgrades++;
            event("upgrade from " + std::to_string(old));
        } else if (r < 100) {
            // A hand-off, and a kill aimed at it: the session must end in
            // exactly one owner's hands. The victim is known beforehand, so
            // the kill can land anywhere in the hand-off's millisecond.
            const pid_t victim = serving_pid();
            w.handoff_wanted = true;
            bool running = false;
            for (int i = 0; i < 2000 && !(running = w.handoff_running.load()); i++)
                std::this_thread::sleep_for(std::chrono::microseconds(500));
            if (running) {
                aimed++;
                std::this_thread::sleep_for(
                    std::chrono::microseconds(std::uniform_int_distribution<int>(0, 800)(rng)));
            }
            ok = kill_once(victim);
        } else if (r < 120) {
            // A live update and a kill of the instance that runs it, at a
            // random instant of it: before, during or after the hand-over,
            // whichever instance serves next must have everything. A reboot
            // waits for every client to settle, as above.
            const bool reboot = r < 110;
            bool settled = !reboot;
            for (int i = 0; i < 2000 && !(settled = settled || all_settled()); i++)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            if (!settled) {
                reboots_skipped++;
                continue;
            }
            std::unique_lock<OpGate> l(w.gate, std::defer_lock);
            if (reboot) l.lock();
            uint64_t epoch = 0;
            const pid_t victim = serving_pid(&epoch);
            if (victim <= 0) {
                ok = false;
                break;
            }
            int rc = 0;
            std::string text;
            std::thread update([&] {
                char* reply = nullptr;
                rc = reboot ? lu_admin_reboot(nullptr, 0, 0, &reply)
                            : lu_admin_upgrade(nullptr, 0, 0, &reply);
                text = reply ? reply : "";
                lu_free(reply);
            });
            std::this_thread::sleep_for(
                std::chrono::microseconds(std::uniform_int_distribution<int>(0, 12000)(rng)));
            const bool ours = is_our_live_child(victim);
            const uint64_t t0 = now_ns();
            kill(victim, SIGKILL);
            if (ours) waitpid(victim, nullptr, 0);
            update.join();
            kills++;
            update_kills++;
            event(std::string("kill ") + std::to_string(victim) + " during a " + (reboot ? "reboot" : "upgrade") +
                  ": rc " + std::to_string(rc) + " " + text);
            json after;
            for (int i = 0; i < 10000; i++) {
                after = d.status();
                if (!after.is_null() && after["pid"].get<pid_t>() != victim) break;
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            if (after.is_null() || after["pid"].get<pid_t>() == victim) {
                ADD_FAILURE() << "no instance serves 10 s after pid " << victim
                              << " was killed during a live update";
                ok = false;
                break;
            }
            recovery_ms.push_back(static_cast<double>(now_ns() - t0) / 1e6);
            if (rc == 0) {
                json j = json::parse(text, nullptr, false);
                std::set<std::string> dropped;
                if (j.is_object() && j["dropped"].is_array())
                    for (auto& n : j["dropped"]) dropped.insert(n.get<std::string>());
                const uint64_t to = j.is_object() && j["epoch"].is_number() ? j["epoch"].get<uint64_t>() : 0;
                if (!reboot || to == epoch + 1) {
                    // It committed and said so before the kill: as any update.
                    updates_done_then_killed++;
                    if (reboot)
                        for (auto& c : clients) c->after_reboot(dropped);
                } else if (to == epoch + 2) {
                    // The kill came first: the request waited in the
                    // keeper's backlog and the recovered instance, whose
                    // sessions were all incoming and nobody's yet (the
                    // clients wait at the gate), rebooted: it drops them
                    // all, as a reboot does, and says so.
                    reboots_after_crash++;
                    for (auto& c : clients) c->after_crash_then_reboot(dropped);
                } else {
                    ADD_FAILURE() << "a reboot from epoch " << epoch << " answered " << text;
                }
            }
            w.bump();
        } else {
            ok = kill_once(serving_pid());
        }
    }
    const double campaign_s = elapsed_s();
    w.stop = true;
    w.handoff_wanted = false;
    w.bump();  // wakes a client waiting for a kill to be counted
    for (auto& t : threads) t.join();

    // One more kill with everything quiet, then every client takes its
    // sessions back one last time: nothing may cut this check.
    if (ok) ok = kill_once(serving_pid());
    uint64_t live = 0;
    for (auto& c : clients) {
        EXPECT_TRUE(c->final_check()) << "a final check was cut, at session " << c->cut_during()
                                      << "; serving: " << status_retry(d).dump();
        live += c->live_sessions();
    }
    json st = status_retry(d);

    Tally& t = w.tally;
    std::printf(
        "kill campaign: %" PRIu64 " kills in %.1f s (%.1f ms per kill; bound %" PRIu64
        " s, asked %" PRIu64 ")%s\n",
        kills, campaign_s, kills ? campaign_s * 1000 / static_cast<double>(kills) : 0.0, bound_s,
        want_kills, kills < want_kills ? " STOPPED AT THE TIME BOUND" : "");
    std::printf("  serving again after a kill: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                percentile(recovery_ms, 0.5), percentile(recovery_ms, 0.99),
                percentile(recovery_ms, 1.0));
    std::printf("  reboots %" PRIu64 " (skipped %" PRIu64 "), upgrades %" PRIu64 ", hand-offs %" PRIu64
                " (committed %" PRIu64 ", cut by a kill %" PRIu64 ": back to the old owner %" PRIu64
                ", kept by the next %" PRIu64 "; kills aimed at one %" PRIu64 ")\n",
                reboots, reboots_skipped, upgrades, t.handoffs.load(), t.handoffs_committed.load(),
                t.handoffs_cut.load(), t.handoff_back_to_old.load(), t.handoff_kept_by_next.load(),
                aimed);
    std::printf("  kills during a live update: %" PRIu64 " (%" PRIu64 " after it had answered, %" PRIu64
                " before a reboot the recovered instance then ran)\n",
                update_kills, updates_done_then_killed, reboots_after_crash);
    std::printf("  requests: %" PRIu64 " creates, %" PRIu64 " preserves, %" PRIu64 " releases, %" PRIu64
                " finishes, %" PRIu64 " cut by a kill\n",
                t.created.load(), t.preserved.load(), t.released.load(), t.finished.load(), t.cuts.load());
    std::printf("  checked after kills: %" PRIu64 " sessions, %" PRIu64 " files, %" PRIu64
                " gone ones; in doubt: %" PRIu64 " present, %" PRIu64 " absent; %" PRIu64
                " dropped by a reboot after a crash; %" PRIu64 " sessions live at the end\n",
                t.sessions_checked.load(), t.files_checked.load(), t.gone_checked.load(),
                t.doubt_present.load(), t.doubt_absent.load(), t.dropped_after_crash.load(), live);
    std::printf("  lost: %" PRIu64 " sessions, %" PRIu64 " files; brought back: %" PRIu64
                " sessions, %" PRIu64 " files; unexpected answers: %" PRIu64 "\n",
                t.lost_sessions.load(), t.lost_files.load(), t.back_sessions.load(), t.back_files.load(),
                t.unexpected.load());
    std::fflush(stdout);
    std::string problems;
    for (auto& p : t.problems) problems += "\n  " + p;
    if (!t.problems.empty()) {
        // Every live update, and the last few kills.
        problems += "\nthe killer's events (plain kills only the last 20):";
        for (size_t i = 0; i < events.size(); i++)
            if (i + 20 >= events.size() || events[i].find(" kill ") == std::string::npos ||
                events[i].find(" during ") != std::string::npos)
                problems += "\n  " + events[i];
    }

    EXPECT_TRUE(ok);
    EXPECT_EQ(keeper_changes, 0u) << "statuses naming another keeper than the first";
    EXPECT_GT(kills, 0u);
    EXPECT_EQ(t.lost_sessions.load(), 0u) << problems;
    EXPECT_EQ(t.lost_files.load(), 0u) << problems;
    EXPECT_EQ(t.back_sessions.load(), 0u) << problems;
    EXPECT_EQ(t.back_files.load(), 0u) << problems;
    EXPECT_EQ(t.unexpected.load(), 0u) << problems;
    // The campaign did what it says: it checked real work after its kills.
    EXPECT_GT(t.sessions_checked.load(), kills);
    EXPECT_GT(t.files_checked.load(), kills);
    EXPECT_GT(t.handoffs.load(), 0u);
    // Every hand-off a kill cut ended in exactly one owner's hands: the old
    // one took it back, or the next one had committed it (and then the old
    // session never came back: counted above).
    EXPECT_EQ(t.handoff_back_to_old.load() + t.handoff_kept_by_next.load(), t.handoffs_cut.load())
        << problems;
    if (!st.is_null()) {
        // A kill during a live update is a crash to recover from, or the
        // death of an instance that had handed everything over already.
        const uint64_t crashes = st["crashes_recovered"].get<uint64_t>();
        EXPECT_GE(crashes, kills - update_kills) << st.dump();
        EXPECT_LE(crashes, kills) << st.dump();
        EXPECT_TRUE(st["keeper"]["protecting"].get<bool>()) << st.dump();
    }
}

}  // namespace
}  // namespace lu::crash_test
