// SPDX-License-Identifier: Apache-2.0
#include "store.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace kvcache {

namespace {

constexpr uint64_t kMagic = 0x4d45484341435f4bull;  // "K_CACHEM"
// Bump on any change of Header, PageInfo, Item, the class table, the hash
// function or the geometry: the next version then refuses the arena (and
// starts empty) instead of misreading it.
constexpr uint32_t kLayoutVersion = 1;
constexpr uint32_t kMaxClasses = 64;
constexpr uint64_t kPageSize = (1u << 20) + 1024;  // >= sizeof(Item) + kMaxKey + kMaxValue
constexpr uint64_t kMinChunk = 80;
constexpr uint32_t kNoClass = 0xffffffffu;
constexpr uint32_t kActive = 1, kHandedOver = 2;
constexpr uint8_t kFree = 1, kLinked = 2, kAllocated = 3;
static_assert(sizeof(Item) + kMaxKey + kMaxValue <= kPageSize);

struct ClassInfo {
    uint64_t chunk_size, per_page;
    uint64_t free_head, free_count;
    uint64_t lru_head, lru_tail;
    uint64_t pages, items;  // pages given to the class, linked items in it
};

struct PageInfo {
    uint32_t cls;   // kNoClass until the page is given to a class
    uint32_t used;  // chunks not on the free list
};

constexpr uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// The chunk sizes: from 80 bytes, x1.25 each, up to half a page; then a page.
std::vector<uint64_t> class_sizes() {
    std::vector<uint64_t> v;
    for (uint64_t s = kMinChunk; s <= kPageSize / 2; s = round_up(s * 5 / 4, 8)) v.push_back(s);
    v.push_back(kPageSize);
    return v;
}

struct Geometry {
    uint64_t npages, nbuckets, pageinfo_off, buckets_off, pages_off;
};

}  // namespace

struct Header {
    uint64_t magic;
    uint32_t layout_version, header_size;
    uint64_t arena_size, page_size, npages, next_page;
    uint64_t pageinfo_off, buckets_off, nbuckets, pages_off;
    uint32_t nclasses, state;
    uint64_t generation;  // live updates this arena went through
    int64_t created;      // the cold start
    uint64_t next_cas;
    int64_t oldest_live;  // flush_all: see is_dead
    uint64_t oldest_cas;
    Counters c;
    ClassInfo cls[kMaxClasses];
};

namespace {

constexpr uint64_t kHeaderSpace = round_up(sizeof(Header), 4096);

// Everything but the header's contents follows from the arena size alone.
Geometry geometry(uint64_t size) {
    Geometry g{};
    g.nbuckets = 1024;  // a power of two near one bucket per 256 bytes
    while (g.nbuckets * 2 <= size / 256) g.nbuckets *= 2;
    const uint64_t fixed = kHeaderSpace + g.nbuckets * 8 + 2 * 4096;
    g.npages = size > fixed ? (size - fixed) / (kPageSize + sizeof(PageInfo)) : 0;
    g.pageinfo_off = kHeaderSpace;
    g.buckets_off = round_up(g.pageinfo_off + g.npages * sizeof(PageInfo), 64);
    g.pages_off = round_up(g.buckets_off + g.nbuckets * 8, 4096);
    return g;
}

// FNV-1a: stable across versions (the hash table is in the arena), no tables.
uint64_t hash(std::string_view key) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char ch : key) h = (h ^ ch) * 0x100000001b3ull;
    return h;
}

[[noreturn]] void corrupt(const char* what, uint64_t off = 0) {
    throw ArenaCorrupt(std::string(what) + " (offset " + std::to_string(off) + ")");
}

// memcached's safe_strtoull: decimal, may be followed by white space, no
// negative numbers (strtoull would wrap them).
bool parse_u64(const char* s, uint64_t* out) {
    errno = 0;
    char* end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE || end == s) return false;
    if (!(isspace(static_cast<unsigned char>(*end)) || *end == '\0')) return false;
    if (static_cast<long long>(v) < 0 && memchr(s, '-', static_cast<size_t>(end - s))) return false;
    *out = v;
    return true;
}

}  // namespace

uint64_t Store::min_size() { return kHeaderSpace + 1024 * 8 + 3 * 4096 + kPageSize + 8; }

void Store::format(void* base, uint64_t size, int64_t now) {
    const Geometry g = geometry(size);
    auto* h = static_cast<Header*>(base);
    std::memset(base, 0, g.pages_off);
    h->magic = kMagic;
    h->layout_version = kLayoutVersion;
    h->header_size = sizeof(Header);
    h->arena_size = size;
    h->page_size = kPageSize;
    h->npages = g.npages;
    h->pageinfo_off = g.pageinfo_off;
    h->buckets_off = g.buckets_off;
    h->nbuckets = g.nbuckets;
    h->pages_off = g.pages_off;
    const std::vector<uint64_t> sizes = class_sizes();
    h->nclasses = static_cast<uint32_t>(sizes.size());
    for (uint32_t i = 0; i < h->nclasses; i++) {
        h->cls[i].chunk_size = sizes[i];
        h->cls[i].per_page = kPageSize / sizes[i];
    }
    auto* pages = reinterpret_cast<PageInfo*>(static_cast<char*>(base) + g.pageinfo_off);
    for (uint64_t p = 0; p < g.npages; p++) pages[p] = {kNoClass, 0};
    h->state = kActive;
    h->created = now;
    h->next_cas = 1;
}

std::string Store::validate(const void* base, uint64_t size) {
    if (size < min_size()) return "arena too small";
    const auto* h = static_cast<const Header*>(base);
    if (h->magic != kMagic) return "bad magic";
    if (h->layout_version != kLayoutVersion)
        return "layout version " + std::to_string(h->layout_version) + ", this build reads " +
               std::to_string(kLayoutVersion);
    if (h->header_size != sizeof(Header)) return "bad header size";
    if (h->state != kHandedOver) return "the previous version did not hand it over cleanly";
    const Geometry g = geometry(size);
    if (h->arena_size != size || h->page_size != kPageSize || h->npages != g.npages ||
        h->nbuckets != g.nbuckets || h->pageinfo_off != g.pageinfo_off ||
        h->buckets_off != g.buckets_off || h->pages_off != g.pages_off ||
        g.pages_off + g.npages * kPageSize > size || h->next_page > h->npages)
        return "bad geometry";
    const std::vector<uint64_t> sizes = class_sizes();
    if (h->nclasses != sizes.size()) return "bad class table";
    uint64_t items = 0;
    std::vector<uint64_t> pages_of(h->nclasses), used_of(h->nclasses);
    for (uint32_t i = 0; i < h->nclasses; i++) {
        const ClassInfo& c = h->cls[i];
        if (c.chunk_size != sizes[i] || c.per_page != kPageSize / sizes[i] || c.pages > h->npages ||
            c.items > c.pages * c.per_page || c.free_count != c.pages * c.per_page - c.items)
            return "bad class " + std::to_string(i);
        items += c.items;
    }
    if (items != h->c.curr_items) return "bad item count";
    const auto* pages = reinterpret_cast<const PageInfo*>(static_cast<const char*>(base) + h->pageinfo_off);
    for (uint64_t p = 0; p < h->npages; p++) {
        if (p >= h->next_page) {
            if (pages[p].cls != kNoClass || pages[p].used) return "bad unused page";
            continue;
        }
        if (pages[p].cls >= h->nclasses || pages[p].used > h->cls[pages[p].cls].per_page)
            return "bad page " + std::to_string(p);
        pages_of[pages[p].cls]++;
        used_of[pages[p].cls] += pages[p].used;
    }
    for (uint32_t i = 0; i < h->nclasses; i++)
        if (pages_of[i] != h->cls[i].pages || used_of[i] != h->cls[i].items)
            return "page table disagrees with class " + std::to_string(i);
    return "";
}

Store::Store(void* base, uint64_t size, bool evict)
    : base_(static_cast<char*>(base)), size_(size), h_(static_cast<Header*>(base)), evict_(evict) {}

Counters& Store::counters() { return h_->c; }
uint64_t Store::generation() const { return h_->generation; }
int64_t Store::created() const { return h_->created; }
bool Store::handed_over(const void* base, uint64_t size) {
    if (size < min_size()) return false;
    const auto* h = static_cast<const Header*>(base);
    return h->magic == kMagic && h->header_size == sizeof(Header) && h->state == kHandedOver;
}
void Store::mark_handed_over() {
    h_->generation++;
    h_->state = kHandedOver;
}
void Store::mark_active() { h_->state = kActive; }
void Store::undo_handed_over() {
    h_->generation--;
    h_->state = kActive;
}
void Store::reset(int64_t now) {
    const uint64_t generation = h_->generation;
    format(base_, size_, now);
    h_->generation = generation;
}
uint32_t Store::classes() const { return h_->nclasses; }
void Store::class_info(uint32_t cls, uint64_t* chunk_size, uint64_t* pages, uint64_t* items) const {
    *chunk_size = h_->cls[cls].chunk_size;
    *pages = h_->cls[cls].pages;
    *items = h_->cls[cls].items;
}

// ---- checked access: every offset read from the arena goes through here ----

uint64_t Store::page_of(uint64_t off) const { return (off - h_->pages_off) / h_->page_size; }

Item* Store::item_at(uint64_t off) const {
    if (off < h_->pages_off || off >= h_->pages_off + h_->next_page * h_->page_size || off % 8)
        corrupt("offset outside the pages", off);
    const uint64_t p = page_of(off), in = off - h_->pages_off - p * h_->page_size;
    const auto* pages = reinterpret_cast<const PageInfo*>(base_ + h_->pageinfo_off);
    const uint32_t cls = pages[p].cls;
    if (cls >= h_->nclasses) corrupt("page without a class", off);
    const ClassInfo& c = h_->cls[cls];
    if (in % c.chunk_size || in / c.chunk_size >= c.per_page) corrupt("not a chunk boundary", off);
    auto* it = reinterpret_cast<Item*>(base_ + off);
    if (it->cls != cls) corrupt("chunk of another class", off);
    if (it->state == kLinked) {
        if (it->nkey == 0 || it->nkey > kMaxKey || sizeof(Item) + it->nkey + it->nbytes > c.chunk_size)
            corrupt("bad item sizes", off);
    } else if (it->state != kFree && it->state != kAllocated) {
        corrupt("bad chunk state", off);
    }
    return it;
}

uint64_t Store::offset_of(const Item* it) const {
    return static_cast<uint64_t>(reinterpret_cast<const char*>(it) - base_);
}

uint64_t& Store::bucket(std::string_view key) const {
    auto* b = reinterpret_cast<uint64_t*>(base_ + h_->buckets_off);
    return b[hash(key) & (h_->nbuckets - 1)];
}

// ---- lists ----

void Store::lru_remove(Item* it) {
    ClassInfo& c = h_->cls[it->cls];
    const uint64_t off = offset_of(it);
    if (it->prev) {
        item_at(it->prev)->next = it->next;
    } else {
        if (c.lru_head != off) corrupt("LRU head", off);
        c.lru_head = it->next;
    }
    if (it->next) {
        item_at(it->next)->prev = it->prev;
    } else {
        if (c.lru_tail != off) corrupt("LRU tail", off);
        c.lru_tail = it->prev;
    }
    it->prev = it->next = 0;
}

void Store::lru_push(Item* it) {
    ClassInfo& c = h_->cls[it->cls];
    const uint64_t off = offset_of(it);
    it->prev = 0;
    it->next = c.lru_head;
    if (c.lru_head)
        item_at(c.lru_head)->prev = off;
    else
        c.lru_tail = off;
    c.lru_head = off;
}

void Store::bump(Item* it, int64_t now) {
    lru_remove(it);
    lru_push(it);
    it->time = now;
}

void Store::link(Item* it, int64_t now) {
    uint64_t& b = bucket(it->key_view());
    it->hnext = b;
    b = offset_of(it);
    it->state = kLinked;
    it->time = now;
    it->cas = h_->next_cas++;
    lru_push(it);
    h_->cls[it->cls].items++;
    h_->c.curr_items++;
    h_->c.total_items++;
    h_->c.bytes += sizeof(Item) + it->nkey + it->nbytes;
}

void Store::unlink(Item* it) {
    const uint64_t off = offset_of(it);
    uint64_t* link = &bucket(it->key_view());
    for (uint64_t steps = 0; *link != off; steps++) {
        if (*link == 0 || steps > h_->c.curr_items) corrupt("item missing from its hash chain", off);
        link = &item_at(*link)->hnext;
    }
    *link = it->hnext;
    lru_remove(it);
    h_->cls[it->cls].items--;
    h_->c.curr_items--;
    h_->c.bytes -= sizeof(Item) + it->nkey + it->nbytes;
    free_chunk(it);
}

void Store::free_chunk(Item* it) {
    ClassInfo& c = h_->cls[it->cls];
    auto* pages = reinterpret_cast<PageInfo*>(base_ + h_->pageinfo_off);
    it->state = kFree;
    it->hnext = c.free_head;
    c.free_head = offset_of(it);
    c.free_count++;
    pages[page_of(c.free_head)].used--;
}

// ---- lookup ----

// memcached's rules: expired when exptime has come; flushed when a flush_all
// deadline (oldest_live) has passed and the item was stored or used before
// it, or (an immediate flush) got its cas before the flush.
bool Store::is_dead(const Item* it, int64_t now, bool* expired, bool* flushed) const {
    if (it->exptime != 0 && it->exptime <= now) {
        if (expired) *expired = true;
        return true;
    }
    if (h_->oldest_live != 0 && h_->oldest_live <= now &&
        (it->time <= h_->oldest_live || (h_->oldest_cas != 0 && it->cas < h_->oldest_cas))) {
        if (flushed) *flushed = true;
        return true;
    }
    return false;
}

Item* Store::find(std::string_view key, int64_t now, bool* expired, bool* flushed) {
    uint64_t off = bucket(key);
    for (uint64_t steps = 0; off; steps++) {
        if (steps > h_->c.curr_items) corrupt("hash chain loops", off);
        Item* it = item_at(off);
        if (it->state != kLinked) corrupt("unlinked item in a hash chain", off);
        if (it->nkey == key.size() && std::memcmp(it->key(), key.data(), key.size()) == 0) {
            if (is_dead(it, now, expired, flushed)) {
                unlink(it);
                return nullptr;
            }
            return it;
        }
        off = it->hnext;
    }
    return nullptr;
}

// ---- allocation ----

void Store::carve(uint64_t page, uint32_t cls) {
    ClassInfo& c = h_->cls[cls];
    auto* pages = reinterpret_cast<PageInfo*>(base_ + h_->pageinfo_off);
    pages[page] = {cls, 0};
    c.pages++;
    const uint64_t start = h_->pages_off + page * h_->page_size;
    for (uint64_t k = c.per_page; k-- > 0;) {  // the free list ends up in address order
        auto* it = reinterpret_cast<Item*>(base_ + start + k * c.chunk_size);
        std::memset(it, 0, sizeof(Item));
        it->cls = static_cast<uint8_t>(cls);
        it->state = kFree;
        it->hnext = c.free_head;
        c.free_head = start + k * c.chunk_size;
    }
    c.free_count += c.per_page;
}

// A class that cannot get a chunk otherwise takes a page from another: an
// empty one if any, else (when evicting) the page of the least recently
// used item among the other classes' LRU tails.
bool Store::steal_page(uint32_t cls, int64_t now) {
    auto* pages = reinterpret_cast<PageInfo*>(base_ + h_->pageinfo_off);
    uint64_t victim = h_->npages;
    for (uint64_t p = 0; p < h_->next_page && victim == h_->npages; p++)
        if (pages[p].cls != cls && pages[p].used == 0) victim = p;
    if (victim == h_->npages && evict_) {
        int64_t oldest = INT64_MAX;
        for (uint32_t k = 0; k < h_->nclasses; k++) {
            if (k == cls || !h_->cls[k].lru_tail) continue;
            const Item* tail = item_at(h_->cls[k].lru_tail);
            if (tail->time < oldest) {
                oldest = tail->time;
                victim = page_of(h_->cls[k].lru_tail);
            }
        }
    }
    if (victim == h_->npages) return false;

    ClassInfo& old = h_->cls[pages[victim].cls];
    const uint64_t start = h_->pages_off + victim * h_->page_size, end = start + h_->page_size;
    for (uint64_t k = 0; k < old.per_page; k++) {
        Item* it = item_at(start + k * old.chunk_size);
        if (it->state == kAllocated) corrupt("allocated chunk in a stolen page", offset_of(it));
        if (it->state != kLinked) continue;
        if (is_dead(it, now, nullptr, nullptr))
            h_->c.reclaimed++;
        else
            h_->c.evictions++;
        unlink(it);
    }
    // Take the page's chunks off the old class's free list.
    uint64_t* link = &old.free_head;
    const uint64_t listed = old.free_count;
    for (uint64_t steps = 0; *link; steps++) {
        if (steps >= listed) corrupt("free list loops", *link);
        Item* it = item_at(*link);
        if (it->state != kFree) corrupt("used chunk on the free list", *link);
        if (*link >= start && *link < end) {
            *link = it->hnext;
            old.free_count--;
        } else {
            link = &it->hnext;
        }
    }
    if (pages[victim].used != 0) corrupt("page still in use after eviction", start);
    old.pages--;
    carve(victim, cls);
    return true;
}

uint64_t Store::alloc(uint64_t total, int64_t now) {
    uint32_t cls = 0;
    while (cls + 1 < h_->nclasses && h_->cls[cls].chunk_size < total) cls++;
    ClassInfo& c = h_->cls[cls];
    auto* pages = reinterpret_cast<PageInfo*>(base_ + h_->pageinfo_off);
    // Each step below leaves a free chunk, so two rounds suffice; the bound
    // only guards against a corrupt arena.
    for (int round = 0; round < 4; round++) {
        if (c.free_head) {
            Item* it = item_at(c.free_head);
            if (it->state != kFree) corrupt("used chunk on the free list", c.free_head);
            const uint64_t off = c.free_head;
            c.free_head = it->hnext;
            c.free_count--;
            pages[page_of(off)].used++;
            std::memset(it, 0, sizeof(Item));
            it->cls = static_cast<uint8_t>(cls);
            it->state = kAllocated;
            return off;
        }
        if (h_->next_page < h_->npages) {
            carve(h_->next_page++, cls);
            continue;
        }
        // As memcached: an expired item among the 5 oldest is reclaimed
        // first; else the oldest is evicted.
        bool freed = false;
        uint64_t off = c.lru_tail;
        for (int i = 0; i < 5 && off && !freed; i++) {
            Item* it = item_at(off);
            off = it->prev;
            if (is_dead(it, now, nullptr, nullptr)) {
                h_->c.reclaimed++;
                unlink(it);
                freed = true;
            }
        }
        if (freed) continue;
        if (c.lru_tail && evict_) {
            h_->c.evictions++;
            unlink(item_at(c.lru_tail));
            continue;
        }
        if (!steal_page(cls, now)) return 0;
    }
    return 0;
}

// ---- commands ----

const Item* Store::get(std::string_view key, int64_t now, bool count_get) {
    bool expired = false, flushed = false;
    Item* it = find(key, now, &expired, &flushed);
    if (count_get) {
        h_->c.cmd_get++;
        if (it) {
            h_->c.get_hits++;
        } else {
            h_->c.get_misses++;
            h_->c.get_expired += expired;
            h_->c.get_flushed += flushed;
        }
    }
    if (it) bump(it, now);
    return it;
}

const Item* Store::get_and_touch(std::string_view key, int64_t exptime, int64_t now) {
    h_->c.cmd_touch++;
    Item* it = const_cast<Item*>(get(key, now));
    if (it) {
        it->exptime = exptime;
        h_->c.touch_hits++;
    } else {
        h_->c.touch_misses++;
    }
    return it;
}

Result Store::store(Mode mode, std::string_view key, uint32_t flags, int64_t exptime,
                    std::string_view value, uint64_t cas, int64_t now) {
    h_->c.cmd_set++;
    std::string joined;
    if (mode == Mode::Append || mode == Mode::Prepend) {
        // Joined in a buffer first: the allocation below may evict the old item.
        const Item* old = find(key, now);
        if (!old || old->nbytes + value.size() > kMaxValue) return Result::NotStored;
        joined = mode == Mode::Append ? std::string(old->value()).append(value)
                                      : std::string(value).append(old->value());
        flags = old->flags;
        exptime = old->exptime;
        value = joined;
    }
    if (value.size() > kMaxValue) return Result::TooLarge;
    const uint64_t off = alloc(sizeof(Item) + key.size() + value.size(), now);
    if (!off) {
        // As memcached: a failed set must not leave the old value readable.
        if (mode == Mode::Set) unlink_for_set_failure(key, now);
        return mode == Mode::Append || mode == Mode::Prepend ? Result::NotStored : Result::NoMemory;
    }
    auto* it = reinterpret_cast<Item*>(base_ + off);
    it->nkey = static_cast<uint8_t>(key.size());
    it->nbytes = static_cast<uint32_t>(value.size());
    it->flags = flags;
    it->exptime = exptime;
    std::memcpy(base_ + off + sizeof(Item), key.data(), key.size());
    std::memcpy(it->data(), value.data(), value.size());

    Item* old = find(key, now);  // after alloc, which may have evicted it
    Result refused = Result::Stored;
    if (mode == Mode::Add && old) {
        bump(old, now);
        refused = Result::NotStored;
    } else if (mode == Mode::Replace && !old) {
        refused = Result::NotStored;
    } else if (mode == Mode::Cas) {
        if (!old) {
            h_->c.cas_misses++;
            refused = Result::NotFound;
        } else if (old->cas != cas) {
            h_->c.cas_badval++;
            refused = Result::Exists;
        } else {
            h_->c.cas_hits++;
        }
    }
    if (refused != Result::Stored) {
        free_chunk(it);
        return refused;
    }
    if (old) unlink(old);
    link(it, now);
    return Result::Stored;
}

void Store::unlink_for_set_failure(std::string_view key, int64_t now) {
    if (Item* old = find(key, now)) unlink(old);
}

bool Store::remove(std::string_view key, int64_t now) {
    Item* it = find(key, now);
    if (!it) {
        h_->c.delete_misses++;
        return false;
    }
    h_->c.delete_hits++;
    unlink(it);
    return true;
}

bool Store::touch(std::string_view key, int64_t exptime, int64_t now) {
    h_->c.cmd_touch++;
    Item* it = find(key, now);
    if (!it) {
        h_->c.touch_misses++;
        return false;
    }
    h_->c.touch_hits++;
    it->exptime = exptime;
    bump(it, now);
    return true;
}

Delta Store::delta(std::string_view key, bool incr, uint64_t by, int64_t now, uint64_t* result) {
    Item* it = find(key, now);
    if (!it) {
        (incr ? h_->c.incr_misses : h_->c.decr_misses)++;
        return Delta::NotFound;
    }
    const std::string text(it->value());  // NUL-terminated for strtoull
    uint64_t v;
    if (text.empty() || !parse_u64(text.c_str(), &v)) return Delta::NonNumeric;
    if (incr)
        v += by;  // wraps at 2^64, as memcached
    else
        v = by > v ? 0 : v - by;  // never below 0
    (incr ? h_->c.incr_hits : h_->c.decr_hits)++;
    *result = v;
    const std::string digits = std::to_string(v);
    if (digits.size() <= it->nbytes) {
        // In place, padded with spaces, as memcached (protocol.txt allows it).
        std::memcpy(it->data(), digits.data(), digits.size());
        std::memset(it->data() + digits.size(), ' ', it->nbytes - digits.size());
        it->cas = h_->next_cas++;
        bump(it, now);
        return Delta::Ok;
    }
    // Longer: a new item with the old flags and expiry (copied first: the
    // allocation may evict the old item).
    const std::string k(key);
    const uint32_t flags = it->flags;
    const int64_t exptime = it->exptime;
    const uint64_t off = alloc(sizeof(Item) + k.size() + digits.size(), now);
    if (!off) return Delta::NoMemory;
    auto* n = reinterpret_cast<Item*>(base_ + off);
    n->nkey = static_cast<uint8_t>(k.size());
    n->nbytes = static_cast<uint32_t>(digits.size());
    n->flags = flags;
    n->exptime = exptime;
    std::memcpy(base_ + off + sizeof(Item), k.data(), k.size());
    std::memcpy(n->data(), digits.data(), digits.size());
    if (Item* old = find(k, now)) unlink(old);
    link(n, now);
    return Delta::Ok;
}

void Store::flush(int64_t deadline, int64_t now) {
    // deadline: absolute time of the flush (now for an immediate one), as
    // memcached's realtime(delay); 0 or 1 (a time long past) disables it, as
    // memcached's oldest_live 0 does.
    h_->c.cmd_flush++;
    h_->oldest_live = deadline > 1 ? deadline - 1 : 0;
    if (h_->oldest_live != 0 && h_->oldest_live <= now) h_->oldest_cas = h_->next_cas;
}

// ---- consistency check (tests) ----

std::string Store::check() const {
    try {
        const auto* pages = reinterpret_cast<const PageInfo*>(base_ + h_->pageinfo_off);
        uint64_t linked_total = 0, bytes = 0;
        for (uint32_t k = 0; k < h_->nclasses; k++) {
            const ClassInfo& c = h_->cls[k];
            uint64_t pages_n = 0, linked = 0, free_n = 0;
            for (uint64_t p = 0; p < h_->next_page; p++) {
                if (pages[p].cls != k) continue;
                pages_n++;
                uint64_t used = 0;
                for (uint64_t i = 0; i < c.per_page; i++) {
                    const Item* it = item_at(h_->pages_off + p * h_->page_size + i * c.chunk_size);
                    if (it->state == kAllocated) return "allocated chunk at rest";
                    if (it->state == kLinked) {
                        used++;
                        bytes += sizeof(Item) + it->nkey + it->nbytes;
                    }
                }
                if (used != pages[p].used) return "page " + std::to_string(p) + " used count";
                linked += used;
            }
            if (pages_n != c.pages || linked != c.items) return "class " + std::to_string(k) + " counts";
            for (uint64_t off = c.free_head; off; off = item_at(off)->hnext) {
                if (++free_n > c.free_count || item_at(off)->state != kFree || item_at(off)->cls != k)
                    return "class " + std::to_string(k) + " free list";
            }
            if (free_n != c.free_count || free_n + linked != pages_n * c.per_page)
                return "class " + std::to_string(k) + " free count";
            uint64_t n = 0, prev = 0;
            for (uint64_t off = c.lru_head; off; prev = off, off = item_at(off)->next) {
                const Item* it = item_at(off);
                if (++n > c.items || it->state != kLinked || it->prev != prev)
                    return "class " + std::to_string(k) + " LRU";
            }
            if (n != c.items || c.lru_tail != prev) return "class " + std::to_string(k) + " LRU length";
            linked_total += linked;
        }
        if (linked_total != h_->c.curr_items || bytes != h_->c.bytes) return "item or byte count";
        const auto* b = reinterpret_cast<const uint64_t*>(base_ + h_->buckets_off);
        uint64_t hashed = 0;
        for (uint64_t i = 0; i < h_->nbuckets; i++) {
            for (uint64_t off = b[i]; off; off = item_at(off)->hnext) {
                const Item* it = item_at(off);
                if (++hashed > linked_total || it->state != kLinked ||
                    (hash(it->key_view()) & (h_->nbuckets - 1)) != i)
                    return "hash chain " + std::to_string(i);
            }
        }
        if (hashed != linked_total) return "items missing from the hash table";
        return "";
    } catch (const ArenaCorrupt& e) {
        return e.what();
    }
}

}  // namespace kvcache
