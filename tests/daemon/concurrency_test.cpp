// SPDX-License-Identifier: Apache-2.0
// 64 clients at once, each on its own session, then a live update and every
// byte checked in the next epoch.
#include <atomic>
#include <thread>

#include "daemon_test_util.hpp"

namespace lu::testing {
namespace {

using nlohmann::json;

constexpr int kClients = 64;
constexpr int kFiles = 20;

std::string session_name(int i) { return "client-" + std::to_string(i); }
uint64_t token_of(int i, int j) { return (uint64_t{0xC0FFEE} << 32) | (uint64_t(i) << 8) | uint64_t(j); }
size_t size_of(int i, int j) { return 1 + size_t(i) * 97 + size_t(j) * 1031; }
std::string content_of(int i, int j) {
    std::string s(size_of(i, j), '\0');
    uint32_t x = 2166136261u ^ uint32_t(i * 131 + j);
    for (auto& c : s) {
        x = x * 16777619u + 0x9e37u;
        c = static_cast<char>(x >> 24);
    }
    std::string tag = "s" + std::to_string(i) + "f" + std::to_string(j);
    s.replace(0, std::min(tag.size(), s.size()), tag, 0, std::min(tag.size(), s.size()));
    return s;
}

TEST(Concurrency, SixtyFourClientsThenLiveUpdate) {
    DaemonProcess d;
    std::vector<Fd> sessions;
    {
        // Control is exclusive: one holder creates every session up front.
        Fd ctl(lu_open());
        ASSERT_GE(ctl.get(), 0);
        for (int i = 0; i < kClients; i++) {
            sessions.emplace_back(lu_create_session(ctl.get(), session_name(i).c_str()));
            ASSERT_TRUE(sessions.back()) << strerror(-sessions.back().get());
        }
    }
    std::atomic<int> start{0};
    std::vector<std::string> errors(kClients);
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; i++) {
        threads.emplace_back([&, i] {
            start.fetch_add(1);
            while (start.load() < kClients) std::this_thread::yield();
            int s = sessions[i].get();
            for (int j = 0; j < kFiles && errors[i].empty(); j++) {
                Fd m = make_memfd(content_of(i, j));
                int rc = lu_preserve_fd(s, m.get(), token_of(i, j));
                if (rc) errors[i] = "preserve " + std::to_string(j) + ": " + strerror(-rc);
                // Interleave other requests on the same session.
                char name[LIVEUPDATE_SESSION_NAME_LENGTH];
                rc = lu_get_name(s, name);
                if (rc || session_name(i) != name) errors[i] = "get_name " + std::to_string(j);
                if (lu_preserve_fd(s, m.get(), token_of(i, j)) != -EEXIST)
                    errors[i] = "duplicate token accepted";
                if (lu_preserve_fd(s, m.get(), token_of(i, j) + 1000) != -EBUSY)
                    errors[i] = "same memfd twice accepted";
                if (lu_retrieve_fd(s, token_of(i, j)) != -EINVAL) errors[i] = "retrieve on outgoing";
            }
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kClients; i++) EXPECT_EQ(errors[i], "") << "client " << i;

    json st = d.status();
    ASSERT_EQ(count_sessions(st), size_t(kClients));
    EXPECT_EQ(st["preserved_files"], kClients * kFiles);
    for (int i = 0; i < kClients; i++) {
        auto s = find_session(st, session_name(i));
        ASSERT_TRUE(s) << session_name(i);
        EXPECT_EQ((*s)["direction"], "outgoing");
        const json& files = (*s)["files"];
        ASSERT_EQ(files.size(), size_t(kFiles)) << session_name(i);
        for (int j = 0; j < kFiles; j++) {
            EXPECT_EQ(files[j]["token"].get<uint64_t>(), token_of(i, j));
            EXPECT_EQ(files[j]["handler"], "memfd-v2");
            EXPECT_EQ(files[j]["size"].get<size_t>(), size_of(i, j));
        }
    }

    // The live update: the session fds stay open (they are what is kept).
    ASSERT_EQ(d.reboot(), 0);
    sessions.clear();
    st = d.status();
    EXPECT_EQ(st["epoch"], 1);
    ASSERT_EQ(count_sessions(st), size_t(kClients));

    Fd ctl(lu_open());
    ASSERT_GE(ctl.get(), 0) << strerror(-ctl.get());
    std::vector<Fd> incoming;
    for (int i = 0; i < kClients; i++) {
        incoming.emplace_back(lu_retrieve_session(ctl.get(), session_name(i).c_str()));
        ASSERT_TRUE(incoming.back()) << session_name(i);
    }
    // Verify concurrently too: one thread per session.
    std::vector<std::string> verify(kClients);
    threads.clear();
    for (int i = 0; i < kClients; i++) {
        threads.emplace_back([&, i] {
            int s = incoming[i].get();
            for (int j = 0; j < kFiles; j++) {
                int fd = lu_retrieve_fd(s, token_of(i, j));
                if (fd < 0) {
                    verify[i] = "retrieve " + std::to_string(j) + ": " + strerror(-fd);
                    return;
                }
                Fd f(fd);
                if (!has_cloexec(fd)) verify[i] = "no FD_CLOEXEC";
                if (read_all_at(fd) != content_of(i, j))
                    verify[i] = "bytes differ in file " + std::to_string(j);
            }
            if (lu_finish(s) != 0) verify[i] = "finish";
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kClients; i++) EXPECT_EQ(verify[i], "") << "client " << i;
    incoming.clear();
    EXPECT_EQ(lu_retrieve_session(ctl.get(), session_name(0).c_str()), -ENOENT);
    EXPECT_EQ(count_sessions(d.status()), 0u);
}

}  // namespace
}  // namespace lu::testing
