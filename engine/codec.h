/* codec.h — the protocol interface: bytes in, protocol-neutral events out, frames out. */
#ifndef RB_CODEC_H
#define RB_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringbeat.h"

struct rb__worker;
struct rb__conn;

/*
 * The loop knows no protocol. A listener names a codec; the receive path hands the codec the
 * connection's bytes (after the transport: over TLS, the plaintext of each record, and start()
 * only once the TLS handshake is done), and the codec turns each complete frame into one of
 * the calls below, which do everything that does not depend on the protocol: liveness, RTT,
 * answers, callbacks, counters, release. Going the other way, the session layer asks the codec
 * to encode a ping, pong, message, welcome or close. A codec keeps its per-connection state in
 * the record's RB__CODEC_INLINE bytes (c->codec) and, when that is not enough, in ext->codec
 * (freed by its release()).
 *
 * Every function that gets a connection returns 0, or -1 when the connection was released
 * during the call: the caller must not touch it again.
 */

/* What an opening frame asks for (v1 HELLO, a WebSocket upgrade's query); 0 means default. */
struct rb__open_params {
    bool has_mode;
    enum rb_mode mode;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    const uint8_t *client_id;
    size_t client_id_len;
    const uint8_t *token; /* proves the client id (rb_config.auth): v1 HELLO, WebSocket ?token= */
    size_t token_len;
    bool authorized; /* the codec already called rb__sess_authorize() with these params */
    const void
        *welcome_arg; /* the codec's own, handed to its put_welcome (WebSocket: the accept) */
};

/* The values in force after clamping, for the codec's welcome. */
struct rb__welcome_info {
    enum rb_mode mode;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    uint64_t conn_id;
    const void *arg; /* rb__open_params.welcome_arg */
};

struct rb__codec {
    const char *name; /* the /metrics protocol label */
    enum rb_protocol protocol;
    /* Optional: once per listener at start, before any connection (0 or -errno). */
    int (*prepare)(const struct rb_config *cfg);
    /* Optional: a record was just made for an accepted socket (before its timer starts), e.g. to
     * give a handshake its own deadline. */
    void (*start)(struct rb__worker *w, struct rb__conn *c);
    /* Bytes of the protocol stream; all of them are consumed (or the connection released). They
     * are the codec's to change in place (a receive buffer, recycled after the call: WebSocket
     * unmasks there). */
    int (*input)(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n);
    /* Encoders write one whole frame at out and return its length. Room: control_max for a
     * ping, pong or close; data_overhead + len for a message; welcome_max for a welcome. */
    uint32_t (*put_ping)(uint8_t *out, bool pong, const uint8_t *payload, uint32_t len);
    uint32_t (*put_data)(uint8_t *out, enum rb_data_kind kind, const void *data, uint32_t len);
    uint32_t (*put_welcome)(uint8_t *out, const struct rb__conn *c,
                            const struct rb__welcome_info *wi);
    /*
     * The frame that tells the peer why it is closed (reason: enum rb_close_code, peer_code:
     * what the peer sent with RB_CLOSE_PEER); 0: nothing is sent. c is NULL for a connection
     * refused at accept, before it has a record.
     */
    uint32_t (*put_close)(uint8_t *out, const struct rb__conn *c, int reason, int peer_code);
    /* Frees whatever the codec keeps in ext->codec. */
    void (*release)(struct rb__conn *c, void *state);
    uint32_t control_max, data_overhead, welcome_max;
};

/* The codecs there are; rb__codec_find() maps a listener's protocol to one (NULL: none). */
extern const struct rb__codec rb__codec_v1;
extern const struct rb__codec rb__codec_ws;
const struct rb__codec *rb__codec_find(enum rb_protocol p);

/*
 * Session layer (sess.c): what every protocol shares.
 *
 * rb__sess_open: the connection identifies itself. Clamps what it asks for exactly like every
 * other open (the shared rules of docs/protocol.md), applies it, sends the codec's welcome when
 * `welcome` is set, starts its timer and calls on_open. -EPROTO (nothing changed, nothing sent)
 * when the request cannot be honoured, -EACCES when rb__sess_authorize refuses it: the codec
 * decides how to refuse it.
 */
int rb__sess_open(struct rb__worker *w, struct rb__conn *c, const struct rb__open_params *op,
                  bool welcome);
/*
 * Who may claim a client id: with rb_config.auth, the token must prove op's client id now. 0, or
 * -EACCES (counted in auth_refused by why, logged at debug): the codec refuses the connection
 * with RB_CLOSE_UNAUTHORIZED (v1 CLOSE(9); WebSocket: HTTP 401 before the upgrade) and nothing
 * is opened, so nothing is published. The balancer's own connections (a PROXY LOCAL header) are
 * not checked. rb__sess_open calls it unless op->authorized says the codec already did.
 */
int rb__sess_authorize(struct rb__worker *w, const struct rb__conn *c,
                       const struct rb__open_params *op);
/* Clamps a request against the configuration: 0, or -EPROTO when it cannot be honoured. */
int rb__sess_clamp(const struct rb_config *cfg, const struct rb__open_params *op,
                   struct rb__welcome_info *out);
/* v1 TUNE: new interval and timeout for an open connection, answered by a welcome. */
int rb__sess_tune(struct rb__worker *w, struct rb__conn *c, const struct rb__open_params *op);
/* Kernel mode: the socket refused the keepalive options (err): the connection falls back to
 * server mode, where the engine PINGs (every client answers PINGs in every mode). */
void rb__kernel_mode_failed(struct rb__worker *w, struct rb__conn *c, int err);
/* A ping from the peer (payload echoed in the pong unless the mode is silent). */
int rb__sess_ping(struct rb__worker *w, struct rb__conn *c, const uint8_t *payload, uint32_t len);
/* A pong: an 8-byte payload is matched against our tokens for the RTT. */
int rb__sess_pong(struct rb__worker *w, struct rb__conn *c, const uint8_t *payload, uint32_t len);
/* A whole message: on_data, or echoed with the same kind (rb_config.echo_data). */
int rb__sess_data(struct rb__worker *w, struct rb__conn *c, enum rb_data_kind kind,
                  const uint8_t *p, size_t len);
/* Sends a message (rb_send); -EMSGSIZE over max_frame, -ENOMEM. May release c (slow reader). */
int rb__sess_send(struct rb__worker *w, struct rb__conn *c, enum rb_data_kind kind,
                  const void *data, size_t len);
/* The connection must go: releases it with reason (sending the codec's close). Always -1. */
int rb__sess_fail(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code);
/* Sends a ping with a fresh token now (server mode; live.c decided it is due). */
int rb__sess_send_ping(struct rb__worker *w, struct rb__conn *c);

#endif
