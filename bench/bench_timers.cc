/* bench_timers.cc — timer wheel vs binary heap: add, cancel, heartbeat reschedule, expiry cost. */
#include <benchmark/benchmark.h>

#include <algorithm>
#include <ctime>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include <sys/mman.h>

extern "C" {
#include "heap.h"
#include "wheel.h"
}

namespace
{

// 1 ms ticks; heartbeat deadlines spread over 30 s, as for a 30 s timeout.
constexpr uint32_t kSpanTicks = 30000;
// Timed batch size for operations that need untimed work between batches: large enough to
// hide the ~1 us cost of reading the thread CPU clock, small next to 1000 live timers.
size_t batch_for(size_t live)
{
    return live >= 100000 ? 4096 : 256;
}

// Each timer lives in a cache-line-sized stand-in for a connection, as in the engine.
struct alignas(64) WheelConn {
    rb__timer timer;
    uint64_t id;
};
struct alignas(64) HeapConn {
    rb__heap_timer timer;
    uint64_t id;
};

class WheelImpl
{
  public:
    using Conn = WheelConn;
    explicit WheelImpl(uint32_t now) : w_(new rb__wheel)
    {
        rb__wheel_init(w_.get(), now);
    }
    static void init(Conn *c)
    {
        rb__timer_init(&c->timer);
    }
    void add(Conn *c, uint32_t expires)
    {
        rb__wheel_add(w_.get(), &c->timer, expires);
    }
    void del(Conn *c)
    {
        rb__wheel_del(w_.get(), &c->timer);
    }
    void update(uint32_t now)
    {
        rb__wheel_update(w_.get(), now);
    }
    // Pops one expired timer; the wheel's get needs no `now`, update already moved them.
    bool get()
    {
        return rb__wheel_get(w_.get()) != nullptr;
    }
    uint64_t relinked() const
    {
        return w_->relinked;
    }

  private:
    std::unique_ptr<rb__wheel> w_;
};

class HeapImpl
{
  public:
    using Conn = HeapConn;
    explicit HeapImpl(uint32_t now) : now_(now)
    {
        if (rb__heap_init(&h_, 1024) != 0)
            std::abort();
    }
    ~HeapImpl()
    {
        rb__heap_free(&h_);
    }
    HeapImpl(const HeapImpl &) = delete;
    HeapImpl &operator=(const HeapImpl &) = delete;
    static void init(Conn *c)
    {
        rb__heap_timer_init(&c->timer);
    }
    void add(Conn *c, uint32_t expires)
    {
        if (rb__heap_add(&h_, &c->timer, expires) != 0)
            std::abort();
    }
    void del(Conn *c)
    {
        rb__heap_del(&h_, &c->timer);
    }
    void update(uint32_t now)
    {
        now_ = now;
    }
    bool get()
    {
        return rb__heap_pop_expired(&h_, now_) != nullptr;
    }
    uint64_t relinked() const
    {
        return 0;
    }

  private:
    rb__heap h_;
    uint32_t now_;
};

// Connection storage. RB_BENCH_HUGEPAGES=1 asks for transparent huge pages: at 1M timers most
// of the cost is cache and TLB misses, and huge pages remove most of the TLB part.
template <class Conn> class ConnArray
{
  public:
    explicit ConnArray(size_t n) : n_(n), bytes_(n * sizeof(Conn))
    {
        void *p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            std::abort();
        const char *huge = std::getenv("RB_BENCH_HUGEPAGES");
        if (huge && huge[0] == '1')
            madvise(p, bytes_, MADV_HUGEPAGE);
        c_ = static_cast<Conn *>(p);
    }
    ~ConnArray()
    {
        munmap(c_, bytes_);
    }
    ConnArray(const ConnArray &) = delete;
    ConnArray &operator=(const ConnArray &) = delete;
    Conn &operator[](size_t i)
    {
        return c_[i];
    }
    size_t size() const
    {
        return n_;
    }

  private:
    size_t n_, bytes_;
    Conn *c_;
};

// N live timers with deadlines uniform over (now + lo, now + hi], in a random memory order
// (which connection is heard from next has nothing to do with where it sits in memory).
template <class Impl> struct Population {
    using Conn = typename Impl::Conn;
    uint32_t now = 1000;
    Impl impl{now};
    ConnArray<Conn> conns;
    std::vector<Conn *> live;
    std::vector<Conn *> spares;
    std::mt19937_64 rng{12345};

    Population(size_t n, size_t spare, uint32_t lo, uint32_t hi) : conns(n + spare)
    {
        std::vector<Conn *> order;
        for (size_t i = 0; i < conns.size(); i++) {
            Impl::init(&conns[i]);
            conns[i].id = i;
            order.push_back(&conns[i]);
        }
        std::shuffle(order.begin(), order.end(), rng);
        live.assign(order.begin(), order.begin() + (ptrdiff_t)n);
        for (Conn *c : live)
            impl.add(c, now + lo + 1 + (uint32_t)(rng() % (hi - lo)));
        spares.assign(order.begin() + (ptrdiff_t)n, order.end());
    }
};

// The engine re-arms or cancels a timer right after handling that connection's I/O, so its
// struct is already cached: the warm variants read each connection first, untimed.
template <class Conn> uint64_t touch(Conn *const *c, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c[i]->id;
    return sum;
}

// Batches are timed in thread CPU time: this machine is shared, and wall time would charge us
// for other processes' time slices. The clock's own cost is measured once and subtracted.
double thread_seconds()
{
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double clock_overhead()
{
    static const double overhead = [] {
        double best = 1.0;
        for (int i = 0; i < 200; i++) {
            double t0 = thread_seconds();
            best = std::min(best, thread_seconds() - t0);
        }
        return best;
    }();
    return overhead;
}

double seconds_since(double t0)
{
    return std::max(0.0, thread_seconds() - t0 - clock_overhead());
}

// Reports items and the (manual) time per item as counter `per_op`, in seconds (e.g. 12.3n).
void report_per_op(benchmark::State &state, uint64_t items)
{
    state.SetItemsProcessed((int64_t)items);
    state.counters["per_op"] = benchmark::Counter((double)items, benchmark::Counter::kIsRate |
                                                                     benchmark::Counter::kInvert);
}

// Adding a timer to a structure holding N: timed batch of adds on idle connections, then an
// untimed swap of as many random live ones back to idle, so added connections are cold.
template <class Impl> void BM_Add(benchmark::State &state)
{
    const size_t n = (size_t)state.range(0);
    const size_t batch = batch_for(n);
    Population<Impl> p(n, batch, 0, kSpanTicks);
    std::vector<uint32_t> deadlines(batch);
    for (auto _ : state) {
        for (auto &d : deadlines)
            d = p.now + 1 + (uint32_t)(p.rng() % kSpanTicks);
        double t0 = thread_seconds();
        for (size_t j = 0; j < batch; j++)
            p.impl.add(p.spares[j], deadlines[j]);
        state.SetIterationTime(seconds_since(t0));
        for (size_t j = 0; j < batch; j++) {
            size_t k = (size_t)(p.rng() % n);
            p.impl.del(p.live[k]);
            std::swap(p.live[k], p.spares[j]);
        }
    }
    report_per_op(state, state.iterations() * batch);
}

// Cancelling a random live timer out of N; untimed re-add keeps N live.
template <class Impl, bool kWarm> void BM_Cancel(benchmark::State &state)
{
    const size_t n = (size_t)state.range(0);
    const size_t batch = batch_for(n);
    Population<Impl> p(n, 0, 0, kSpanTicks);
    std::vector<typename Impl::Conn *> victims(batch);
    for (auto _ : state) {
        for (auto &v : victims)
            v = p.live[p.rng() % n];
        if (kWarm)
            benchmark::DoNotOptimize(touch(victims.data(), batch));
        double t0 = thread_seconds();
        for (auto *v : victims)
            p.impl.del(v);
        state.SetIterationTime(seconds_since(t0));
        for (auto *v : victims)
            p.impl.add(v, p.now + 1 + (uint32_t)(p.rng() % kSpanTicks));
    }
    report_per_op(state, state.iterations() * batch);
}

// Heartbeat: a random live connection is heard from, its deadline moves to now + span (a del +
// add on the wheel, a key change in place on the heap). Each connection is heard from once per
// span/3 of simulated time, so none expires; time advances untimed between batches (the wheel's
// cascades during that advance are reported as relinks per reschedule).
template <class Impl, bool kWarm> void BM_Reschedule(benchmark::State &state)
{
    const size_t n = (size_t)state.range(0);
    const size_t batch = batch_for(n);
    Population<Impl> p(n, 0, kSpanTicks / 2, kSpanTicks);
    const uint32_t start = p.now;
    // A random order, repeated; the copied head lets a batch run over the end of a round.
    std::vector<typename Impl::Conn *> order(p.live);
    std::shuffle(order.begin(), order.end(), p.rng);
    for (size_t i = 0; i < batch; i++)
        order.push_back(order[i % n]);
    uint64_t ops = 0, expired = 0;
    size_t pos = 0;
    const uint64_t relinked0 = p.impl.relinked();
    for (auto _ : state) {
        auto *conns = &order[pos];
        pos = (pos + batch) % n;
        if (kWarm)
            benchmark::DoNotOptimize(touch(conns, batch));
        double t0 = thread_seconds();
        for (size_t j = 0; j < batch; j++)
            p.impl.add(conns[j], p.now + kSpanTicks);
        state.SetIterationTime(seconds_since(t0));
        ops += batch;
        p.now = start + (uint32_t)(ops * (kSpanTicks / 3) / n);
        p.impl.update(p.now);
        while (p.impl.get())
            expired++;
    }
    report_per_op(state, ops);
    state.counters["expired"] = (double)expired;
    state.counters["relinks_per_op"] = (double)(p.impl.relinked() - relinked0) / (double)ops;
}

// Expiry: N timers spread over the span; time advances one tick per update, as the engine's
// loop does, until all have been handed out. Cost per expired timer, including empty ticks and
// cascades; filling is untimed. At N = 1000 that is 30 mostly empty updates per timer, so the
// figure there measures the cost of an idle tick more than that of an expiry.
template <class Impl> void BM_Expiry(benchmark::State &state)
{
    const size_t n = (size_t)state.range(0);
    uint64_t relinks = 0, expired_total = 0;
    for (auto _ : state) {
        auto p = std::make_unique<Population<Impl>>(n, 0, 0, kSpanTicks);
        uint64_t relinked0 = p->impl.relinked();
        double t0 = thread_seconds();
        size_t expired = 0;
        for (uint32_t k = 1; k <= kSpanTicks; k++) {
            p->impl.update(p->now + k);
            while (p->impl.get())
                expired++;
        }
        state.SetIterationTime(seconds_since(t0));
        if (expired != n)
            state.SkipWithError("not every timer expired");
        relinks += p->impl.relinked() - relinked0;
        expired_total += expired;
    }
    report_per_op(state, expired_total);
    state.counters["relinks_per_timer"] =
        (double)relinks / (double)std::max<uint64_t>(1, expired_total);
}

// Args: live timers. Manual time excludes the untimed bookkeeping between batches.
#define RB_TIMER_BENCH(...)                                                                        \
    BENCHMARK_TEMPLATE(__VA_ARGS__)->Arg(1000)->Arg(1000000)->UseManualTime()

RB_TIMER_BENCH(BM_Add, WheelImpl);
RB_TIMER_BENCH(BM_Add, HeapImpl);
RB_TIMER_BENCH(BM_Cancel, WheelImpl, false);
RB_TIMER_BENCH(BM_Cancel, HeapImpl, false);
RB_TIMER_BENCH(BM_Cancel, WheelImpl, true);
RB_TIMER_BENCH(BM_Cancel, HeapImpl, true);
RB_TIMER_BENCH(BM_Reschedule, WheelImpl, false);
RB_TIMER_BENCH(BM_Reschedule, HeapImpl, false);
RB_TIMER_BENCH(BM_Reschedule, WheelImpl, true);
RB_TIMER_BENCH(BM_Reschedule, HeapImpl, true);
RB_TIMER_BENCH(BM_Expiry, WheelImpl);
RB_TIMER_BENCH(BM_Expiry, HeapImpl);

} // namespace

BENCHMARK_MAIN();
