/* fuzz_ws_http.c — libFuzzer target: the engine's own HTTP upgrade parser, fed in pieces. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input layout: byte 0 picks the configuration (bit 0: --ws-path /hb, bit 1: two --ws-origin);
 * byte 1 the length (1..8) of a schedule of chunk sizes; the rest is what a client sends. The
 * bytes are gathered the way codec_ws.c gathers them (the end of the head searched from where
 * the last piece ended, at most RB__WS_HEAD_MAX + 1 bytes kept) and must find the same end as
 * one search of the whole. The head is then parsed (rb__ws_request_parse); an accepted one must
 * hold what the rules promise, and the 101 written for it must parse back (rb__ws_reply_parse,
 * the load generator's side) to the same values. Every refusal's answer must be a well-formed
 * response with its status. The reply parser also gets the raw input.
 */

static size_t chunk_size(uint8_t b)
{
    if (b < 0xF0)
        return (size_t)(b % 64) + 1;
    return (size_t)(b - 0xEF) * 700;
}

static void check_refusal(enum rb__ws_refusal why)
{
    uint8_t out[RB__WS_ERROR_MAX];
    size_t n = rb__ws_put_refusal(out, why);
    FUZZ_CHECK(n > 0 && n <= sizeof(out));
    size_t end = rb__http_head_end(out, n, 0);
    FUZZ_CHECK(end > 0 && end < n);
    int status;
    struct rb__ws_reply reply;
    FUZZ_CHECK(rb__ws_reply_parse(out, end, "x", &status, &reply) == -EPROTO);
    FUZZ_CHECK(status == rb__ws_refusal_status(why));
}

static void check_accepted(const uint8_t *head, size_t len, const struct rb__ws_request *rq)
{
    FUZZ_CHECK(rq->path >= head && rq->path + rq->path_len <= head + len && rq->path[0] == '/');
    FUZZ_CHECK(!rq->query || (rq->query >= head && rq->query + rq->query_len <= head + len));
    FUZZ_CHECK(strlen(rq->accept) == RB__WS_ACCEPT_LEN);
    const struct rb__open_params *op = &rq->params;
    FUZZ_CHECK(op->client_id_len <= RB_CLIENT_ID_MAX);
    FUZZ_CHECK(!op->has_mode || op->mode <= RB_MODE_KERNEL);
    struct rb__welcome_info wi = {.mode = op->has_mode ? op->mode : RB_MODE_SERVER,
                                  .interval_ms = op->interval_ms,
                                  .timeout_ms = op->timeout_ms,
                                  .conn_id = 0x123456789abcdefULL};
    uint8_t out[RB__WS_101_MAX];
    size_t n = rb__ws_put_101(out, rq->accept, &wi);
    FUZZ_CHECK(n > 0 && rb__http_head_end(out, n, 0) == n);
    int status;
    struct rb__ws_reply reply;
    FUZZ_CHECK(rb__ws_reply_parse(out, n, rq->accept, &status, &reply) == 0 && status == 101);
    FUZZ_CHECK(reply.interval_ms == wi.interval_ms && reply.timeout_ms == wi.timeout_ms);
    FUZZ_CHECK(reply.conn_id == wi.conn_id && reply.mode == (int)wi.mode);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct rb_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    if (data[0] & 1)
        cfg.ws_path = "/hb";
    if (data[0] & 2) {
        cfg.ws_origin[0] = "https://a.example";
        cfg.ws_origin[1] = "http://b.example:8080";
        cfg.ws_origin_count = 2;
    }
    size_t nsched = (size_t)(data[1] & 7) + 1;
    if (size < 2 + nsched)
        return 0;
    const uint8_t *sched = data + 2, *in = data + 2 + nsched;
    size_t len = size - 2 - nsched;

    size_t whole_end = rb__http_head_end(in, len, 0);
    /* Gathered as codec_ws.c gathers a head that comes in pieces. */
    uint8_t *buf = malloc(RB__WS_HEAD_MAX + 1);
    FUZZ_CHECK(buf != NULL);
    size_t have = 0, end = 0, off = 0;
    for (size_t i = 0; off < len && !end && have <= RB__WS_HEAD_MAX; i++) {
        size_t n = chunk_size(sched[i % nsched]);
        if (n > len - off)
            n = len - off;
        if (n > RB__WS_HEAD_MAX + 1 - have)
            n = RB__WS_HEAD_MAX + 1 - have;
        memcpy(buf + have, in + off, n);
        size_t from = have;
        have += n;
        off += n;
        end = rb__http_head_end(buf, have, from);
    }
    if (whole_end && whole_end <= RB__WS_HEAD_MAX + 1)
        FUZZ_CHECK(end == whole_end);
    else
        FUZZ_CHECK(end == 0);

    if (end) {
        /* The parser gets the head in a buffer of exactly its size: ASan sees any overread. */
        uint8_t *head = malloc(end);
        FUZZ_CHECK(head != NULL);
        memcpy(head, buf, end);
        struct rb__ws_request rq;
        enum rb__ws_refusal why = rb__ws_request_parse(head, end, &cfg, &rq);
        FUZZ_CHECK(why < RB__WS_REFUSAL_COUNT);
        if (end > RB__WS_HEAD_MAX)
            FUZZ_CHECK(why == RB__WS_TOO_LARGE);
        if (why == RB__WS_OK)
            check_accepted(head, end, &rq);
        else
            check_refusal(why);
        int status;
        struct rb__ws_reply reply;
        (void)rb__ws_reply_parse(head, end, rq.accept, &status, &reply);
        free(head);
    }
    free(buf);
    return 0;
}
