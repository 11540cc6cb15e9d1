/* internal.h — libringbeat-client internals shared by its files (never installed). */
#ifndef RBC_INTERNAL_H
#define RBC_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backoff.h"
#include "proto.h" /* the engine's own v1 grammar: engine/proto.c is compiled into this library */
#include "ringbeat_client.h"
#include "smart.h"

#define RBC__URL_MAX  1024
#define RBC__ADDR_MAX 8     /* addresses of one name tried per attempt */
#define RBC__RXBUF    16384 /* bytes read per recv() */
#define RBC__INL      255   /* a split control frame (<= RB__CONTROL_MAX) waits here, inline */
/* Output room kept free of DATA, so a PONG or CLOSE always fits behind queued messages. */
#define RBC__CTRL_RESERVE 256

enum rbc__transport { RBC__TRANSPORT_V1 = 0 };

struct rbc__url {
    enum rbc__transport transport;
    char host[256];
    uint16_t port;
};
/* "[SCHEME://]HOST:PORT": -EINVAL, or -EPROTONOSUPPORT for a transport not built yet. */
int rbc__url_parse(const char *url, struct rbc__url *out);

enum rbc__state {
    RBC__IDLE = 0,   /* not started, or stopped */
    RBC__BACKOFF,    /* waiting for deadline_ms to try again */
    RBC__CONNECTING, /* non-blocking connect() in flight */
    RBC__HANDSHAKE,  /* HELLO sent, waiting for WELCOME */
    RBC__OPEN,
};

struct rbc {
    pthread_mutex_t mu; /* recursive: a callback may call back into the library */
    struct rbc_config cfg;
    struct rbc__url url;
    char client_id[RBC_CLIENT_ID_MAX];
    size_t client_id_len;
    char network[RBC_NETWORK_MAX];

    int epfd, tfd, fd; /* the stable epoll descriptor, its timerfd, the socket (-1: none) */
    bool fd_registered;
    uint32_t fd_events;
    uint64_t timer_at_ms; /* the armed deadline (0: disarmed) */

    enum rbc__state state;
    bool ready; /* created completely (rbc_destroy stores only then) */
    bool started;
    uint64_t deadline_ms; /* BACKOFF: the next attempt; CONNECTING/HANDSHAKE: give up */
    struct sockaddr_storage addr[RBC__ADDR_MAX];
    socklen_t addr_len[RBC__ADDR_MAX];
    unsigned naddr, addr_i;
    struct rbc__backoff backoff;
    struct rbc__smart smart;
    uint32_t srv_floor_ms, srv_cap_ms;  /* the server's limits, as its WELCOMEs showed them */
    uint8_t stored[RBC__SMART_REC_LEN]; /* the last record given to store (or loaded) */
    bool have_stored;
    uint32_t gen; /* changes whenever the socket closes: stale callbacks stop on it */

    /* The open connection. */
    uint64_t conn_id;
    uint32_t eff_interval_ms, eff_timeout_ms; /* the last WELCOME */
    uint32_t asked_interval_ms;               /* the last HELLO or TUNE */
    uint64_t last_tx_ms, last_rx_ms;
    bool ping_out; /* client mode: a PING waits for its PONG */
    uint64_t ping_sent_ms, ping_token;
    uint32_t ping_used_ms; /* the idle interval that PING followed */
    bool first_ping;       /* server mode: the first PING after a WELCOME may take 2 intervals */
    bool tune_pending;     /* a TUNE waits for its WELCOME */
    bool no_tune;          /* the server answered a TUNE with CLOSE(3): never again */
    uint32_t kept_interval_ms, kept_timeout_ms; /* no_tune: what the HELLO asks for */
    enum rbc_liveness live;
    uint64_t token_seq;

    /* Receive: the engine's stream decoder state. */
    uint8_t rx_inl_len;
    uint8_t rx_inl[RBC__INL];
    struct rb__v1_split *rx_split;
    uint8_t rxbuf[RBC__RXBUF];

    /* Send: out[out_off, out_off + out_len) waits for the socket. */
    uint8_t *out;
    uint32_t out_cap, out_off, out_len;

    struct rbc_stats st;
    uint64_t failures_total, heartbeats;
    struct rbc_heartbeat shown; /* what the last RBC_EV_INTERVAL said */

    bool thread_on;
    pthread_t thread;
    int wakefd;
};

/* ---- rbc.c: lifecycle, events, persistence, the descriptor and the timer ---- */
void rbc__emit(struct rbc *c, const struct rbc_event *ev);
/* Emits RBC_EV_INTERVAL when the smart heartbeat's visible state changed. */
void rbc__report(struct rbc *c);
/* Hands the learned state to the store callback if it differs from what it last got. */
void rbc__store(struct rbc *c);
/* Brings the epoll registration and the timer in line with the state. */
void rbc__sync(struct rbc *c);

/* ---- net.c: the socket ---- */
/* Resolves and starts a non-blocking connect: 0, or -errno with *reason set. */
int rbc__net_connect(struct rbc *c, enum rbc_close_reason *reason);
/* Acts on readiness of the socket (EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP). */
void rbc__net_io(struct rbc *c, uint32_t events);
/* Room for n bytes at the end of the output (NULL: none); rbc__out_commit makes them pending. */
uint8_t *rbc__out_reserve(struct rbc *c, size_t n);
void rbc__out_commit(struct rbc *c, size_t n);
/* Writes what the socket takes now: 0, or -errno (the connection is broken). */
int rbc__net_flush(struct rbc *c);
/* Closes the socket and drops what was pending in either direction. */
void rbc__net_close(struct rbc *c);

/* ---- sess.c: protocol v1 on the connection, heartbeats, closing and reconnecting ---- */
void rbc__sess_begin(struct rbc *c);                            /* a connection attempt, now */
void rbc__sess_connected(struct rbc *c);                        /* TCP is up: HELLO */
int rbc__sess_input(struct rbc *c, const uint8_t *p, size_t n); /* <0: the socket is gone */
void rbc__sess_timers(struct rbc *c, uint64_t now_ms);
uint64_t rbc__sess_deadline(const struct rbc *c); /* 0: nothing pending */
/* Ends the connection (or attempt): wire_code > 0 sends CLOSE(wire_code) first. */
void rbc__sess_close(struct rbc *c, enum rbc_close_reason reason, int peer_code, int error,
                     uint16_t wire_code);
void rbc__sess_tune(struct rbc *c); /* tells the server a changed interval, when it can */
int rbc__sess_send_data(struct rbc *c, const void *data, size_t len);

#endif
