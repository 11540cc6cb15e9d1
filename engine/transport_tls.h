/* transport_tls.h — the TLS transport's per-connection state, shared by its two sides. */
#ifndef RB_TRANSPORT_TLS_H
#define RB_TRANSPORT_TLS_H

#include "internal.h"

enum { TX_HANDSHAKE = 0, TX_OPEN = 1, TX_SSL = 2 };
#define TX_STATE  0x03
#define TX_RST    0x10 /* the peer's FIN (or, with TX_RST, a reset) came behind queued */
#define TX_EOF    0x20 /* ... handshake input: released once it was judged */
#define TX_FAILED 0x40 /* the handshake failure was counted */
#define TX_QUEUED 0x80 /* on the worker's handshake queue */

struct rb__tls_ext {
    struct rb_tls_part *part; /* the split record; during the handshake, the queued input */
    uint8_t state;            /* TX_* */
    uint8_t pad[7];
    union {
        struct rb_tls_conn conn; /* TX_OPEN */
        struct rb_tls_hs *hs;    /* TX_HANDSHAKE, TX_SSL */
    } u;
};
#define TLS_EXT_SIZE (sizeof(struct rb__conn_ext) + sizeof(struct rb__tls_ext))
_Static_assert(TLS_EXT_SIZE <= 256, "an established TLS connection costs one 256-byte object");

/* How rb__tls_out_begin reserved the frame, for rb__tls_out_end. */
enum { BEGIN_RECORD, BEGIN_APPEND, BEGIN_BIG, BEGIN_SSL };

#define HS_QUEUE_MAX (2 * RB_TLS_MAX_RECORD) /* handshake input held before the step */
#define PLAIN_MAX    RB_TLS_MAX_PLAIN
/* AES-GCM keys are refused at 2^24 records (tls_record.c): a KeyUpdate comes first. */
#define WRITE_LIMIT ((1ULL << 24) - 1)

static inline struct rb__tls_ext *tx_of(const struct rb__conn *c)
{
    return (struct rb__tls_ext *)(void *)(c->ext + 1);
}

/* Counts an alert we sent (RB_TLS_ALERT_NONE: nothing). */
void rb__tls_count_alert(struct rb__worker *w, int alert);
/* Bytes that are TLS already (handshake flights, sealed replies), as they are; what OpenSSL
 * queued on a connection's write BIO. false: c was released. */
bool rb__tls_send_raw(struct rb__worker *w, struct rb__conn *c, const uint8_t *p, size_t n);
bool rb__tls_send_ssl_out(struct rb__worker *w, struct rb__conn *c, struct rb_tls_hs *hs);

#endif
