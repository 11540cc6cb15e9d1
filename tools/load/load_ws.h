/* load_ws.h — ringbeat-load's WebSocket client side: the upgrade, masked frames, and the decoder
 * glue. */
#ifndef RB_LOAD_WS_H
#define RB_LOAD_WS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "load.h"
#include "proto.h"
#include "ws.h"

/*
 * The load generator drives WebSocket with the same per-connection logic as v1: the 101 response
 * becomes a WELCOME, server Pings and Pongs become PING and PONG (their payload is the 8-byte
 * token both ways), messages become DATA and a Close (or a 503 refusal) becomes CLOSE with the
 * ringbeat reason the close code stands for (docs/websocket.md). Frames are decoded by the
 * engine's own rb__ws_feed (engine/ws_frame.c) and the 101 by its rb__ws_reply_parse.
 */

/* The upgrade request for a connection: query parameters from cfg (what HELLO would carry). */
uint32_t lws_request(uint8_t *out, uint32_t cap, const struct load_cfg *cfg, uint32_t id,
                     uint32_t nonce, const struct sockaddr_in *dst);
/* Masked client frames (room: LWS_FRAME_MAX): a PING or PONG with the 8-byte token; a Close for
 * a v1 CLOSE code (1: 1000, 3: 1002). */
#define LWS_FRAME_MAX   14
#define LWS_REQUEST_MAX 512
uint32_t lws_put_ping(uint8_t *out, uint8_t v1_type, uint64_t token);
uint32_t lws_put_close(uint8_t *out, uint16_t v1_code);

/* Views into the load's 64-byte connection record. */
struct lws_conn {
    uint8_t *flags;
    uint8_t flag_dec;           /* set in *flags while *dec holds decoder state */
    struct rb__v1_split **head; /* a 101 that came in pieces */
    struct rb__ws_split **dec;  /* a split frame or message */
    bool handshaking;           /* the 101 is still to come */
    uint32_t id;                /* the connection's number */
    uint32_t nonce;             /* what the request's key was made from */
    uint8_t mode;               /* the mode asked for (the 101 says which one is in force) */
    /* load.c's frame handler, fed v1-shaped frames; anything but 0 stops. */
    int (*frame)(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload);
    void *ctx;
};
/* 0, what frame() returned, or -EPROTO / -EMSGSIZE / -EILSEQ / -ENOMEM. What it keeps is freed
 * with rb__ws_split_free(*dec) while flag_dec is set, else free(*head). */
int lws_feed(const struct lws_conn *lc, uint8_t *p, size_t n);

#endif
