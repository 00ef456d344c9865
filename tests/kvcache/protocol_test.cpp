// SPDX-License-Identifier: Apache-2.0
// The memcached text protocol of kvcache, against a real kvcache process
// over loopback TCP (no liveupdated: the protocol does not depend on it).
// Every reply is compared byte for byte with memcached's.
#include <ctime>

#include "kvcache_support.hpp"

namespace {

using namespace std::string_literals;
using kvtest::Client;
using kvtest::KvProcess;

class KvProtocol : public ::testing::Test {
  protected:
    void start(std::vector<std::string> extra = {}) {
        std::vector<std::string> args{"--port", "0", "--memory", "16"};
        args.insert(args.end(), extra.begin(), extra.end());
        kv_ = std::make_unique<KvProcess>(args);
        port_ = kv_->wait_serving();
        ASSERT_NE(port_, 0) << kv_->log();
        c_ = std::make_unique<Client>(port_);
        ASSERT_TRUE(c_->ok());
    }
    void SetUp() override { start(); }
    // Sends req and checks that the reply is exactly want.
    void expect(const std::string& req, const std::string& want) {
        EXPECT_EQ(c_->call(req, want), want) << "request: " << req;
    }
    Client& c() { return *c_; }

    std::unique_ptr<KvProcess> kv_;
    int port_ = 0;
    std::unique_ptr<Client> c_;
};

TEST_F(KvProtocol, SetGetAndMultiGet) {
    expect("set a 42 0 5\r\nhello\r\n", "STORED\r\n");
    expect("set b 0 0 0\r\n\r\n", "STORED\r\n");
    expect("get a\r\n", "VALUE a 42 5\r\nhello\r\nEND\r\n");
    expect("get nosuch\r\n", "END\r\n");
    expect("get a nosuch b a\r\n",
           "VALUE a 42 5\r\nhello\r\nVALUE b 0 0\r\n\r\nVALUE a 42 5\r\nhello\r\nEND\r\n");
    // Flags are 32-bit unsigned; values are binary-safe.
    expect("set bin 4294967295 0 4\r\n\r\n\0x\r\n"s, "STORED\r\n");
    expect("get bin\r\n", "VALUE bin 4294967295 4\r\n\r\n\0x\r\nEND\r\n"s);
    expect("set f 4294967296 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    // Several spaces between tokens are one separator, as memcached tokenizes.
    expect("get   a  \r\n", "VALUE a 42 5\r\nhello\r\nEND\r\n");
}

TEST_F(KvProtocol, GetsAndCasFlow) {
    expect("set k 0 0 1\r\n1\r\n", "STORED\r\n");
    uint64_t cas1 = 0, cas2 = 0;
    ASSERT_EQ(c().gets("k", &cas1), "1");
    expect("cas k 0 0 1 " + std::to_string(cas1 + 1000) + "\r\n2\r\n", "EXISTS\r\n");
    expect("cas k 7 0 1 " + std::to_string(cas1) + "\r\n2\r\n", "STORED\r\n");
    ASSERT_EQ(c().gets("k", &cas2), "2");
    EXPECT_NE(cas1, cas2);
    expect("cas k 0 0 1 " + std::to_string(cas1) + "\r\n3\r\n", "EXISTS\r\n");  // stale unique
    expect("get k\r\n", "VALUE k 7 1\r\n2\r\nEND\r\n");
    expect("cas nosuch 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n");
    // Every store changes the unique, even with the same value.
    expect("set k 7 0 1\r\n2\r\n", "STORED\r\n");
    uint64_t cas3 = 0;
    ASSERT_EQ(c().gets("k", &cas3), "2");
    EXPECT_NE(cas3, cas2);
    expect("cas k 0 0 1 abc\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    expect("cas k 0 0 1\r\n", "ERROR\r\n");  // a cas without its unique: wrong token count
    expect("cas k 0 0 1 " + std::to_string(cas3) + " noreply\r\n9\r\nget k\r\n", "VALUE k 0 1\r\n9\r\nEND\r\n");
}

TEST_F(KvProtocol, AddReplaceAppendPrepend) {
    expect("add k 1 0 1\r\na\r\n", "STORED\r\n");
    expect("add k 2 0 1\r\nb\r\n", "NOT_STORED\r\n");
    expect("replace nosuch 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    expect("replace k 3 0 2\r\ncd\r\n", "STORED\r\n");
    expect("append k 9 0 2\r\nef\r\n", "STORED\r\n");     // append keeps the old flags
    expect("prepend k 9 0 2\r\nab\r\n", "STORED\r\n");
    expect("get k\r\n", "VALUE k 3 6\r\nabcdef\r\nEND\r\n");
    expect("append nosuch 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    expect("prepend nosuch 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    // add over an expired item succeeds.
    expect("set e 0 -1 1\r\nx\r\n", "STORED\r\n");
    expect("add e 0 0 1\r\ny\r\n", "STORED\r\n");
    expect("get e\r\n", "VALUE e 0 1\r\ny\r\nEND\r\n");
}

TEST_F(KvProtocol, Delete) {
    expect("set k 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("delete k\r\n", "DELETED\r\n");
    expect("delete k\r\n", "NOT_FOUND\r\n");
    expect("get k\r\n", "END\r\n");
    expect("set k 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("delete k 0\r\n", "DELETED\r\n");  // the old hold time, zero only
    expect("delete k 5\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    expect("delete\r\n", "ERROR\r\n");
}

TEST_F(KvProtocol, IncrDecr) {
    // memcached's t/incrdecr.t, reply for reply.
    expect("set num 0 0 1\r\n1\r\n", "STORED\r\n");
    expect("incr num 1\r\n", "2\r\n");
    expect("incr num 8\r\n", "10\r\n");
    expect("get num\r\n", "VALUE num 0 2\r\n10\r\nEND\r\n");
    expect("decr num 1\r\n", "9\r\n");
    // Shorter in place, space padded: allowed by protocol.txt, what memcached does.
    expect("get num\r\n", "VALUE num 0 2\r\n9 \r\nEND\r\n");
    expect("decr num 9\r\n", "0\r\n");
    expect("decr num 5\r\n", "0\r\n");  // never below zero
    expect("set num 0 0 10\r\n4294967296\r\n", "STORED\r\n");
    expect("incr num 1\r\n", "4294967297\r\n");
    expect("set num 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n");
    expect("incr num 1\r\n", "0\r\n");  // wraps at 2^64
    expect("decr bogus 5\r\n", "NOT_FOUND\r\n");
    expect("incr bogus 5\r\n", "NOT_FOUND\r\n");
    expect("set bigincr 0 0 1\r\n0\r\n", "STORED\r\n");
    expect("incr bigincr 18446744073709551610\r\n", "18446744073709551610\r\n");
    expect("set text 0 0 2\r\nhi\r\n", "STORED\r\n");
    expect("incr text 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    expect("set neg 0 0 2\r\n-1\r\n", "STORED\r\n");
    expect("incr neg 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    expect("set big 0 0 20\r\n18446744073709551616\r\n", "STORED\r\n");  // > 2^64-1
    expect("incr big 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    expect("set empty 0 0 0\r\n\r\n", "STORED\r\n");
    expect("decr empty 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    expect("incr num abc\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n");
    expect("incr num -1\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n");
    expect("incr num\r\n", "ERROR\r\n");
    // Growing past the old length makes a new item; flags kept.
    expect("set grow 5 0 2\r\n99\r\n", "STORED\r\n");
    expect("incr grow 1\r\n", "100\r\n");
    expect("get grow\r\n", "VALUE grow 5 3\r\n100\r\nEND\r\n");
    // incr changes the cas unique.
    uint64_t a = 0, b = 0;
    ASSERT_EQ(c().gets("grow", &a), "100");
    expect("incr grow 1\r\n", "101\r\n");
    ASSERT_EQ(c().gets("grow", &b), "101");
    EXPECT_NE(a, b);
}

TEST_F(KvProtocol, TouchAndGat) {
    expect("set k 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("touch k 1000\r\n", "TOUCHED\r\n");
    expect("touch nosuch 10\r\n", "NOT_FOUND\r\n");
    expect("touch k abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    expect("gat 100 k nosuch\r\n", "VALUE k 0 1\r\nx\r\nEND\r\n");
    expect("touch k -1\r\n", "TOUCHED\r\n");  // expired from now on
    expect("get k\r\n", "END\r\n");
    expect("touch k 10\r\n", "NOT_FOUND\r\n");
}

TEST_F(KvProtocol, ExpiryRules) {
    const long now = static_cast<long>(time(nullptr));
    expect("set neg 0 -1 1\r\nx\r\n", "STORED\r\n");             // negative: expired at once
    expect("set rel 0 100 1\r\nx\r\n", "STORED\r\n");            // 100 s from now
    expect("set max 0 2592000 1\r\nx\r\n", "STORED\r\n");        // 30 days: still relative
    expect("set past 0 1000000000 1\r\nx\r\n", "STORED\r\n");    // > 30 days: absolute, 2001
    expect("set future 0 " + std::to_string(now + 1000) + " 1\r\nx\r\n", "STORED\r\n");
    expect("set never 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("get neg rel max past future never\r\n",
           "VALUE rel 0 1\r\nx\r\nVALUE max 0 1\r\nx\r\nVALUE future 0 1\r\nx\r\n"
           "VALUE never 0 1\r\nx\r\nEND\r\n");
    expect("set bad 0 abc 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
}

// The only test that sleeps: a relative expiry of 1 s and a flush_all with a
// delay, both checked after one 2 s sleep.
TEST_F(KvProtocol, ShortExpiryAndDelayedFlush) {
    expect("set short 0 1 1\r\nx\r\n", "STORED\r\n");
    expect("set long 0 1000 1\r\nx\r\n", "STORED\r\n");
    expect("flush_all 2\r\n", "OK\r\n");
    std::this_thread::sleep_for(std::chrono::seconds(2));
    expect("get short long\r\n", "END\r\n");  // expired; flushed by the delayed flush_all
    expect("set after 0 0 1\r\nx\r\n", "STORED\r\n");  // stored after the flush time: kept
    expect("get after\r\n", "VALUE after 0 1\r\nx\r\nEND\r\n");
}

TEST_F(KvProtocol, FlushAll) {
    expect("set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n", "STORED\r\nSTORED\r\n");
    expect("flush_all 1000\r\n", "OK\r\n");  // later: nothing flushed yet
    expect("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n");
    expect("flush_all\r\n", "OK\r\n");
    expect("get a b\r\n", "END\r\n");
    expect("set c 0 0 1\r\n3\r\n", "STORED\r\n");  // same second, after the flush: kept
    expect("get c\r\n", "VALUE c 0 1\r\n3\r\nEND\r\n");
    expect("flush_all 0\r\n", "OK\r\n");
    expect("get c\r\n", "END\r\n");
    expect("set d 0 0 1\r\n4\r\n", "STORED\r\n");
    expect("flush_all noreply\r\nget d\r\n", "END\r\n");
    expect("flush_all x\r\n", "CLIENT_ERROR bad command line format\r\n");
    expect("flush_all 1 2 3\r\n", "ERROR\r\n");
}

TEST_F(KvProtocol, Noreply) {
    expect("set k 1 0 1 noreply\r\na\r\n"
           "add k 0 0 1 noreply\r\nb\r\n"
           "add n 0 0 1 noreply\r\n5\r\n"
           "replace k 2 0 1 noreply\r\nc\r\n"
           "append k 0 0 1 noreply\r\nd\r\n"
           "prepend k 0 0 1 noreply\r\ne\r\n"
           "incr n 10 noreply\r\n"
           "decr n 1 noreply\r\n"
           "incr nosuch 1 noreply\r\n"
           "touch k 100 noreply\r\n"
           "delete nosuch noreply\r\n"
           "set big 0 0 2000000 noreply\r\n" +
               std::string(2000000, 'x') + "\r\n" +
               "set bad 0 0 1 noreply\r\nxyz\r\n"
               "get k n\r\n",
           // bad data chunk is silent; its leftover "z"... line is not
           "ERROR\r\nVALUE k 2 3\r\necd\r\nVALUE n 0 2\r\n14\r\nEND\r\n");
    expect("delete k noreply\r\ndelete k 0 noreply\r\nget k\r\n", "END\r\n");
}

TEST_F(KvProtocol, ItemSizeLimit) {
    const std::string mib(1 << 20, 'm');
    expect("set max 0 0 1048576\r\n" + mib + "\r\n", "STORED\r\n");
    expect("get max\r\n", "VALUE max 0 1048576\r\n" + mib + "\r\nEND\r\n");
    // Too large: refused, its data swallowed, the old value gone (memcached's getset.t).
    expect("set max 0 0 1048577\r\n" + mib + "x\r\nget max\r\n",
           "SERVER_ERROR object too large for cache\r\nEND\r\n");
    expect("set huge 0 0 5000000\r\n", "SERVER_ERROR object too large for cache\r\n");
    for (int i = 0; i < 50; i++) ASSERT_TRUE(c().send(std::string(100000, 'y')));  // swallowed as it comes
    expect("\r\nversion\r\n", "VERSION 1.6.0-kvcache\r\n");
    expect("set a 0 0 1048576\r\n" + mib + "\r\nappend a 0 0 1\r\nz\r\n", "STORED\r\nNOT_STORED\r\n");
    expect("set b 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n");
}

TEST_F(KvProtocol, BadDataChunk) {
    expect("set k 0 0 3\r\nabcd\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n");
    expect("set k 0 0 3\r\nabc\n\nget k\r\n", "CLIENT_ERROR bad data chunk\r\nEND\r\n");
    expect("get k\r\n", "END\r\n");
}

TEST_F(KvProtocol, KeyLength) {
    const std::string k250(250, 'k'), k251(251, 'k');
    expect("set " + k250 + " 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("get " + k250 + "\r\n", "VALUE " + k250 + " 0 1\r\nx\r\nEND\r\n");
    // As memcached: the line is refused and the data line read as a command.
    expect("set " + k251 + " 0 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    expect("get " + k250 + " " + k251 + "\r\n", "CLIENT_ERROR bad command line format\r\n");
    expect("incr " + k251 + " 1\r\n", "CLIENT_ERROR bad command line format\r\n");
    expect("delete " + k251 + "\r\n", "CLIENT_ERROR bad command line format\r\n");
    expect("touch " + k251 + " 1\r\n", "CLIENT_ERROR bad command line format\r\n");
}

TEST_F(KvProtocol, MalformedCommands) {
    expect("bogus\r\n", "ERROR\r\n");
    expect("\r\n", "ERROR\r\n");
    expect("g\r\n", "ERROR\r\n");
    expect("get\r\n", "ERROR\r\n");
    expect("set k 0 0\r\n", "ERROR\r\n");
    expect("set k 0 0 1 noreply extra\r\n", "ERROR\r\n");
    expect("set k abc 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    expect("set k -1 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    expect("set k 0 0 1x\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    expect("touch k\r\n", "ERROR\r\n");
    expect("verbosity 1\r\n", "OK\r\n");
    expect("version\n", "VERSION 1.6.0-kvcache\r\n");  // a bare \n ends a line too
    expect("stats nosuch\r\n", "ERROR\r\n");
}

TEST_F(KvProtocol, VersionAndStats) {
    expect("version\r\n", "VERSION 1.6.0-kvcache\r\n");
    expect("set a 0 0 3\r\nabc\r\nget a\r\nget b\r\n", "STORED\r\nVALUE a 0 3\r\nabc\r\nEND\r\nEND\r\n");
    EXPECT_EQ(c().stat("pid"), std::to_string(kv_->pid()));
    EXPECT_EQ(c().stat("curr_items"), "1");
    EXPECT_EQ(c().stat("total_items"), "1");
    EXPECT_EQ(c().stat("get_hits"), "1");
    EXPECT_EQ(c().stat("get_misses"), "1");
    EXPECT_EQ(c().stat("cmd_get"), "2");
    EXPECT_EQ(c().stat("cmd_set"), "1");
    EXPECT_EQ(c().stat("curr_connections"), "1");
    EXPECT_EQ(c().stat("limit_maxbytes"), std::to_string(16 << 20));
    EXPECT_EQ(c().stat("evictions"), "0");
    EXPECT_EQ(c().stat("bytes"), std::to_string(64 + 1 + 3));
    EXPECT_FALSE(c().stat("uptime").empty());
    EXPECT_EQ(c().stat("version"), "1.6.0-kvcache");
    expect("stats reset\r\n", "RESET\r\n");
    EXPECT_EQ(c().stat("get_hits"), "0");
    EXPECT_EQ(c().stat("curr_items"), "1");
}

TEST_F(KvProtocol, VersionTag) {
    start({"--version-tag", "v2"});
    expect("version\r\n", "VERSION 1.6.0-kvcache+v2\r\n");
    EXPECT_EQ(c().stat("version"), "1.6.0-kvcache+v2");
}

TEST_F(KvProtocol, Quit) {
    expect("set a 0 0 1\r\nx\r\n", "STORED\r\n");
    expect("get a\r\nquit\r\nget a\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n");
    EXPECT_TRUE(c().closed_by_server());
}

TEST_F(KvProtocol, PipelinedInOneWrite) {
    std::string req, want;
    for (int i = 0; i < 500; i++) {
        const std::string k = "p" + std::to_string(i), v = std::string(i % 97, 'a' + i % 26);
        req += "set " + k + " " + std::to_string(i) + " 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\n";
        req += "get " + k + "\r\n";
        want += "STORED\r\nVALUE " + k + " " + std::to_string(i) + " " + std::to_string(v.size()) + "\r\n" +
                v + "\r\nEND\r\n";
    }
    req += "incr nosuch 1\r\ndelete p0\r\nversion\r\n";
    want += "NOT_FOUND\r\nDELETED\r\nVERSION 1.6.0-kvcache\r\n";
    expect(req, want);
}

TEST_F(KvProtocol, RequestSplitAcrossWrites) {
    const std::string value(3000, 'v');
    const std::string req = "set split 3 0 3000\r\n" + value + "\r\nget split\r\n";
    for (size_t i = 0; i < req.size(); i += (i < 40 ? 1 : 701)) {
        ASSERT_TRUE(c().send(req.substr(i, i < 40 ? 1 : 701)));
        if (i < 40) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(c().read_n(8 + 20 + 3002 + 5), "STORED\r\nVALUE split 3 3000\r\n" + value + "\r\nEND\r\n");
}

TEST_F(KvProtocol, LargeResponsesUnderBackpressure) {
    // 16 x 512 KiB per get, 8 gets in one write, read only after all are sent.
    start({"--memory", "64"});
    const std::string v(512 * 1024, 'L');
    for (int i = 0; i < 16; i++) ASSERT_EQ(c().set("L" + std::to_string(i), v), "STORED");
    std::string req, keys;
    for (int i = 0; i < 16; i++) keys += " L" + std::to_string(i);
    for (int r = 0; r < 8; r++) req += "get" + keys + "\r\n";
    ASSERT_TRUE(c().send(req));
    for (int r = 0; r < 8; r++) {
        for (int i = 0; i < 16; i++) {
            ASSERT_EQ(c().line(), "VALUE L" + std::to_string(i) + " 0 524288");
            ASSERT_EQ(c().read_n(v.size() + 2), v + "\r\n");
        }
        ASSERT_EQ(c().line(), "END");
    }
}

TEST_F(KvProtocol, LineTooLongClosesConnection) {
    ASSERT_TRUE(c().send(std::string(5000, 'x')));
    EXPECT_TRUE(c().closed_by_server());
    Client other(port_);
    EXPECT_EQ(other.call("version\r\n", "VERSION 1.6.0-kvcache\r\n"), "VERSION 1.6.0-kvcache\r\n");
}

TEST_F(KvProtocol, EvictionKeepsTheStoreConsistent) {
    start({"--memory", "4"});  // 3 pages of 1 MiB: far less than what is stored
    std::string v(300 * 1024, 'e');
    for (int i = 0; i < 40; i++) {
        v[0] = static_cast<char>('a' + i % 26);
        ASSERT_EQ(c().set("e" + std::to_string(i), v), "STORED") << i;
    }
    EXPECT_EQ(c().get("e39"), v);
    EXPECT_NE(c().stat("evictions"), "0");
    // Other size classes still get memory (pages move between classes).
    for (int i = 0; i < 1000; i++) ASSERT_EQ(c().set("s" + std::to_string(i), "small"), "STORED") << i;
    EXPECT_EQ(c().get("s999"), "small");
    ASSERT_EQ(c().set("big", std::string(1 << 20, 'b')), "STORED");
    EXPECT_EQ(c().get("big"), std::string(1 << 20, 'b'));
}

TEST_F(KvProtocol, OutOfMemoryWithoutEviction) {
    start({"--memory", "4", "--no-evict"});
    const std::string v(1 << 20, 'o');
    std::string r;
    int stored = 0;
    for (int i = 0; i < 10 && (r = c().set("o" + std::to_string(i), v)) == "STORED"; i++) stored++;
    EXPECT_EQ(r, "SERVER_ERROR out of memory storing object");
    EXPECT_GE(stored, 1);
    EXPECT_EQ(c().get("o0"), v);
    EXPECT_EQ(c().stat("evictions"), "0");
    expect("delete o0\r\n", "DELETED\r\n");
    EXPECT_EQ(c().set("again", v), "STORED");
}

// Debian's libmemcached-tools: real clients, unchanged. scripts/deps.sh
// installs them, so their absence is a failure, not a reason to skip.
TEST_F(KvProtocol, LibmemcachedTools) {
    for (const char* tool : {"/usr/bin/memcslap", "/usr/bin/memccp", "/usr/bin/memccat"})
        ASSERT_EQ(access(tool, X_OK), 0) << tool << " missing: run scripts/deps.sh";
    const std::string servers = "--servers=127.0.0.1:" + std::to_string(port_);
    char tmpl[] = "/tmp/kvcache-memccp-XXXXXX";
    const int fd = mkstemp(tmpl);
    ASSERT_EQ(write(fd, "from memccp\n", 12), 12);
    close(fd);
    ASSERT_EQ(system(("memccp " + servers + " " + tmpl + " >/dev/null 2>&1").c_str()), 0);
    const std::string key = std::string(tmpl).substr(5);
    EXPECT_EQ(c().get(key), "from memccp\n");
    unlink(tmpl);
    FILE* f = popen(("memccat " + servers + " " + key).c_str(), "r");
    char buf[64] = {};
    EXPECT_EQ(fread(buf, 1, sizeof buf, f), 13u);  // memccat adds a newline
    EXPECT_EQ(pclose(f), 0);
    EXPECT_STREQ(buf, "from memccp\n\n");
    EXPECT_EQ(system(("memcslap " + servers + " --concurrency=4 --execute-number=2000 >/dev/null 2>&1").c_str()), 0);
    EXPECT_EQ(system(("memcslap " + servers + " --test=get --concurrency=4 --execute-number=2000 >/dev/null 2>&1").c_str()), 0);
    EXPECT_NE(c().stat("get_hits"), "0");
}

}  // namespace
