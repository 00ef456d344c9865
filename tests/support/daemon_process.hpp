// SPDX-License-Identifier: Apache-2.0
// liveupdated as a real process for the integration tests: started in a
// fresh runtime directory, found again after a live update (the serving pid
// changes; we are the subreaper, so every instance is our child to reap).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "liveupdate/client.h"

extern char** environ;

namespace lu::testing {

class DaemonProcess {
public:
    // extra: more daemon arguments (e.g. "--test-handler"); dir: the
    // runtime directory (default: a fresh one).
    explicit DaemonProcess(std::vector<std::string> extra = {}, std::string dir = {}) {
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        char tmpl[] = "/tmp/liveupdate-test-XXXXXX";
        dir_ = dir.empty() ? std::string(mkdtemp(tmpl)) : dir;
        setenv("LIVEUPDATE_RUNTIME_DIR", dir_.c_str(), 1);
        std::vector<std::string> args{LIVEUPDATED_PATH, "--runtime-dir", dir_};
        args.insert(args.end(), extra.begin(), extra.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_t first = -1;
        EXPECT_EQ(posix_spawn(&first, argv[0], nullptr, nullptr, argv.data(), environ), 0);
        instances_.push_back(first);
        nlohmann::json st = wait_serving();
        if (st.is_object() && st.contains("keeper") && st["keeper"]["pid"].is_number())
            keeper_ = st["keeper"]["pid"].get<pid_t>();
    }
    ~DaemonProcess() {
        stop();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    const std::string& dir() const { return dir_; }

    // Polls until the admin socket answers status; returns the status.
    nlohmann::json wait_serving() {
        for (int i = 0; i < 1000; i++) {
            nlohmann::json s = status();
            if (!s.is_null()) return s;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ADD_FAILURE() << "liveupdated did not start serving in " << dir_;
        return {};
    }

    // The daemon's status JSON, or null if nobody answers.
    nlohmann::json status() const { return admin(R"({"op":"status"})"); }
    nlohmann::json admin(const std::string& request) const {
        char* reply = nullptr;
        if (lu_admin_request(request.c_str(), &reply) != 0) return {};
        nlohmann::json j = nlohmann::json::parse(reply, nullptr, false);
        lu_free(reply);
        return j.is_discarded() ? nlohmann::json() : j;
    }
    pid_t pid() const {
        nlohmann::json s = status();
        return s.is_null() ? -1 : s["pid"].get<pid_t>();
    }

    // Number of open fds of the serving daemon.
    size_t fd_count() const {
        size_t n = 0;
        std::error_code ec;
        for (auto it = std::filesystem::directory_iterator(
                 "/proc/" + std::to_string(pid()) + "/fd", ec);
             !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
            n++;
        return n;
    }

    // Stops every instance still running as systemd does (SIGTERM) and
    // expects a clean exit, status 0: in the sanitizer build that is also
    // LeakSanitizer's verdict on the daemon after the whole test. An
    // instance that exited earlier must have exited cleanly too, unless the
    // test killed it (SIGKILL). Only pids that are still our unreaped
    // children are signalled, so a recycled pid is safe.
    void stop() {
        pid_t p = pid();
        if (p > 0) instances_.push_back(p);
        // The serving instance may not be our child yet: started by an
        // update we did not follow (an agent ran it), its parent may still
        // be draining. Its pid is fresh from its own answer: stop it, and
        // wait until its parent has exited and it is ours to reap.
        if (p > 0 && waitpid(p, nullptr, WNOHANG) < 0 && errno == ECHILD) {
            kill(p, SIGTERM);
            for (int i = 0; i < 3000 && waitpid(p, nullptr, WNOHANG) < 0 && kill(p, 0) == 0; i++)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        for (pid_t i : instances_) {
            int st = 0;
            pid_t r = waitpid(i, &st, WNOHANG);
            if (r < 0) continue;  // reaped already, or not ours
            if (r == 0) {
                kill(i, SIGTERM);
                st = wait_bounded(i);
            }
            bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            if (!killed) expect_clean_exit(i, st);
        }
        instances_.clear();
        end_keeper_and_strays();
    }

    // The keeper (it ends with the stop above, unless the test killed the
    // instance and a recovery was still starting), and whatever it started
    // in our runtime directory: nothing of this daemon may outlive the test
    // (it would keep the test's output open). As the subreaper we are the
    // parent of every orphan.
    void end_keeper_and_strays() {
        for (int round = 0; round < 2; round++) {
            if (keeper_ > 0 && kill(keeper_, 0) == 0) {
                kill(keeper_, SIGTERM);
                for (int i = 0; i < 500 && kill(keeper_, 0) == 0; i++) {
                    waitpid(keeper_, nullptr, WNOHANG);
                    std::this_thread::sleep_for(std::chrono::milliseconds(10));
                }
            }
            std::ifstream f("/proc/self/task/" + std::to_string(getpid()) + "/children");
            pid_t c;
            while (f >> c) {
                std::ifstream cmd("/proc/" + std::to_string(c) + "/cmdline");
                std::string line((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
                if (c != keeper_ && line.find(dir_) == std::string::npos) continue;
                kill(c, SIGKILL);
                waitpid(c, nullptr, 0);
            }
        }
    }

    static void expect_clean_exit(pid_t pid, int status) {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "liveupdated pid " << pid << " did not exit cleanly: "
            << (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                  : "signal " + std::to_string(WTERMSIG(status)));
    }

    // Waits for a child, at most 30 s (a liveness bound: it takes
    // milliseconds), then kills it. Its wait status.
    static int wait_bounded(pid_t pid) {
        int st = 0;
        for (int i = 0; i < 3000; i++) {
            pid_t r = waitpid(pid, &st, WNOHANG);
            if (r == pid) return st;
            if (r < 0) return 0;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ADD_FAILURE() << "liveupdated pid " << pid << " ignored SIGTERM for 30 s: killed";
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return st;
    }

    // Runs liveupdatectl with args; returns its exit code, stdout in *out.
    static int ctl(const std::vector<std::string>& args, std::string* out = nullptr) {
        std::string cmd = LIVEUPDATECTL_PATH;
        for (auto& a : args) cmd += " '" + a + "'";
        return shell(cmd, out);
    }

    // Runs a shell command; returns its exit code (-1 if a signal ended
    // it), its stdout in *out.
    static int shell(const std::string& cmd, std::string* out = nullptr) {
        FILE* f = popen(cmd.c_str(), "r");
        std::string text;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
        int st = pclose(f);
        if (out) *out = text;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }

    // A live update through liveupdatectl; returns its exit code. After a
    // commit the old instance exits: reap it (it is our child or, as we are
    // the subreaper, our adopted grandchild).
    int reboot(const std::vector<std::string>& extra = {}) {
        pid_t old = pid();
        std::vector<std::string> args{"reboot"};
        args.insert(args.end(), extra.begin(), extra.end());
        int rc = ctl(args);
        track_update(old, rc == 0);
        return rc;
    }

    // An upgrade through liveupdatectl; as reboot().
    int upgrade(const std::vector<std::string>& extra = {}) {
        pid_t old = pid();
        std::vector<std::string> args{"upgrade"};
        args.insert(args.end(), extra.begin(), extra.end());
        int rc = ctl(args);
        track_update(old, rc == 0);
        return rc;
    }

    // After a live update asked some other way: follows the instance that
    // serves now and reaps the old one, which must exit cleanly if asked.
    void track_update(pid_t old, bool check_exit = true) {
        pid_t now = pid();
        if (now > 0 && now != old) {
            instances_.push_back(now);
            int st = 0;
            // A committed old instance exits by itself, cleanly (and leak-free).
            if (old > 0 && waitpid(old, &st, 0) == old && check_exit) expect_clean_exit(old, st);
        }
    }

private:
    std::string dir_;
    pid_t keeper_ = -1;  // from the first status (docs/crash-safety.md)
    std::vector<pid_t> instances_;  // every instance we started or saw serving
};

}  // namespace lu::testing
