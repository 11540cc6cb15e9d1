/* bench_codec.cc — frame decoding throughput of the v1 codec over a buffer of mixed frames. */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "proto.h"
}

namespace
{

constexpr uint32_t kMaxFrame = 4096;

// data_pct of the frames are DATA of 0..max_data bytes; the rest PING and PONG in equal parts.
std::vector<uint8_t> make_stream(size_t frames, unsigned data_pct, unsigned max_data)
{
    std::mt19937_64 rng(7);
    std::vector<uint8_t> buf;
    std::vector<uint8_t> payload(kMaxFrame, 0x5A);
    uint8_t tmp[RB_FRAME_HEADER_LEN + kMaxFrame];
    for (size_t i = 0; i < frames; i++) {
        size_t n;
        unsigned r = static_cast<unsigned>(rng() % 100);
        if (r < data_pct)
            n = rb__put_data(tmp, payload.data(), static_cast<uint16_t>(rng() % (max_data + 1)));
        else
            n = rb__put_ping(tmp, r % 2 ? RB_FRAME_PING : RB_FRAME_PONG, rng());
        buf.insert(buf.end(), tmp, tmp + n);
    }
    return buf;
}

// The engine's per-frame work on a contiguous buffer: check the header, read the fields.
void BM_DecodeMixed(benchmark::State &state)
{
    const size_t frames = 100000;
    const auto buf = make_stream(frames, static_cast<unsigned>(state.range(0)),
                                 static_cast<unsigned>(state.range(1)));
    for (auto _ : state) {
        size_t off = 0, n = 0;
        uint64_t sum = 0;
        while (buf.size() - off >= RB_FRAME_HEADER_LEN) {
            rb__frame_hdr h;
            if (rb__frame_check(&buf[off], kMaxFrame, &h) != 0) {
                state.SkipWithError("rb__frame_check refused a valid frame");
                return;
            }
            const uint8_t *p = &buf[off + RB_FRAME_HEADER_LEN];
            if (h.type == RB_FRAME_PING || h.type == RB_FRAME_PONG)
                sum += rb__get_u64(p);
            else
                sum += h.len;
            off += RB_FRAME_HEADER_LEN + h.len;
            n++;
        }
        benchmark::DoNotOptimize(sum);
        if (n != frames) {
            state.SkipWithError("frame count");
            return;
        }
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(frames));
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(buf.size()));
}
// args: DATA percentage, largest DATA payload
BENCHMARK(BM_DecodeMixed)->Args({0, 0})->Args({10, 64})->Args({50, 256});

void BM_EncodePing(benchmark::State &state)
{
    uint8_t out[16];
    uint64_t token = 0;
    for (auto _ : state) {
        size_t n = rb__put_ping(out, RB_FRAME_PING, token++);
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodePing);

void BM_HelloParse(benchmark::State &state)
{
    rb__hello in{};
    in.version = 1;
    in.mode = RB_MODE_CLIENT;
    in.interval_ms = 1000;
    in.timeout_ms = 3000;
    in.client_id = reinterpret_cast<const uint8_t *>("load-generator-0001");
    in.client_id_len = 19;
    uint8_t frame[RB_FRAME_HEADER_LEN + RB__HELLO_MAX];
    size_t n = rb__put_hello(frame, &in);
    for (auto _ : state) {
        rb__hello out;
        int rc = rb__hello_parse(frame + RB_FRAME_HEADER_LEN, n - RB_FRAME_HEADER_LEN, &out);
        benchmark::DoNotOptimize(rc);
        benchmark::DoNotOptimize(out);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HelloParse);

// The longest CLOSE reason, mostly multi-byte characters: the UTF-8 check's worst case.
void BM_CloseParseUtf8(benchmark::State &state)
{
    std::string reason;
    while (reason.size() + 3 <= RB__CLOSE_REASON_MAX)
        reason += "\xE2\x82\xAC";
    uint8_t frame[RB__CONTROL_MAX];
    size_t n = rb__put_close(frame, 1, reason.c_str());
    for (auto _ : state) {
        uint16_t code;
        const uint8_t *r;
        size_t rlen;
        int rc =
            rb__close_parse(frame + RB_FRAME_HEADER_LEN, n - RB_FRAME_HEADER_LEN, &code, &r, &rlen);
        benchmark::DoNotOptimize(rc);
        benchmark::DoNotOptimize(rlen);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n - RB_FRAME_HEADER_LEN));
}
BENCHMARK(BM_CloseParseUtf8);

} // namespace

BENCHMARK_MAIN();
