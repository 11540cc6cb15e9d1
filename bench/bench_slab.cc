/* bench_slab.cc — slab alloc/free against jemalloc malloc/free of 64-byte objects. */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

extern "C" {
#include "slab.h"
}

namespace
{

constexpr size_t kObjSize = 64; // one connection record = one cache line
constexpr size_t kChunkObjs = 16384;
constexpr size_t kChurnLive = 1000000;

void BM_SlabAllocFree(benchmark::State &state)
{
    rb__slab s;
    if (rb__slab_init(&s, kObjSize, kChunkObjs, 0) != 0) {
        state.SkipWithError("rb__slab_init");
        return;
    }
    for (auto _ : state) {
        void *p = rb__slab_alloc(&s);
        benchmark::DoNotOptimize(p);
        rb__slab_free(&s, p);
    }
    state.SetItemsProcessed(state.iterations());
    rb__slab_destroy(&s);
}
BENCHMARK(BM_SlabAllocFree);

void BM_MallocFree(benchmark::State &state)
{
    for (auto _ : state) {
        void *p = std::malloc(kObjSize);
        benchmark::DoNotOptimize(p);
        std::free(p);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MallocFree);

// A burst of N accepts followed by N closes (a reconnect storm), per iteration.
void BM_SlabBurst(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<void *> objs(n);
    rb__slab s;
    if (rb__slab_init(&s, kObjSize, kChunkObjs, 0) != 0) {
        state.SkipWithError("rb__slab_init");
        return;
    }
    for (auto _ : state) {
        for (size_t i = 0; i < n; i++)
            objs[i] = rb__slab_alloc(&s);
        benchmark::ClobberMemory();
        for (size_t i = 0; i < n; i++)
            rb__slab_free(&s, objs[i]);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
    rb__slab_destroy(&s);
}
BENCHMARK(BM_SlabBurst)->Arg(1000)->Arg(100000);

void BM_MallocBurst(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<void *> objs(n);
    for (auto _ : state) {
        for (size_t i = 0; i < n; i++)
            objs[i] = std::malloc(kObjSize);
        benchmark::ClobberMemory();
        for (size_t i = 0; i < n; i++)
            std::free(objs[i]);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
}
BENCHMARK(BM_MallocBurst)->Arg(1000)->Arg(100000);

// 1M live objects; each step releases a random one and allocates its replacement, touching it as
// the engine would (a new connection record is written at once). Random victims defeat the
// allocators' LIFO caches, so this measures the steady state of a big server.
std::vector<uint32_t> victims()
{
    std::mt19937 rng(42);
    std::vector<uint32_t> v(1 << 20);
    for (auto &x : v)
        x = rng() % kChurnLive;
    return v;
}

void BM_SlabChurn1M(benchmark::State &state)
{
    static const std::vector<uint32_t> vic = victims();
    std::vector<void *> live(kChurnLive);
    rb__slab s;
    if (rb__slab_init(&s, kObjSize, kChunkObjs, 0) != 0) {
        state.SkipWithError("rb__slab_init");
        return;
    }
    for (auto &p : live) {
        p = rb__slab_alloc(&s);
        static_cast<uint64_t *>(p)[1] = 1;
    }
    size_t k = 0;
    for (auto _ : state) {
        uint32_t i = vic[k++ & (vic.size() - 1)];
        rb__slab_free(&s, live[i]);
        void *p = rb__slab_alloc(&s);
        static_cast<uint64_t *>(p)[1] = k;
        live[i] = p;
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["chunk_MiB"] = static_cast<double>(rb__slab_bytes(&s)) / (1 << 20);
    rb__slab_destroy(&s);
}
BENCHMARK(BM_SlabChurn1M);

void BM_MallocChurn1M(benchmark::State &state)
{
    static const std::vector<uint32_t> vic = victims();
    std::vector<void *> live(kChurnLive);
    for (auto &p : live) {
        p = std::malloc(kObjSize);
        static_cast<uint64_t *>(p)[1] = 1;
    }
    size_t k = 0;
    for (auto _ : state) {
        uint32_t i = vic[k++ & (vic.size() - 1)];
        std::free(live[i]);
        void *p = std::malloc(kObjSize);
        static_cast<uint64_t *>(p)[1] = k;
        live[i] = p;
    }
    state.SetItemsProcessed(state.iterations());
    for (auto p : live)
        std::free(p);
}
BENCHMARK(BM_MallocChurn1M);

// Filling a new slab to 1M objects: chunk growth and first-touch page faults included (cold).
void BM_SlabFill1M(benchmark::State &state)
{
    std::vector<void *> live(kChurnLive);
    for (auto _ : state) {
        rb__slab s;
        rb__slab_init(&s, kObjSize, kChunkObjs, 0);
        for (auto &p : live) {
            p = rb__slab_alloc(&s);
            static_cast<uint64_t *>(p)[0] = 0;
        }
        state.PauseTiming();
        rb__slab_destroy(&s);
        state.ResumeTiming();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChurnLive));
}
BENCHMARK(BM_SlabFill1M)->Unit(benchmark::kMillisecond);

// Refilling to 1M objects after all were freed: chunks and pages already held (warm).
void BM_SlabRefill1M(benchmark::State &state)
{
    std::vector<void *> live(kChurnLive);
    rb__slab s;
    rb__slab_init(&s, kObjSize, kChunkObjs, 0);
    for (auto &p : live)
        p = rb__slab_alloc(&s);
    for (auto p : live)
        rb__slab_free(&s, p);
    for (auto _ : state) {
        for (auto &p : live) {
            p = rb__slab_alloc(&s);
            static_cast<uint64_t *>(p)[0] = 0;
        }
        state.PauseTiming();
        for (auto p : live)
            rb__slab_free(&s, p);
        state.ResumeTiming();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChurnLive));
    rb__slab_destroy(&s);
}
BENCHMARK(BM_SlabRefill1M)->Unit(benchmark::kMillisecond);

void BM_MallocFill1M(benchmark::State &state)
{
    std::vector<void *> live(kChurnLive);
    for (auto _ : state) {
        for (auto &p : live) {
            p = std::malloc(kObjSize);
            static_cast<uint64_t *>(p)[0] = 0;
        }
        state.PauseTiming();
        for (auto p : live)
            std::free(p);
        state.ResumeTiming();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChurnLive));
}
BENCHMARK(BM_MallocFill1M)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
