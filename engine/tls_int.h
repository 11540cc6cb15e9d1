/* tls_int.h — what tls_ctx.c and tls_hs.c share: the context behind rb_tls_ctx. */
#ifndef RB_TLS_INT_H
#define RB_TLS_INT_H

#include <openssl/ssl.h>

#include "tls.h"

enum rb__tls_counter { RB__TLS_FULL, RB__TLS_RESUMED, RB__TLS_FAILED, RB__TLS_TLS12 };

/* A new SSL object from the current SSL_CTX (the SSL holds its own reference, so a reload never
 * disturbs it); a resuming client's carries the newest ticket. NULL on allocation failure. */
SSL *rb__tls_ctx_new_ssl(struct rb_tls_ctx *ctx);
bool rb__tls_ctx_is_client(const struct rb_tls_ctx *ctx);
bool rb__tls_ctx_resumes(const struct rb_tls_ctx *ctx);
/* tls_hs.c: the client's handshake on ssl received a ticket. */
void rb__tls_hs_ticket(SSL *ssl);
void rb__tls_count(struct rb_tls_ctx *ctx, enum rb__tls_counter which);

/* Installed on every SSL_CTX by tls_ctx.c, implemented in tls_hs.c. */
void rb__tls_keylog_cb(const SSL *ssl, const char *line);
void rb__tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                    SSL *ssl, void *arg);
void rb__tls_info_cb(const SSL *ssl, int where, int ret);

#endif
