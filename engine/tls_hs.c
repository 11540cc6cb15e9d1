/* tls_hs.c — the per-connection TLS handshake on memory BIOs, and its hand-over to tls_record.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls_int.h"

/*
 * How the record layer gets exact state from OpenSSL 3.0:
 * - Secrets: the keylog callback is the one public route to the application traffic secrets
 *   (SSL_export_keying_material derives from the exporter secret through a one-way HKDF, and
 *   SSL_SESSION_get_master_key gives the resumption secret in TLS 1.3). It is called synchronously
 *   in the thread running the handshake, with the SSL at hand, so the secret goes straight into
 *   this connection's struct (found through the SSL's app data) and no global state is involved.
 * - Read sequence: received bytes are given to OpenSSL one whole record at a time, and read-ahead
 *   is off, so when the client's Finished completes the handshake nothing after it has reached
 *   OpenSSL: those bytes stay with the caller and are the records 0, 1, ... under the client's
 *   application keys. Checked: no record header is read after the client key is installed and
 *   the read BIO is empty.
 * - Write sequence: OpenSSL writes its NewSessionTickets under the server application keys inside
 *   the same SSL_do_handshake call; the message callback reports every record header it writes,
 *   and the keylog callback marks the moment the server application key is installed, so the
 *   number of headers written after that mark is the next write sequence number.
 * - Bounded work: one record per rb_tls_hs_step, i.e. at most one SSL_do_handshake over one
 *   record (a ClientHello costs the ECDHE and the signature).
 * - The client role (ringbeat-load) mirrors all of it: the client's own secret is the write one,
 *   and it is done when it has written its Finished (nothing of the server's application data
 *   read yet), or, when it wants to resume later, once OpenSSL has read the server's first
 *   NewSessionTicket (a ticket becomes a session only inside the SSL object); the records read
 *   until then are counted like the server's tickets are.
 */

#define MAX_RECORD_12 (16384 + 2048) /* TLSCiphertext.length limit for TLS 1.2 */

enum { HS_RUNNING, HS_TICKET, HS_DONE, HS_FAILED };

struct rb_tls_hs {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    struct rb_tls_ctx *ctx;
    uint8_t hdr[5];
    uint8_t hdr_have;
    uint8_t state;
    uint8_t have_rd, have_wr;    /* application traffic secrets seen */
    uint8_t client;              /* the connecting side (ringbeat-load): its write secret is the
                                    client's */
    uint8_t got_ticket;          /* client: a NewSessionTicket was processed */
    uint32_t runs;               /* SSL_do_handshake / SSL_read calls over a whole record */
    uint32_t body_left;          /* bytes of the current record still to come */
    uint32_t rd_after, wr_after; /* record headers read / written under application keys */
    uint8_t secret_len;
    int alert;
    uint8_t rd_secret[48], wr_secret[48];
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "LABEL <client_random hex> <secret hex>" (NSS key log format). */
void rb__tls_keylog_cb(const SSL *ssl, const char *line)
{
    struct rb_tls_hs *hs = SSL_get_app_data(ssl);
    if (!hs)
        return;
    uint8_t *dst;
    int peer; /* the line names the peer's secret: the one we read with */
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
        peer = !hs->client;
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
        peer = hs->client;
    else
        return;
    dst = peer ? hs->rd_secret : hs->wr_secret;
    const char *p = strchr(line + 24, ' ');
    if (!p)
        return;
    p++;
    size_t n = 0;
    while (n < 48 && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
        dst[n++] = (uint8_t)(hexval(p[0]) << 4 | hexval(p[1]));
        p += 2;
    }
    if (*p != '\0' || (n != 32 && n != 48) || (hs->secret_len && hs->secret_len != n))
        return; /* export will refuse: a secret is missing */
    hs->secret_len = (uint8_t)n;
    if (peer) {
        hs->have_rd = 1;
        hs->rd_after = 0;
    } else {
        hs->have_wr = 1;
        hs->wr_after = 0;
    }
}

void rb__tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                    SSL *ssl, void *arg)
{
    (void)version, (void)buf, (void)len, (void)arg;
    struct rb_tls_hs *hs = SSL_get_app_data(ssl);
    if (!hs || content_type != SSL3_RT_HEADER)
        return;
    if (write_p && hs->have_wr)
        hs->wr_after++;
    else if (!write_p && hs->have_rd)
        hs->rd_after++;
}

void rb__tls_info_cb(const SSL *ssl, int where, int ret)
{
    struct rb_tls_hs *hs = SSL_get_app_data(ssl);
    if (hs && (where & SSL_CB_WRITE_ALERT) == SSL_CB_WRITE_ALERT)
        hs->alert = ret & 0xFF;
}

int rb_tls_hs_new(struct rb_tls_ctx *ctx, struct rb_tls_hs **out)
{
    struct rb_tls_hs *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return -ENOMEM;
    hs->ctx = ctx;
    hs->alert = RB_TLS_ALERT_NONE;
    hs->ssl = rb__tls_ctx_new_ssl(ctx);
    hs->rbio = BIO_new(BIO_s_mem());
    hs->wbio = BIO_new(BIO_s_mem());
    if (!hs->ssl || !hs->rbio || !hs->wbio) {
        BIO_free(hs->rbio);
        BIO_free(hs->wbio);
        SSL_free(hs->ssl);
        free(hs);
        ERR_clear_error();
        return -ENOMEM;
    }
    /* An empty memory BIO reports EOF by default; -1 makes it "retry later" instead. */
    BIO_set_mem_eof_return(hs->rbio, -1);
    SSL_set_bio(hs->ssl, hs->rbio, hs->wbio);
    SSL_set_app_data(hs->ssl, hs);
    if (rb__tls_ctx_is_client(ctx)) {
        /* The client speaks first: its ClientHello is in the output now. */
        hs->client = 1;
        SSL_set_connect_state(hs->ssl);
        ERR_clear_error();
        int r = SSL_do_handshake(hs->ssl);
        if (r != -1 || SSL_get_error(hs->ssl, r) != SSL_ERROR_WANT_READ) {
            rb_tls_hs_free(hs);
            ERR_clear_error();
            return -ENOMEM;
        }
    } else {
        SSL_set_accept_state(hs->ssl);
    }
    *out = hs;
    return 0;
}

void rb__tls_hs_ticket(SSL *ssl)
{
    struct rb_tls_hs *hs = SSL_get_app_data(ssl);
    if (hs)
        hs->got_ticket = 1;
}

void rb_tls_hs_keep(struct rb_tls_hs *hs)
{
    if (hs->state == HS_DONE)
        SSL_set_msg_callback(hs->ssl, NULL); /* no per-record callback for the long haul */
}

unsigned rb_tls_hs_runs(const struct rb_tls_hs *hs)
{
    return hs->runs;
}

void rb_tls_hs_free(struct rb_tls_hs *hs)
{
    if (!hs)
        return;
    if (hs->ssl) {
        SSL_set_app_data(hs->ssl, NULL);
        /* A finished handshake is not a "bad" session for OpenSSL: freeing it without a
         * shutdown would otherwise mark the session not resumable. */
        if (hs->state == HS_DONE)
            SSL_set_shutdown(hs->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(hs->ssl);
    }
    OPENSSL_cleanse(hs, sizeof(*hs));
    free(hs);
}

static int hs_fail(struct rb_tls_hs *hs)
{
    hs->state = HS_FAILED;
    rb__tls_count(hs->ctx, RB__TLS_FAILED);
    ERR_clear_error();
    return -EPROTO;
}

static int hs_done(struct rb_tls_hs *hs)
{
    hs->state = HS_DONE;
    rb__tls_count(hs->ctx, SSL_session_reused(hs->ssl) ? RB__TLS_RESUMED : RB__TLS_FULL);
    return RB_TLS_HS_DONE;
}

/* A resuming client after its Finished: records go to OpenSSL until its first ticket is in
 * (only OpenSSL can turn a ticket into a session). Application data before it would be lost:
 * refused. */
static int ticket_run(struct rb_tls_hs *hs)
{
    uint8_t b;
    size_t n = 0;
    hs->runs++;
    ERR_clear_error();
    if (SSL_read_ex(hs->ssl, &b, 1, &n) == 1 || SSL_get_error(hs->ssl, 0) != SSL_ERROR_WANT_READ ||
        BIO_ctrl_pending(hs->rbio) != 0)
        return hs_fail(hs);
    return hs->got_ticket ? hs_done(hs) : RB_TLS_HS_AGAIN;
}

static int hs_run(struct rb_tls_hs *hs)
{
    if (hs->state == HS_TICKET)
        return ticket_run(hs);
    hs->runs++;
    ERR_clear_error();
    int r = SSL_do_handshake(hs->ssl);
    if (r != 1) {
        int e = SSL_get_error(hs->ssl, r);
        if (e == SSL_ERROR_WANT_READ && BIO_ctrl_pending(hs->rbio) == 0)
            return RB_TLS_HS_AGAIN;
        return hs_fail(hs);
    }
    int v = SSL_version(hs->ssl);
    if (v == TLS1_3_VERSION) {
        /* Nothing beyond the client's Finished may have been read (see the top of the file). */
        if (BIO_ctrl_pending(hs->rbio) != 0 || hs->rd_after != 0 || !hs->have_rd || !hs->have_wr)
            return hs_fail(hs);
    } else {
        rb__tls_count(hs->ctx, RB__TLS_TLS12);
        SSL_set_msg_callback(hs->ssl, NULL); /* no per-record callback for the long haul */
    }
    /* A ticket is used once (OpenSSL's client marks it not resumable after use); our server
     * sends a fresh one after every handshake, resumed or not. */
    if (hs->client && rb__tls_ctx_resumes(hs->ctx) && !hs->got_ticket) {
        hs->state = HS_TICKET;
        return RB_TLS_HS_AGAIN;
    }
    return hs_done(hs);
}

int rb_tls_hs_step(struct rb_tls_hs *hs, const uint8_t *in, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (hs->state == HS_DONE)
        return RB_TLS_HS_DONE;
    if (hs->state == HS_FAILED)
        return -EPROTO;
    if (len == 0)
        return RB_TLS_HS_AGAIN;
    size_t used = 0;
    if (hs->hdr_have < 5) {
        size_t want = (size_t)(5 - hs->hdr_have), take = want < len ? want : len;
        memcpy(hs->hdr + hs->hdr_have, in, take);
        hs->hdr_have += (uint8_t)take;
        used += take;
        *consumed = used;
        if (hs->hdr_have < 5)
            return RB_TLS_HS_AGAIN;
        if (BIO_write(hs->rbio, hs->hdr, 5) != 5)
            return hs_fail(hs);
        uint32_t rlen = (uint32_t)hs->hdr[3] << 8 | hs->hdr[4];
        int type_ok = hs->hdr[0] >= SSL3_RT_CHANGE_CIPHER_SPEC &&
                      hs->hdr[0] <= SSL3_RT_APPLICATION_DATA && hs->hdr[1] == 3;
        if (!type_ok || rlen > MAX_RECORD_12 || rlen == 0) {
            /* Not a record we would wait for: OpenSSL judges the header alone (no alert for
             * something that is not TLS at all, record_overflow, ...). */
            int r = hs_run(hs);
            return r < 0 ? r : hs_fail(hs);
        }
        hs->body_left = rlen;
    }
    size_t take = hs->body_left < len - used ? hs->body_left : len - used;
    if (take > 0 && BIO_write(hs->rbio, in + used, (int)take) != (int)take)
        return hs_fail(hs);
    used += take;
    *consumed = used;
    hs->body_left -= (uint32_t)take;
    if (hs->body_left > 0)
        return RB_TLS_HS_AGAIN;
    hs->hdr_have = 0;
    return hs_run(hs);
}

size_t rb_tls_hs_out_pending(const struct rb_tls_hs *hs)
{
    return BIO_ctrl_pending(hs->wbio);
}

size_t rb_tls_hs_take_out(struct rb_tls_hs *hs, uint8_t *buf, size_t cap)
{
    size_t pending = BIO_ctrl_pending(hs->wbio);
    size_t n = pending < cap ? pending : cap;
    if (n == 0)
        return 0;
    int r = BIO_read(hs->wbio, buf, (int)n);
    return r > 0 ? (size_t)r : 0;
}

int rb_tls_hs_alert(const struct rb_tls_hs *hs)
{
    return hs->alert;
}

int rb_tls_hs_version(const struct rb_tls_hs *hs)
{
    return hs->state == HS_DONE ? SSL_version(hs->ssl) : 0;
}

bool rb_tls_hs_resumed(const struct rb_tls_hs *hs)
{
    return hs->state == HS_DONE && SSL_session_reused(hs->ssl);
}

int rb_tls_hs_export(struct rb_tls_hs *hs, struct rb_tls_conn *out)
{
    if (hs->state != HS_DONE)
        return -EINVAL;
    if (SSL_version(hs->ssl) != TLS1_3_VERSION)
        return -EPROTONOSUPPORT;
    if (BIO_ctrl_pending(hs->wbio) != 0)
        return -EBUSY;
    uint16_t suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(hs->ssl));
    int rc = -EPROTO;
    if (hs->have_rd && hs->have_wr && hs->secret_len == rb__tls_hash_len(suite))
        rc = rb_tls_conn_init(out, suite, !hs->client, hs->rd_secret, hs->wr_secret, hs->secret_len,
                              hs->rd_after, hs->wr_after);
    rb_tls_hs_free(hs);
    return rc;
}

/* ---- TLS 1.2: the SSL object stays, on the same memory BIOs ---- */

int rb_tls12_feed(struct rb_tls_hs *hs, const uint8_t *in, size_t len)
{
    if (hs->state != HS_DONE)
        return -EINVAL;
    if (len > 0 && BIO_write(hs->rbio, in, (int)len) != (int)len)
        return -ENOMEM;
    return 0;
}

int rb_tls12_read(struct rb_tls_hs *hs, uint8_t *buf, size_t cap)
{
    if (hs->state != HS_DONE)
        return -EINVAL;
    ERR_clear_error();
    int r = SSL_read(hs->ssl, buf, (int)(cap > 1 << 30 ? 1 << 30 : cap));
    if (r > 0)
        return r;
    int e = SSL_get_error(hs->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    ERR_clear_error();
    hs->state = HS_FAILED;
    if (e == SSL_ERROR_ZERO_RETURN) {
        SSL_shutdown(hs->ssl); /* queues our close_notify */
        return -ESHUTDOWN;
    }
    return (SSL_get_shutdown(hs->ssl) & SSL_RECEIVED_SHUTDOWN) ? -ECONNRESET : -EPROTO;
}

int rb_tls12_close(struct rb_tls_hs *hs)
{
    if (hs->state != HS_DONE)
        return -EINVAL;
    ERR_clear_error();
    SSL_shutdown(hs->ssl); /* queues our close_notify */
    ERR_clear_error();
    hs->state = HS_FAILED; /* nothing more in or out */
    return 0;
}

int rb_tls12_write(struct rb_tls_hs *hs, const uint8_t *buf, size_t len)
{
    if (hs->state != HS_DONE)
        return -EINVAL;
    size_t written = 0;
    ERR_clear_error();
    if (len > 0 && SSL_write_ex(hs->ssl, buf, len, &written) != 1) {
        ERR_clear_error();
        return -EIO;
    }
    return 0;
}
