/* proto.h — wire protocol v1 codec: header checks, payload parsers and frame encoders. */
#ifndef RB_PROTO_H
#define RB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringbeat.h"

#define RB__PING_LEN        8
#define RB__TUNE_LEN        8
#define RB__HELLO_MIN       12
#define RB__HELLO_PLAIN_MAX (RB__HELLO_MIN + RB_CLIENT_ID_MAX)
#define RB__HELLO_TOKEN_MAX 255 /* bytes of a token on the wire (RB_TOKEN_MAX is ours) */
/* With a token: the fixed part, u8 id length, the id, the token. */
#define RB__HELLO_MAX        (RB__HELLO_MIN + 1 + RB_CLIENT_ID_MAX + RB__HELLO_TOKEN_MAX)
#define RB__HELLO_F_TOKEN    0x0001 /* HELLO flags (the former reserved u16): a token follows */
#define RB__WELCOME_LEN      20
#define RB__CLOSE_MIN        2
#define RB__CLOSE_REASON_MAX 123
/* Largest control frame on the wire (a CLOSE with the longest reason). */
#define RB__CONTROL_MAX (RB_FRAME_HEADER_LEN + RB__CLOSE_MIN + RB__CLOSE_REASON_MAX)

struct rb__frame_hdr {
    uint8_t type;
    uint8_t flags; /* 0 in v1; unknown bits are ignored */
    uint16_t len;  /* payload bytes */
};

/*
 * Validates a 4-byte header before its payload arrives, so an oversized or malformed frame is
 * refused at once: -EPROTO (unknown type, a length the type cannot have) -> CLOSE(3);
 * -EMSGSIZE (DATA longer than max_frame) -> CLOSE(6). Fills *h and returns 0 otherwise.
 */
int rb__frame_check(const uint8_t hdr[RB_FRAME_HEADER_LEN], uint32_t max_frame,
                    struct rb__frame_hdr *h);

struct rb__hello {
    uint8_t version;
    uint8_t mode;
    uint32_t interval_ms; /* 0: server default */
    uint32_t timeout_ms;  /* 0: server default */
    const uint8_t *client_id;
    size_t client_id_len;
    const uint8_t *token; /* NULL when the HELLO carries none (token_len 0) */
    size_t token_len;
};
/*
 * Parses a HELLO payload: -EPROTO on a wrong version or mode, an unknown flag, or a length that
 * does not fit the layout (docs/protocol.md: without RB__HELLO_F_TOKEN the id is the rest of the
 * payload, 0..64 bytes; with it, u8 id length 0..64, the id, then a token of 1..255 bytes).
 */
int rb__hello_parse(const uint8_t *p, size_t len, struct rb__hello *out);

struct rb__welcome {
    uint8_t version;
    uint8_t mode;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    uint64_t conn_id;
};
int rb__welcome_parse(const uint8_t *p, size_t len, struct rb__welcome *out);

/* Parses a CLOSE payload; the reason must be valid UTF-8 (-EPROTO otherwise). */
int rb__close_parse(const uint8_t *p, size_t len, uint16_t *code, const uint8_t **reason,
                    size_t *reason_len);

/* Parses a TUNE payload (u32 interval_ms, u32 timeout_ms; 0: the server's default). */
int rb__tune_parse(const uint8_t *p, size_t len, uint32_t *interval_ms, uint32_t *timeout_ms);

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
int rb__utf8_valid(const uint8_t *p, size_t len);
/* The same, fed in pieces: *state starts at 0; -EILSEQ as soon as a byte is wrong; the whole text
 * is valid when every piece returned 0 and *state is 0 again at its end. */
int rb__utf8_step(uint32_t *state, const uint8_t *p, size_t len);

static inline uint64_t rb__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static inline uint32_t rb__get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t rb__get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Encoders write a whole frame into out (the caller provides room) and return its length. */
size_t rb__put_header(uint8_t *out, uint8_t type, uint16_t payload_len);
size_t rb__put_hello(uint8_t *out, const struct rb__hello *h);
size_t rb__put_welcome(uint8_t *out, const struct rb__welcome *w);
size_t rb__put_ping(uint8_t *out, uint8_t type /* PING or PONG */, uint64_t token);
size_t rb__put_close(uint8_t *out, uint16_t code, const char *reason /* may be NULL */);
size_t rb__put_data(uint8_t *out, const void *data, uint16_t len);
size_t rb__put_tune(uint8_t *out, uint32_t interval_ms, uint32_t timeout_ms);

/*
 * The v1 stream decoder, shared by the engine, the load generator, the client library and the
 * fuzz targets. Frames wholly inside the input are handed out in place, with no copy. A frame split
 * across inputs waits in storage the caller owns: `inl_cap` bytes of its own record (at least a
 * header), and for a longer frame a buffer of exactly that frame's size, kept in the caller's slot
 * and freed as soon as the frame is complete. So a peer can make its reader hold at most one frame.
 */
struct rb__v1_split {
    uint32_t len, cap;
    uint8_t data[];
};
struct rb__v1_rx {
    uint8_t *inl_len; /* bytes of a split frame held inline */
    uint8_t *inl;     /* inl_cap bytes */
    uint8_t inl_cap;  /* >= RB_FRAME_HEADER_LEN */
    uint32_t max_frame;
    /* The address of the caller's slot for a longer split frame; with create, the caller makes
     * the slot exist (it may allocate what holds it) or returns NULL. *slot is NULL when empty. */
    struct rb__v1_split **(*slot)(void *ctx, bool create);
    /* One complete frame; anything but 0 stops the decoder at once, which then returns it. */
    int (*frame)(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload);
    void *ctx;
};
/*
 * Feeds n bytes: 0 when all were taken; what frame() returned to stop; -EPROTO or -EMSGSIZE for a
 * header rb__frame_check() refuses (nothing after it is looked at); -ENOMEM.
 */
int rb__v1_feed(const struct rb__v1_rx *rx, const uint8_t *p, size_t n);
/* Bytes of a split frame held now (0: the decoder is between frames). */
size_t rb__v1_pending(const struct rb__v1_rx *rx);

#endif
