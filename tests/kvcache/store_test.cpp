// SPDX-License-Identifier: Apache-2.0
// The arena store and the connection-state format, without a process:
// random operations against a model with check() after each batch, the
// header validation a warm start relies on, and offsets that do not hold.
#include <sys/mman.h>

#include <map>
#include <random>

#include "handover.hpp"
#include "protocol.hpp"
#include "store.hpp"

#include <gtest/gtest.h>

namespace {

using namespace kvcache;

// An arena in anonymous shared memory, as the memfd would be.
struct Arena {
    explicit Arena(uint64_t size) : size(size) {
        base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        Store::format(base, size, 1000);
    }
    ~Arena() { munmap(base, size); }
    uint64_t size;
    void* base;
};

TEST(KvStore, RandomOperationsMatchAModel) {
    Arena a(8 << 20);
    Store s(a.base, a.size, true);
    std::map<std::string, std::string> model;  // what a read may return if present
    std::mt19937_64 rng(42);
    const int64_t now = 2000;
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 500; i++) {
            const std::string key = "k" + std::to_string(rng() % 300);
            const size_t len = rng() % 4 == 0 ? rng() % 300000 : rng() % 200;
            const std::string value(len, static_cast<char>('a' + rng() % 26));
            switch (rng() % 6) {
                case 0:
                case 1:
                    ASSERT_EQ(s.store(Mode::Set, key, 0, 0, value, 0, now), Result::Stored);
                    model[key] = value;
                    break;
                case 2: {
                    const Item* it = s.get(key, now);
                    if (it) {
                        ASSERT_TRUE(model.count(key));
                        ASSERT_EQ(it->value(), model[key]);
                    }
                    break;
                }
                case 3:
                    s.remove(key, now);
                    model.erase(key);
                    break;
                case 4:
                    if (s.store(Mode::Append, key, 0, 0, "+", 0, now) == Result::Stored) model[key] += "+";
                    break;
                case 5: {
                    uint64_t v;
                    ASSERT_EQ(s.store(Mode::Set, key, 0, 0, "41", 0, now), Result::Stored);
                    ASSERT_EQ(s.delta(key, true, 1, now, &v), Delta::Ok);
                    ASSERT_EQ(v, 42u);
                    model[key] = "42";
                    break;
                }
            }
        }
        ASSERT_EQ(s.check(), "") << "round " << round;
    }
    EXPECT_GT(s.counters().evictions, 0u);  // 8 MiB could not hold it all
}

TEST(KvStore, ValidateRefusesWhatItCannotTrust) {
    Arena a(4 << 20);
    Store s(a.base, a.size, true);
    ASSERT_EQ(s.store(Mode::Set, "k", 0, 0, "v", 0, 1000), Result::Stored);
    EXPECT_NE(Store::validate(a.base, a.size), "");  // not handed over: may be mid-write
    s.mark_handed_over();
    EXPECT_EQ(Store::validate(a.base, a.size), "");
    EXPECT_NE(Store::validate(a.base, a.size - 4096), "");  // a different size
    auto* words = static_cast<uint64_t*>(a.base);
    words[0] ^= 1;  // magic
    EXPECT_EQ(Store::validate(a.base, a.size), "bad magic");
    words[0] ^= 1;
    words[1] += 1;  // layout version
    EXPECT_NE(Store::validate(a.base, a.size).find("layout version"), std::string::npos);
    words[1] -= 1;
    EXPECT_EQ(Store::validate(a.base, a.size), "");
}

TEST(KvStore, BadOffsetsAreCaughtNotFollowed) {
    Arena a(4 << 20);
    Store s(a.base, a.size, true);
    ASSERT_EQ(s.store(Mode::Set, "key", 0, 0, "value", 0, 1000), Result::Stored);
    Item* it = const_cast<Item*>(s.get("key", 1000));
    ASSERT_NE(it, nullptr);
    it->next = a.size + 8;  // an LRU link outside the arena
    EXPECT_THROW(s.get("key", 1000), ArenaCorrupt);
    s.reset(1000);
    ASSERT_EQ(s.store(Mode::Set, "key", 0, 0, "value", 0, 1000), Result::Stored);
    it = const_cast<Item*>(s.get("key", 1000));
    ASSERT_NE(it, nullptr);
    it->cls ^= 1;  // a chunk that claims another size class
    EXPECT_THROW(s.get("key", 1000), ArenaCorrupt);
    EXPECT_NE(s.check(), "");
    s.reset(1000);
    EXPECT_EQ(s.check(), "");
    EXPECT_EQ(s.get("key", 1000), nullptr);
}

TEST(KvStore, ExpiryIsAbsoluteTime) {
    Arena a(4 << 20);
    Store s(a.base, a.size, true);
    EXPECT_EQ(absolute_time(0, 5000000), 0);
    EXPECT_EQ(absolute_time(10, 5000000), 5000010);
    EXPECT_EQ(absolute_time(2592000, 5000000), 5000000 + 2592000);
    EXPECT_EQ(absolute_time(2592001, 5000000), 2592001);
    EXPECT_EQ(absolute_time(-5, 5000000), 1);
    ASSERT_EQ(s.store(Mode::Set, "k", 0, 5000010, "v", 0, 5000000), Result::Stored);
    EXPECT_NE(s.get("k", 5000009), nullptr);
    EXPECT_EQ(s.get("k", 5000010), nullptr);
    EXPECT_EQ(s.check(), "");
}

TEST(KvHandoverState, RoundTripAndRefusals) {
    std::vector<HandedConn> in(3);
    for (int i = 0; i < 3; i++) {
        in[i].token = kFirstConnToken + i;
        in[i].conn.in = "xxset k 0 0 5\r\nhel";
        in[i].conn.in_pos = 2;  // already served: not carried
        in[i].conn.out = std::string(i * 1000, 'o');
        in[i].conn.swallow = i;
        in[i].peer_closed = i == 2;
    }
    in[1].conn.close_after_write = true;
    const std::string bytes = encode_state(in);
    std::vector<HandedConn> out;
    ASSERT_EQ(decode_state(bytes, &out), "");
    ASSERT_EQ(out.size(), 3u);
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(out[i].token, kFirstConnToken + i);
        EXPECT_EQ(out[i].conn.in, "set k 0 0 5\r\nhel");
        EXPECT_EQ(out[i].conn.out, std::string(i * 1000, 'o'));
        EXPECT_EQ(out[i].conn.swallow, static_cast<uint64_t>(i));
        EXPECT_EQ(out[i].peer_closed, i == 2);
    }
    EXPECT_TRUE(out[1].conn.close_after_write);
    // Every truncation and a flipped byte anywhere in the headers is refused or harmless.
    for (size_t n = 0; n < bytes.size(); n += 7) EXPECT_NE(decode_state(bytes.substr(0, n), &out), "");
    std::string bad = bytes;
    bad[24] = 1;  // first record's token: below kFirstConnToken
    EXPECT_NE(decode_state(bad, &out), "");
    std::vector<HandedConn> dup(2);
    dup[0].token = dup[1].token = kFirstConnToken;
    EXPECT_NE(decode_state(encode_state(dup), &out), "");
}

// The protocol layer alone: a request is served only once complete.
TEST(KvProtocolUnit, ServesOnlyCompleteRequests) {
    Arena a(4 << 20);
    Store s(a.base, a.size, true);
    ProcessInfo info;
    info.version = "test";
    Protocol p(&s, &info);
    Conn c;
    const std::string req = "set k 1 0 5\r\nhello\r\nget k\r\n";
    for (size_t i = 0; i < req.size(); i++) {
        c.in.push_back(req[i]);
        p.serve(c, 1000);
        if (i + 1 < req.size()) {
            EXPECT_LT(c.out.size(), 30u);
        }
    }
    EXPECT_EQ(c.out, "STORED\r\nVALUE k 1 5\r\nhello\r\nEND\r\n");
    EXPECT_EQ(c.in_avail(), 0u);
}

}  // namespace
