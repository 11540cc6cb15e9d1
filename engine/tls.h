/* tls.h — TLS for the engine: per-engine context, per-connection handshake, TLS 1.3 records. */
#ifndef RB_TLS_H
#define RB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Three parts, meant to sit under a transport interface (see docs/tls.md):
 *   rb_tls_ctx    one per engine, shared by all workers (OpenSSL SSL_CTX, ticket keys, counters).
 *   rb_tls_hs     one per connection while it handshakes (an SSL object on memory BIOs). After a
 *                 TLS 1.3 handshake it is exported into an rb_tls_conn and freed; a TLS 1.2
 *                 connection keeps it and is served through rb_tls12_*.
 *   rb_tls_conn   the whole per-connection state of an established TLS 1.3 connection (<= 256 B,
 *                 no pointers), driven by rb_tls_open/rb_tls_seal with a per-thread rb_tls_scratch.
 * Every fallible function returns >= 0 or -errno.
 */

/* ---------------------------------------------------------------- constants (RFC 8446 5) */
#define RB_TLS_HDR_LEN        5                        /* TLSCiphertext header */
#define RB_TLS_TAG_LEN        16                       /* all three AEADs */
#define RB_TLS_MAX_PLAIN      16384                    /* 2^14: largest plaintext in one record */
#define RB_TLS_MAX_CIPHERTEXT (RB_TLS_MAX_PLAIN + 256) /* largest TLSCiphertext.length */
#define RB_TLS_MAX_RECORD     (RB_TLS_HDR_LEN + RB_TLS_MAX_CIPHERTEXT)
/* Room rb_tls_seal needs after the plaintext: the inner content type and the tag. */
#define RB_TLS_SEAL_TAIL     (1 + RB_TLS_TAG_LEN)
#define RB_TLS_SEAL_OVERHEAD (RB_TLS_HDR_LEN + RB_TLS_SEAL_TAIL)
/* Largest record the record layer produces by itself (a KeyUpdate: 5 + 5 + 1 + 16). */
#define RB_TLS_REPLY_MAX 27

/* Content types (RFC 8446 B.1). */
#define RB_TLS_CT_CCS       20
#define RB_TLS_CT_ALERT     21
#define RB_TLS_CT_HANDSHAKE 22
#define RB_TLS_CT_APPDATA   23

/* Alert descriptions used here (RFC 8446 6). */
#define RB_TLS_ALERT_CLOSE_NOTIFY       0
#define RB_TLS_ALERT_UNEXPECTED_MESSAGE 10
#define RB_TLS_ALERT_BAD_RECORD_MAC     20
#define RB_TLS_ALERT_RECORD_OVERFLOW    22
#define RB_TLS_ALERT_HANDSHAKE_FAILURE  40
#define RB_TLS_ALERT_DECODE_ERROR       50
#define RB_TLS_ALERT_PROTOCOL_VERSION   70
#define RB_TLS_ALERT_INTERNAL_ERROR     80
#define RB_TLS_ALERT_USER_CANCELED      90
#define RB_TLS_ALERT_NONE               (-1)

/* TLS 1.3 cipher suites (IANA numbers). */
#define RB_TLS_AES_128_GCM_SHA256       0x1301
#define RB_TLS_AES_256_GCM_SHA384       0x1302
#define RB_TLS_CHACHA20_POLY1305_SHA256 0x1303

/* ---------------------------------------------------------------- per-engine context */
struct rb_tls_ctx;

struct rb_tls_config {
    const char *cert_file;    /* PEM: leaf first, then the chain */
    const char *key_file;     /* PEM private key */
    bool allow_tls12;         /* --tls-min-version 1.2; default TLS 1.3 only */
    const char *ciphers;      /* TLS <= 1.2 cipher list (OpenSSL syntax), NULL: OpenSSL default */
    const char *ciphersuites; /* TLS 1.3 suites (OpenSSL syntax), NULL: the three below; only
                                 AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 are accepted */
    bool no_tickets;          /* turn session tickets off (no resumption) */
    uint32_t ticket_rotate_s; /* ticket key period, 0: 3600 s (a ticket lives 1-2 periods) */
    uint32_t num_tickets;     /* TLS 1.3 tickets sent per full handshake, 0: 1 */
};

struct rb_tls_counters {
    uint64_t full;      /* completed full handshakes */
    uint64_t resumed;   /* completed resumed (ticket) handshakes */
    uint64_t failed;    /* handshakes that failed */
    uint64_t tls12;     /* of the completed ones, how many are TLS 1.2 */
    uint64_t reloads;   /* successful rb_tls_ctx_reload */
    uint64_t rotations; /* ticket key rotations */
};

/* Loads certificate and key; -EINVAL on a bad setting, -ENOENT/-EIO/-EKEYREJECTED on files. */
int rb_tls_ctx_new(const struct rb_tls_config *cfg, struct rb_tls_ctx **out);

/* The client role (ringbeat-load, tests): TLS 1.3 only, the server's certificate is not checked
 * (a load generator against its own server). */
struct rb_tls_client_config {
    const char *ciphersuites; /* TLS 1.3 suites (OpenSSL syntax), NULL: the three */
    bool resume; /* keep the newest ticket and offer it in every new handshake; a handshake
                    then completes only once the server's first ticket is in (tickets must be on
                    at the server; ours sends one after resumed handshakes too) */
};
int rb_tls_ctx_new_client(const struct rb_tls_client_config *cfg, struct rb_tls_ctx **out);
void rb_tls_ctx_free(struct rb_tls_ctx *ctx);
/* Re-reads cert and key (same other settings) for handshakes started after it returns; connections
 * already established or handshaking keep what they had. Ticket keys survive. On error the old
 * certificate stays. Any thread (SIGHUP handler thread, not the signal handler itself). */
int rb_tls_ctx_reload(struct rb_tls_ctx *ctx, const char *cert_file, const char *key_file);
/* Rotates the ticket keys when now_ns (the caller's clock) has reached the next rotation
 * (the first call only sets the deadline). Cheap when nothing is due: one relaxed load. Returns 1
 * when it rotated, 0 otherwise. Any thread. */
int rb_tls_ctx_maybe_rotate(struct rb_tls_ctx *ctx, uint64_t now_ns);
/* Rotates now: a new current key; the old current key still decrypts (and renews) until the next
 * rotation; the one before it is wiped. */
int rb_tls_ctx_rotate_tickets(struct rb_tls_ctx *ctx);
void rb_tls_ctx_counters(const struct rb_tls_ctx *ctx, struct rb_tls_counters *out);

/* ---------------------------------------------------------------- per-connection handshake */
struct rb_tls_hs;

#define RB_TLS_HS_AGAIN 0 /* needs more input (or call again with the rest of it) */
#define RB_TLS_HS_DONE  1 /* handshake complete */

/* A server handshake from a server context, or a client one from a client context; a client's
 * ClientHello is queued at once (take it out and send it). */
int rb_tls_hs_new(struct rb_tls_ctx *ctx, struct rb_tls_hs **out);
void rb_tls_hs_free(struct rb_tls_hs *hs);
/* How many of the step calls so far ran OpenSSL over a whole record (the expensive ones: the
 * ECDHE and signature of a ClientHello): what a caller's per-turn budget counts. */
unsigned rb_tls_hs_runs(const struct rb_tls_hs *hs);
/* After DONE, for a TLS 1.3 connection that keeps its SSL object (served through rb_tls12_*,
 * as TLS 1.2 is: the comparison the benchmarks make): drops the per-record callback. */
void rb_tls_hs_keep(struct rb_tls_hs *hs);
/*
 * Feeds received bytes. Consumes at most one TLS record per call (*consumed: how many bytes of
 * in it took; a partial record is copied into the driver, which holds up to one record), so each
 * call does bounded work: at most one SSL_do_handshake over one record (one ClientHello: the
 * expensive ECDHE + signature step). Returns RB_TLS_HS_AGAIN (call again with in + *consumed when
 * bytes are left, else wait for more), RB_TLS_HS_DONE, or -errno (-EPROTO: the peer is wrong;
 * rb_tls_hs_alert says which alert was queued; -ENOMEM). On DONE, the bytes of in after *consumed
 * are records of the established connection (a client may send data right behind its Finished):
 * hand them to rb_tls_open (TLS 1.3) or rb_tls12_feed (1.2). Output may be queued in every case,
 * failure included (the alert): drain it with rb_tls_hs_take_out and send it.
 */
int rb_tls_hs_step(struct rb_tls_hs *hs, const uint8_t *in, size_t len, size_t *consumed);
size_t rb_tls_hs_out_pending(const struct rb_tls_hs *hs);
/* Moves up to cap queued output bytes into buf; returns how many. */
size_t rb_tls_hs_take_out(struct rb_tls_hs *hs, uint8_t *buf, size_t cap);
/* Alert description this side sent on failure, or RB_TLS_ALERT_NONE. */
int rb_tls_hs_alert(const struct rb_tls_hs *hs);
/* After DONE: 0x0304 (TLS 1.3) or 0x0303 (1.2); whether the session was resumed. */
int rb_tls_hs_version(const struct rb_tls_hs *hs);
bool rb_tls_hs_resumed(const struct rb_tls_hs *hs);

struct rb_tls_conn;
/* TLS 1.3 after DONE, with all output taken (-EBUSY otherwise): fills *out and frees hs (also on
 * error, except -EBUSY). -EPROTONOSUPPORT for TLS 1.2 (keep hs and use rb_tls12_*). */
int rb_tls_hs_export(struct rb_tls_hs *hs, struct rb_tls_conn *out);

/* TLS 1.2 (or a kept TLS 1.3 SSL object: rb_tls_hs_keep): SSL_read/SSL_write on the memory BIOs;
 * the SSL object stays, with SSL_MODE_RELEASE_BUFFERS. feed: takes all len bytes. read: plaintext
 * bytes (0: none yet), -ESHUTDOWN on the peer's close_notify (ours is queued in the output),
 * -ECONNRESET on its fatal alert, -EPROTO on a bad record (our alert queued). write: seals all len
 * bytes into the output. */
int rb_tls12_feed(struct rb_tls_hs *hs, const uint8_t *in, size_t len);
int rb_tls12_read(struct rb_tls_hs *hs, uint8_t *buf, size_t cap);
int rb_tls12_write(struct rb_tls_hs *hs, const uint8_t *buf, size_t len);
/* Queues our close_notify (take it out and send it); nothing may be written afterwards. */
int rb_tls12_close(struct rb_tls_hs *hs);

/* ---------------------------------------------------------------- TLS 1.3 record layer */
struct rb_tls_dir {
    uint8_t key[32];    /* AEAD key (16 used for AES-128-GCM) */
    uint8_t iv[12];     /* static IV; nonce = iv xor seq */
    uint8_t secret[48]; /* traffic secret N, kept for KeyUpdate (32 used with SHA-256) */
    uint64_t seq;       /* next record's sequence number */
};

struct rb_tls_conn {
    struct rb_tls_dir rd, wr;
    uint16_t suite;     /* RB_TLS_AES_128_GCM_SHA256, ... */
    uint8_t flags;      /* RB_TLS_F_* */
    uint8_t hs_len;     /* bytes in hs_part */
    uint8_t hs_part[4]; /* a post-handshake message split across records (KeyUpdate: 5 bytes) */
};
#define RB_TLS_F_SERVER    0x01 /* we are the server (the engine always is; the load is not) */
#define RB_TLS_F_RD_CLOSED 0x02 /* close_notify received */
#define RB_TLS_F_WR_CLOSED 0x04 /* close_notify sent */
#define RB_TLS_F_FAILED    0x08 /* a fatal error was seen or sent: nothing more in or out */

/* Per worker thread: one cipher context per AEAD and direction, re-keyed per record. */
struct rb_tls_scratch;
int rb_tls_scratch_new(struct rb_tls_scratch **out);
void rb_tls_scratch_free(struct rb_tls_scratch *s);

/* Builds a connection from traffic secrets (application traffic secret N of each side) and the
 * next sequence numbers. server: our write secret is the server's. secret_len 32 or 48. */
int rb_tls_conn_init(struct rb_tls_conn *c, uint16_t suite, bool server, const uint8_t *rd_secret,
                     const uint8_t *wr_secret, size_t secret_len, uint64_t rd_seq, uint64_t wr_seq);
/* Wipes keys and secrets. */
void rb_tls_conn_wipe(struct rb_tls_conn *c);

/*
 * Framing, for the caller that collects records: from the 5 header bytes, the whole record's
 * length (5 + TLSCiphertext.length), or -EMSGSIZE (length > 2^14 + 256: send
 * RB_TLS_ALERT_RECORD_OVERFLOW) or -EPROTO (outer type not application_data: send
 * RB_TLS_ALERT_UNEXPECTED_MESSAGE). What the caller keeps between receives: the bytes of the one
 * record that is incomplete, nothing else (at most 5 header bytes until the length is known, then
 * at most RB_TLS_MAX_RECORD bytes).
 */
int rb_tls_record_len(const uint8_t hdr[RB_TLS_HDR_LEN]);

/*
 * Collecting records (tls_feed.c, the one collector: engine, load generator, fuzzer). Whole
 * records are handed to record() where they lie in the caller's bytes (decrypt them there); a
 * record split across receives is copied into *part, allocated for exactly that record (5 bytes
 * while its header is incomplete) and freed once it was handed out. record() returns non-zero
 * to stop (the connection was closed or released: neither *part nor the ctx is touched again).
 */
struct rb_tls_part {
    uint32_t have, cap; /* cap: the record's length, or RB_TLS_HDR_LEN until it is known */
    uint8_t data[];
};
struct rb_tls_rx {
    struct rb_tls_part **part; /* the caller's slot for the one incomplete record (NULL: none) */
    int (*record)(void *ctx, uint8_t *rec, size_t len);
    void *ctx;
};
/* 0; 1 when record() stopped; -EMSGSIZE / -EPROTO for a header rb_tls_record_len refuses (send
 * record_overflow / unexpected_message, then close); -ENOMEM. */
int rb_tls_feed(const struct rb_tls_rx *rx, uint8_t *p, size_t n);
/* Bytes held in an incomplete record (for rb_tls_at_eof). */
size_t rb_tls_part_bytes(const struct rb_tls_part *pt);

/* What rb_tls_open found, and what to send back (sealed already, under the right keys). */
struct rb_tls_opened {
    uint8_t *data; /* application data, decrypted in place inside the record */
    size_t len;    /* its length (0 is legal) */
    int alert;     /* on error: the alert in reply, or RB_TLS_ALERT_NONE; the peer's alert on
                      -ECONNRESET */
    uint8_t reply_len;
    uint8_t reply[RB_TLS_REPLY_MAX]; /* send before anything sealed after this call */
};

#define RB_TLS_DATA    0 /* application data in data/len */
#define RB_TLS_NOTHING 1 /* handled inside (KeyUpdate, user_canceled); maybe a reply to send */
#define RB_TLS_CLOSED  2 /* close_notify: clean end; reply holds our close_notify */
/*
 * Opens one whole record rec[0..len) (len as rb_tls_record_len said) in place. Errors, all final
 * (the connection is failed; send reply, then close): -EBADMSG (bad MAC: bad_record_mac),
 * -EMSGSIZE (record_overflow), -EPROTO (unexpected_message), -EILSEQ (decode_error),
 * -ECONNRESET (the peer sent a fatal alert: nothing to send), -EPIPE (after close/failure),
 * -EOVERFLOW (sequence numbers exhausted).
 */
int rb_tls_open(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec, size_t len,
                struct rb_tls_opened *out);

/*
 * Seals application data in place: rec[0..5) is room for the header, rec[5..5+len) the
 * plaintext, rec[5+len..5+len+17) room for the content type and tag. len <= 2^14. Returns the
 * record length (len + 22), or -EMSGSIZE, -EPIPE (closed/failed), -EKEYEXPIRED (the write key
 * reached its AEAD limit: seal rb_tls_seal_keyupdate first, then retry).
 */
int rb_tls_seal(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec, size_t len);
/* Writes an alert record (close_notify: warning level, marks us closed; others: fatal, marks the
 * connection failed) into out (RB_TLS_REPLY_MAX bytes); returns its length. */
int rb_tls_seal_alert(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *out, int alert);
/* Writes our KeyUpdate (update_requested or not) and switches to the next write keys. */
int rb_tls_seal_keyupdate(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *out,
                          bool request_peer);
/* At EOF: 0 if the peer closed cleanly (close_notify, and partial_bytes == 0 left uncollected),
 * -ECONNABORTED for a truncated stream. */
int rb_tls_at_eof(const struct rb_tls_conn *c, size_t partial_bytes);

/* ---------------------------------------------------------------- internals, for tests/fuzz */
/* HKDF-Expand-Label(secret, label, "", out_len) with the suite's hash (RFC 8446 7.1). */
int rb__tls_expand_label(uint16_t suite, const uint8_t *secret, const char *label, uint8_t *out,
                         size_t out_len);
size_t rb__tls_hash_len(uint16_t suite);
/* Seals an arbitrary inner plaintext (content + type byte + padding, already laid out at
 * rec + 5, inner_len bytes) under the write keys: the peer's view for tests and the fuzzer. */
int rb__tls_seal_inner(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec,
                       size_t inner_len);

#endif
