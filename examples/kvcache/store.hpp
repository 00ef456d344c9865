// SPDX-License-Identifier: Apache-2.0
// kvcache's item store: every item, every link and every counter lives in one
// memfd arena, so that the next version of the service maps the same memfd
// after a live update and serves at once, with no fix-up and no copy.
//
// Layout (all links are byte offsets from the arena's start, 0 = none):
//
//   [Header | PageInfo[npages] | bucket[nbuckets] | page 0 | page 1 | ...]
//
// Memory is cut into pages of kPageSize bytes (one 1 MiB item fits in one);
// a page is given, on first need, to one size class and cut into chunks of
// that class's size, as memcached's slabs are. Each class has a free list
// and an LRU list (doubly linked). Items are found through a chained hash
// table of offsets. When a class has no free chunk and no page is left, the
// least recently used item of the class is evicted (expired items at the
// tail are reclaimed first); a class that has no item to evict takes a page
// from another class (an empty one if any, else the page of the least
// recently used item of all classes), evicting what that page holds.
//
// Times are absolute unix seconds, so expiry survives the move.
//
// The arena comes from another process: nothing in it is trusted. The header
// is checked before use (validate), and every offset is checked when it is
// followed (item_at); a bad one throws ArenaCorrupt, and the caller resets
// the store rather than serve from a corrupt arena.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kvcache {

inline constexpr uint32_t kMaxKey = 250;
inline constexpr uint32_t kMaxValue = 1u << 20;  // the item size limit (memcached -I 1m)

struct ArenaCorrupt : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Counters kept in the arena: they survive live updates with the items.
struct Counters {
    uint64_t curr_items, total_items, bytes, evictions, reclaimed;
    uint64_t cmd_get, cmd_set, cmd_touch, cmd_flush;
    uint64_t get_hits, get_misses, get_expired, get_flushed;
    uint64_t delete_hits, delete_misses, incr_hits, incr_misses, decr_hits, decr_misses;
    uint64_t cas_hits, cas_misses, cas_badval, touch_hits, touch_misses;
    uint64_t total_connections;
};

// An item as stored: 64 bytes, then the key, then the value.
struct Item {
    uint64_t hnext;    // next in the hash chain; next free chunk when free
    uint64_t prev;     // LRU neighbour towards the head (more recent)
    uint64_t next;     // LRU neighbour towards the tail (older)
    uint64_t cas;
    int64_t exptime;   // absolute unix time; 0 = never
    int64_t time;      // last store or access (LRU order, flush_all)
    uint32_t flags;    // the client's flags
    uint32_t nbytes;   // value length
    uint8_t nkey;
    uint8_t cls;
    uint8_t state;     // kFree or kLinked
    uint8_t pad[5];

    const char* key() const { return reinterpret_cast<const char*>(this + 1); }
    char* data() { return reinterpret_cast<char*>(this + 1) + nkey; }
    const char* data() const { return reinterpret_cast<const char*>(this + 1) + nkey; }
    std::string_view key_view() const { return {key(), nkey}; }
    std::string_view value() const { return {data(), nbytes}; }
};
static_assert(sizeof(Item) == 64);

struct Header;

enum class Mode { Set, Add, Replace, Append, Prepend, Cas };
enum class Result { Stored, NotStored, Exists, NotFound, TooLarge, NoMemory };
enum class Delta { Ok, NotFound, NonNumeric, NoMemory };

class Store {
  public:
    // The smallest arena format accepts (one page and the tables).
    static uint64_t min_size();
    // Lays out an empty store over [base, base + size).
    static void format(void* base, uint64_t size, int64_t now);
    // Checks the header of an arena handed over by the previous version
    // (magic, layout version, geometry, tables): "" if it can be used, else
    // why not. It must have been marked handed over (a clean stop).
    static std::string validate(const void* base, uint64_t size);

    // evict: false = memcached -M (refuse to store when full).
    Store(void* base, uint64_t size, bool evict);

    // The live item for key (expired and flushed ones are unlinked), or
    // nullptr. A hit moves it to the head of its LRU. Counts get stats if
    // count_get.
    const Item* get(std::string_view key, int64_t now, bool count_get = true);
    // gat: get and set the expiry.
    const Item* get_and_touch(std::string_view key, int64_t exptime, int64_t now);
    Result store(Mode mode, std::string_view key, uint32_t flags, int64_t exptime,
                 std::string_view value, uint64_t cas, int64_t now);
    bool remove(std::string_view key, int64_t now);
    bool touch(std::string_view key, int64_t exptime, int64_t now);
    Delta delta(std::string_view key, bool incr, uint64_t by, int64_t now, uint64_t* result);
    // flush_all: items stored or used before deadline (absolute time; now for
    // an immediate flush) are dead from then on; checked lazily on access.
    void flush(int64_t deadline, int64_t now);
    // Empties the store (a corrupt arena is reset, not served from).
    void reset(int64_t now);
    void unlink_for_set_failure(std::string_view key, int64_t now);

    Counters& counters();
    uint64_t arena_size() const { return size_; }
    uint64_t generation() const;
    int64_t created() const;
    // The last write of an old version: marks the arena as cleanly stopped,
    // so the next version may use it; and the first write of a new one.
    // True if the arena's header says its version handed it over (its last
    // write before a hand-off or a live update): false for an arena still in
    // use, e.g. a serving version's own session back after a daemon crash.
    static bool handed_over(const void* base, uint64_t size);
    void mark_handed_over();
    void mark_active();
    // A hand-off rolled back: active again, and the hand-over not counted.
    void undo_handed_over();

    // Per class: chunk size, pages, items (for "stats slabs" / "stats items").
    uint32_t classes() const;
    void class_info(uint32_t cls, uint64_t* chunk_size, uint64_t* pages, uint64_t* items) const;

    // Walks every structure and checks every invariant (tests, --check):
    // "" if consistent, else the first problem found.
    std::string check() const;

  private:
    Item* item_at(uint64_t off) const;
    uint64_t offset_of(const Item* it) const;
    uint64_t& bucket(std::string_view key) const;
    Item* find(std::string_view key, int64_t now, bool* expired = nullptr, bool* flushed = nullptr);
    bool is_dead(const Item* it, int64_t now, bool* expired, bool* flushed) const;
    uint64_t alloc(uint64_t total, int64_t now);
    bool steal_page(uint32_t cls, int64_t now);
    void carve(uint64_t page, uint32_t cls);
    void link(Item* it, int64_t now);
    void unlink(Item* it);
    void free_chunk(Item* it);
    void lru_remove(Item* it);
    void lru_push(Item* it);
    void bump(Item* it, int64_t now);
    uint64_t page_of(uint64_t off) const;

    char* base_;
    uint64_t size_;
    Header* h_;
    bool evict_;
};

}  // namespace kvcache
