/* load_tls.h — ringbeat-load's TLS client: handshakes and the engine's record layer per slot. */
#ifndef RB_LOAD_TLS_H
#define RB_LOAD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rb_tls_ctx;

/*
 * The transport under the load's v1 client, like the engine's (engine/transport_tls.c) but
 * for the client side: the handshake driver in its client role, then the same record layer and
 * record collector, so a client connection costs 232 bytes once up and the load can hold as
 * many TLS connections as the server. No knowledge of v1: bytes in and out through ltls_io.
 */
struct ltls_io {
    void *ctx;
    /* Bytes for the wire as they are (handshake flights, sealed records). 0 or -errno. */
    int (*wire)(void *ctx, const uint8_t *p, size_t n);
    /* Plaintext of one record; non-zero stops (the connection is closing). */
    int (*plain)(void *ctx, uint8_t *p, size_t n);
    /* The handshake is done: the first frame (HELLO) may be sealed now. */
    void (*up)(void *ctx);
};

/* What ltls_input found wrong; the caller closes the connection. */
enum ltls_result {
    LTLS_OK = 0,
    LTLS_STOPPED = 1,   /* plain() stopped */
    LTLS_CLOSED = 2,    /* the server's close_notify */
    LTLS_HS_FAILED = 3, /* the handshake failed (or the server's alert ended it) */
    LTLS_FAILED = 4,    /* a bad record, the server's alert, no memory */
};

struct ltls_ring;

/* One client context for the run: resume keeps the newest ticket and offers it (the server must
 * send tickets). */
int ltls_global_init(bool resume, const char *ciphersuites, struct rb_tls_ctx **out);
void ltls_global_free(struct rb_tls_ctx *ctx);
int ltls_ring_new(struct rb_tls_ctx *ctx, uint32_t nslots, struct ltls_ring **out);
void ltls_ring_free(struct ltls_ring *r);
/* A connect succeeded: a new handshake, its ClientHello to io->wire. */
int ltls_start(struct ltls_ring *r, uint32_t slot, const struct ltls_io *io);
enum ltls_result ltls_input(struct ltls_ring *r, uint32_t slot, uint8_t *p, size_t n,
                            const struct ltls_io *io);
/* Seals frame[0..n) into out (n + 22 bytes); -EAGAIN while the handshake runs. */
int ltls_seal(struct ltls_ring *r, uint32_t slot, const uint8_t *frame, size_t n, uint8_t *out,
              size_t cap);
/* Our close_notify into out (24 bytes), or 0 when there is no established connection. */
int ltls_close_notify(struct ltls_ring *r, uint32_t slot, uint8_t *out);
/* The connection is gone: frees what the slot held. */
void ltls_reset(struct ltls_ring *r, uint32_t slot);
/* Handshakes completed by all rings: full and resumed (for the summary). */
void ltls_counts(struct rb_tls_ctx *ctx, uint64_t *full, uint64_t *resumed, uint64_t *failed);

#endif
