// SPDX-License-Identifier: Apache-2.0
// Engine micro-benchmarks: preserve and retrieve rates, handover
// serialize+validate time and blob size, engine memory per preserved file.
//   build/release/bench/engine_bench
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "engine.hpp"
#include "handlers/memfd_handler.hpp"
#include "handover_format.hpp"

using namespace lu;

namespace {

std::array<uint8_t, kSessionNameLength> name(size_t i) {
    std::array<uint8_t, kSessionNameLength> n{};
    snprintf(reinterpret_cast<char*>(n.data()), n.size(), "session-%zu", i);
    return n;
}

UniqueFd new_memfd() { return UniqueFd(memfd_create("bench", MFD_CLOEXEC)); }

// Descriptor numbers no process here has open: they measure the engine's
// own structures beyond this machine's fd limit.
struct Synthetic : FileHandler {
    std::string_view compatible() const override { return "synthetic-v1"; }
    bool can_preserve(int fd) override { return fd >= (1 << 30); }
    int preserve(FileOpArgs& a) override {
        a.serialized_data.assign(32, 0);  // the size of memfd-v2's record
        return 0;
    }
    void unpreserve(FileOpArgs&) override {}
    int retrieve(FileOpArgs& a) override {
        a.file = -1;
        return -EINVAL;
    }
    void finish(FileOpArgs&) override {}
    int get_id(int fd, const FdSlot&, FileId* id) override {
        *id = FileId{~0ull, static_cast<uint64_t>(fd)};
        return 0;
    }
};

// Preserve and release of one memfd in a session: the engine plus the
// memfd handler's fstat/fcntl work, without the daemon.
void BM_PreserveReleaseMemfd(benchmark::State& st) {
    Engine e;
    e.register_file_handler(std::make_unique<MemfdHandler>());
    UniqueFd m = new_memfd();
    size_t i = 0;
    for (auto _ : st) {
        Session* s = nullptr;
        e.create_session(name(i++ % 1000), &s);
        int r = e.preserve_fd(s, 1, UniqueFd(fcntl(m.get(), F_DUPFD_CLOEXEC, 0)));
        if (r) st.SkipWithError("preserve failed");
        e.release_session(s);
    }
    st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_PreserveReleaseMemfd);

// RETRIEVE_FD of memfds in the next instance (a /proc/self/fd reopen each).
void BM_RetrieveMemfd(benchmark::State& st) {
    constexpr int kFiles = 1000;
    for (auto _ : st) {
        st.PauseTiming();
        Engine a, b;
        a.register_file_handler(std::make_unique<MemfdHandler>());
        b.register_file_handler(std::make_unique<MemfdHandler>());
        Session* s = nullptr;
        a.create_session(name(0), &s);
        for (int t = 0; t < kFiles; t++) a.preserve_fd(s, t, new_memfd());
        a.reboot_freeze();
        Handover h = a.handover();
        std::vector<UniqueFd> fds;
        for (int fd : h.fds) fds.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 0));
        b.deserialize(std::move(h.image), std::move(fds));
        Session* in = nullptr;
        b.retrieve_session(name(0), &in);
        st.ResumeTiming();
        for (int t = 0; t < kFiles; t++) {
            int fd;
            if (b.retrieve_fd(in, t, &fd)) st.SkipWithError("retrieve failed");
        }
    }
    st.SetItemsProcessed(st.iterations() * kFiles);
}
BENCHMARK(BM_RetrieveMemfd)->Unit(benchmark::kMillisecond);

// Freeze + handover + encode, then decode + validate: what a live update
// costs in the engine, for sessions x files.
void BM_SerializeValidate(benchmark::State& st) {
    size_t sessions = st.range(0), files = st.range(1);
    Engine e;
    e.register_file_handler(std::make_unique<Synthetic>());
    int next = 1 << 30;
    for (size_t i = 0; i < sessions; i++) {
        Session* s = nullptr;
        e.create_session(name(i), &s);
        for (size_t f = 0; f < files; f++) e.preserve_fd(s, f, UniqueFd(next++));
    }
    size_t blob_size = 0;
    for (auto _ : st) {
        e.reboot_freeze();
        Handover h = e.handover();
        // Synthetic fds have no inode: give their slots what a memfd's would.
        for (size_t i = 0; i < h.image.fd_slots.size(); i++) h.image.fd_slots[i] = {S_IFREG, 1, i};
        std::vector<uint8_t> blob = encode_handover(h.image);
        HandoverImage back;
        if (decode_handover(blob, &back)) st.SkipWithError("decode failed");
        blob_size = blob.size();
        e.reboot_unfreeze();
    }
    st.counters["blob_bytes"] = static_cast<double>(blob_size);
    st.counters["bytes_per_file"] = static_cast<double>(blob_size) / double(sessions * files);
}
BENCHMARK(BM_SerializeValidate)->Args({1000, 10})->Args({100000, 1})->Unit(benchmark::kMillisecond);

// Heap bytes the engine holds per preserved file (mallinfo2 before/after).
void BM_MemoryPerFile(benchmark::State& st) {
    constexpr int kFiles = 100000;
    for (auto _ : st) {
        size_t before = mallinfo2().uordblks;
        {
            Engine e;
            e.register_file_handler(std::make_unique<Synthetic>());
            Session* s = nullptr;
            e.create_session(name(0), &s);
            for (int f = 0; f < kFiles; f++) e.preserve_fd(s, f, UniqueFd((1 << 30) + f));
            st.counters["bytes_per_file"] =
                static_cast<double>(mallinfo2().uordblks - before) / kFiles;
            Session* s2 = nullptr;
            size_t with_sessions = mallinfo2().uordblks;
            for (int i = 1; i <= kFiles; i++) e.create_session(name(i), &s2);
            st.counters["bytes_per_session"] =
                static_cast<double>(mallinfo2().uordblks - with_sessions) / kFiles;
        }
    }
}
BENCHMARK(BM_MemoryPerFile)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
