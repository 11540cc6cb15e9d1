/* ws.h — WebSocket (RFC 6455) grammar: the frame decoder and encoders, the HTTP upgrade. */
#ifndef RB_WS_H
#define RB_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/*
 * Why not libwslay (Debian libwslay-dev 1.1.1)? Its event API keeps a heap context per
 * connection (wslay_event_context_server_init: several hundred bytes plus its queues) and owns the
 * reassembly buffers, so an idle connection would cost that context on top of the 64-byte record;
 * its frame API (wslay_frame_*) also needs a context per connection and calls back for I/O. The
 * issue's memory goal is that an idle WebSocket connection costs exactly what a v1 one costs, so
 * the decoder below keeps nothing at all between frames and allocates only while a frame or a
 * message is split. The grammar is small (RFC 6455 section 5); the fuzz targets
 * (tests/fuzz/fuzz_ws_frame.c, fuzz_ws_http.c) feed this code at every split point.
 */

#define RB__WS_OP_CONT   0x0
#define RB__WS_OP_TEXT   0x1
#define RB__WS_OP_BINARY 0x2
#define RB__WS_OP_CLOSE  0x8
#define RB__WS_OP_PING   0x9
#define RB__WS_OP_PONG   0xA

#define RB__WS_CONTROL_MAX 125  /* payload of a control frame */
#define RB__WS_HDR_MAX     14   /* 2 + 8 (64-bit length) + 4 (mask) */
#define RB__WS_HEAD_MAX    8192 /* a request head longer than this gets 431 */
#define RB__WS_ACCEPT_LEN  28   /* base64 of a SHA-1 digest */
#define RB__WS_KEY_LEN     24   /* base64 of 16 bytes */

/* WebSocket close codes (RFC 6455 section 7.4.1) the engine sends or reads. */
#define RB__WS_CLOSE_NORMAL      1000
#define RB__WS_CLOSE_GOING_AWAY  1001
#define RB__WS_CLOSE_PROTOCOL    1002
#define RB__WS_CLOSE_NO_STATUS   1005 /* never on the wire: a Close without a code */
#define RB__WS_CLOSE_BAD_PAYLOAD 1007
#define RB__WS_CLOSE_TOO_BIG     1009
#define RB__WS_CLOSE_TRY_LATER   1013
#define RB__WS_CLOSE_APP_BASE    4000 /* ringbeat reason N without a standard code: 4000 + N */

/* ---- frames (ws_frame.c) ---- */

struct rb__ws_hdr {
    uint32_t len; /* payload bytes */
    uint8_t fin, opcode, masked;
    uint8_t hdr_len;
    uint8_t mask[4];
};

/*
 * Parses the header at p (n bytes there). from_client: frames must be masked (we are the server)
 * or must not be. max_data bounds a data frame's payload (control frames have their own 125).
 * Returns the header's length once it is complete, 0 while more bytes are needed, -EPROTO for
 * what RFC 6455 forbids (reserved bits, unknown opcode, a wrong mask bit, a control frame over
 * 125 bytes or fragmented, a 64-bit length with its top bit set, a length not in its shortest
 * form) or -EMSGSIZE for a data payload over max_data. Checks are made in byte order, so a
 * header cut anywhere is refused at the same byte as the whole one.
 */
int rb__ws_hdr_parse(const uint8_t *p, size_t n, bool from_client, uint32_t max_data,
                     struct rb__ws_hdr *h);
/* XORs n bytes with the mask key, starting at byte `offset` of the payload. */
void rb__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint32_t offset);
/* A whole frame at out: header (masked with `mask` when it is not NULL: a client's frame), then
 * the payload (masked likewise). Returns its length: len + 2..14 bytes. */
size_t rb__ws_put_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t len,
                        const uint8_t *mask);
/* A Close frame: code 0 sends an empty payload; the reason is cut to fit 123 bytes. */
size_t rb__ws_put_close(uint8_t *out, uint16_t code, const char *reason, const uint8_t *mask);
/* Codes an endpoint may put on the wire (1000-1003, 1007-1014, 3000-4999). */
bool rb__ws_close_code_valid(uint16_t code);
/* A Close payload: 0 with the code (1005 when it has none), -EPROTO (a 1-byte payload or a code
 * that may not be sent), -EILSEQ (the reason is not UTF-8). */
int rb__ws_close_parse(const uint8_t *p, size_t len, uint16_t *code, const uint8_t **reason,
                       size_t *reason_len);

/*
 * The stream decoder, shared by the engine, the load generator and the fuzz targets. Frames whole
 * inside the input are unmasked and handed out in place (the input is writable for that). Between
 * frames the decoder keeps nothing. A split header, a split frame or a fragmented message wait in
 * an rb__ws_split that the caller's slot holds (allocated here on first need, freed here as soon
 * as nothing is pending); a message's buffer grows only to what has arrived, at most max_message.
 */
struct rb__ws_split;
struct rb__ws_rx {
    bool from_client;
    uint32_t max_message; /* data bytes of one message, its fragments summed */
    /* The caller's slot; with create, the caller makes it exist (NULL: no memory). */
    struct rb__ws_split **(*slot)(void *ctx, bool create);
    /*
     * One complete frame: opcode CONT for a data frame that does not end its message (payload
     * NULL, len its size), TEXT or BINARY with the whole message (text is valid UTF-8), or CLOSE,
     * PING or PONG with the control payload. Anything but 0 stops the decoder at once (it then
     * touches nothing: the caller may have freed the split) and is returned.
     */
    int (*frame)(void *ctx, uint8_t opcode, const uint8_t *payload, uint32_t len);
    void *ctx;
};
/* 0 when all n bytes were taken; what frame() returned; -EPROTO (1002), -EMSGSIZE (1009),
 * -EILSEQ (1007: text that is not UTF-8, judged as the bytes arrive), -ENOMEM. */
int rb__ws_feed(const struct rb__ws_rx *rx, uint8_t *p, size_t n);
/* Bytes held for a split frame or message (0: nothing pending). */
size_t rb__ws_pending(const struct rb__ws_split *s);
void rb__ws_split_free(struct rb__ws_split *s);

/* ---- the HTTP upgrade (ws_http.c) ---- */

/* Where a request or response head ends (just past its empty line) in p[0..n); `from` bytes
 * were searched before (a head arriving in pieces is scanned once). 0: not complete yet. */
size_t rb__http_head_end(const uint8_t *p, size_t n, size_t from);

/* Why an upgrade is refused; the index is what the codec keeps in its record bytes. */
enum rb__ws_refusal {
    RB__WS_OK = 0,
    RB__WS_MALFORMED,     /* 400: not an HTTP/1.1 request head */
    RB__WS_METHOD,        /* 400: not GET */
    RB__WS_HTTP_VERSION,  /* 400: before HTTP/1.1 */
    RB__WS_HOST,          /* 400: no Host, or two */
    RB__WS_PATH,          /* 404: not --ws-path */
    RB__WS_UPGRADE,       /* 426: no Upgrade: websocket */
    RB__WS_CONNECTION,    /* 400: no Connection: upgrade */
    RB__WS_VERSION,       /* 426: Sec-WebSocket-Version is not 13 */
    RB__WS_KEY,           /* 400: Sec-WebSocket-Key does not decode to 16 bytes */
    RB__WS_ORIGIN,        /* 403: Origin not in --ws-origin */
    RB__WS_QUERY,         /* 400: a query parameter that does not parse */
    RB__WS_UNHONOURABLE,  /* 400: parameters the clamps cannot honour (timeout <= interval) */
    RB__WS_TOO_LARGE,     /* 431: a request head over 8 KiB */
    RB__WS_UNAUTHORIZED,  /* 401: no valid ?token= for the id (--auth-secret-file) */
    RB__WS_REFUSAL_COUNT, /* (unused: the count) */
};
uint16_t rb__ws_refusal_status(enum rb__ws_refusal r);
const char *rb__ws_refusal_text(enum rb__ws_refusal r);

#define RB__WS_TOKEN_MAX 255 /* as in a v1 HELLO */
struct rb__ws_request {
    const uint8_t *path, *query; /* the request target, split at '?' (query may be NULL) */
    size_t path_len, query_len;
    char accept[RB__WS_ACCEPT_LEN + 1]; /* Sec-WebSocket-Accept for the 101 */
    struct rb__open_params params;      /* from the query; client_id points into id */
    uint8_t id[RB_CLIENT_ID_MAX];       /* the percent-decoded id */
    uint8_t token[RB__WS_TOKEN_MAX];    /* the percent-decoded token (rb__sess_authorize) */
};
/*
 * Parses a complete request head (rb__http_head_end) and checks it against the WebSocket rules
 * and the configuration (ws_path, ws_origin): RB__WS_OK and *rq filled, or why it is refused.
 */
enum rb__ws_refusal rb__ws_request_parse(const uint8_t *head, size_t len,
                                         const struct rb_config *cfg, struct rb__ws_request *rq);
/* The Sec-WebSocket-Accept of a key (SHA-1 and base64 from libcrypto): 0, or -EINVAL when the key
 * does not decode to 16 bytes. */
int rb__ws_accept(const uint8_t *key, size_t key_len, char out[RB__WS_ACCEPT_LEN + 1]);

/* The 101 response with the effective values; returns its length (at most RB__WS_101_MAX). */
#define RB__WS_101_MAX 320
size_t rb__ws_put_101(uint8_t *out, const char *accept, const struct rb__welcome_info *wi);
/* A refusal: status line, Connection: close, the headers its status needs (426:
 * Sec-WebSocket-Version, 503: Retry-After), and a one-line text body. At most RB__WS_ERROR_MAX. */
#define RB__WS_ERROR_MAX 256
size_t rb__ws_put_refusal(uint8_t *out, enum rb__ws_refusal r);
size_t rb__ws_put_unavailable(uint8_t *out, unsigned retry_after_s);

/* The client's side (the load generator): a request, and the parse of the 101 it gets. */
size_t rb__ws_put_request(uint8_t *out, size_t cap, const char *host, const char *target,
                          const char key[RB__WS_KEY_LEN + 1]);
struct rb__ws_reply {
    uint32_t interval_ms, timeout_ms; /* 0 when the header is absent */
    uint64_t conn_id;
    int mode; /* enum rb_mode, -1 when absent */
};
/* 0 for a 101 whose Sec-WebSocket-Accept matches `accept`; -EPROTO otherwise (*status holds the
 * response's status code when there was one). */
int rb__ws_reply_parse(const uint8_t *head, size_t len, const char *accept, int *status,
                       struct rb__ws_reply *out);

#endif
