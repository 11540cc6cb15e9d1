/* ringbeat_client.h — public API of libringbeat-client: the app side of ringbeat heartbeats, with a
 * smart heartbeat that learns each network's NAT idle timeout (the only header to include). */
#ifndef RINGBEAT_CLIENT_H
#define RINGBEAT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RBC_VERSION_MAJOR  0
#define RBC_VERSION_MINOR  2
#define RBC_VERSION_PATCH  0
#define RBC_VERSION_STRING "0.2.0"

#define RBC_NETWORK_MAX   64 /* network label bytes kept, NUL included */
#define RBC_CLIENT_ID_MAX 64 /* longest client id a HELLO carries */
#define RBC_STATE_MAX     32 /* a persisted per-network record is at most this many bytes */

struct rbc;

/* Who sends heartbeats (docs/protocol.md section 3). Not the wire numbers: 0 is the default. */
enum rbc_mode {
    RBC_MODE_CLIENT = 0, /* the client PINGs every interval; the server answers PONG */
    RBC_MODE_SERVER = 1, /* the server PINGs after an interval of silence; the client answers */
};

/* The client's own view of the server. */
enum rbc_liveness {
    RBC_ALIVE = 0,
    RBC_SUSPECT = 1, /* a heartbeat is overdue by half the answer timeout */
    RBC_DEAD = 2,    /* overdue by the whole answer timeout: the connection is closed */
};

enum rbc_close_reason {
    RBC_CLOSED_PEER = 1,     /* the server sent CLOSE (peer_code: its code) */
    RBC_CLOSED_EOF,          /* the server ended the stream without CLOSE */
    RBC_CLOSED_ERROR,        /* a socket error (error: -errno) */
    RBC_CLOSED_DEAD,         /* a heartbeat went unanswered (the liveness went DEAD) */
    RBC_CLOSED_CONNECT,      /* connect() failed or took longer than connect_timeout_ms */
    RBC_CLOSED_RESOLVE,      /* the host name did not resolve (error: -errno or -EHOSTUNREACH) */
    RBC_CLOSED_HANDSHAKE,    /* no WELCOME within connect_timeout_ms of the HELLO */
    RBC_CLOSED_PROTOCOL,     /* the server broke protocol v1; it was sent CLOSE(3) or CLOSE(6) */
    RBC_CLOSED_TUNE_REFUSED, /* CLOSE(3) right after a TUNE: a server that predates TUNE */
    RBC_CLOSED_NETWORK,      /* rbc_network_changed() */
    RBC_CLOSED_STOPPED,      /* rbc_stop() */
};

/* Where the smart heartbeat stands on the current network. */
enum rbc_phase {
    RBC_PHASE_WARMUP = 0,     /* a new connection: the first heartbeats use the minimum */
    RBC_PHASE_PROBING = 1,    /* searching upwards for the network's edge */
    RBC_PHASE_STABLE = 2,     /* settled a margin below the last interval that held */
    RBC_PHASE_FOREGROUND = 3, /* pinned to the minimum by rbc_set_foreground() */
    RBC_PHASE_FIXED = 4,      /* learning is off (rbc_smart_config.fixed) */
};

/* The smart heartbeat's state (rbc_heartbeat_info, and the RBC_EV_INTERVAL event). */
struct rbc_heartbeat {
    char network[RBC_NETWORK_MAX];
    enum rbc_phase phase;
    uint32_t interval_ms;    /* what heartbeats use now (the minimum in warm-up or foreground) */
    uint32_t learned_ms;     /* the network's learned (stable) or probed interval */
    uint32_t failures;       /* failures at learned_ms since its last success */
    uint64_t failures_total; /* failed heartbeats over this handle's life (every cause) */
    uint64_t heartbeats;     /* heartbeats sent (client mode) or answered (server mode) */
    bool tune;               /* the server follows TUNE (false after a CLOSE(3) to one) */
};

enum rbc_event_type {
    RBC_EV_CONNECTING = 1, /* a connection attempt begins */
    RBC_EV_CONNECTED,      /* the server's WELCOME: the connection is open */
    RBC_EV_TUNED,          /* the server's WELCOME to a TUNE: new effective values */
    RBC_EV_LIVENESS,       /* the client's view of the server changed */
    RBC_EV_HEARTBEAT,      /* one heartbeat completed or failed */
    RBC_EV_INTERVAL,       /* the smart heartbeat changed its interval or phase */
    RBC_EV_DATA,           /* a DATA message from the server */
    RBC_EV_CLOSED,         /* the connection (or the attempt) ended */
};

struct rbc_event {
    enum rbc_event_type type;
    union {
        struct {
            uint32_t attempt; /* 1 for the first attempt after a success */
        } connecting;
        struct { /* RBC_EV_CONNECTED and RBC_EV_TUNED: the WELCOME's effective values */
            uint64_t conn_id;
            uint32_t interval_ms;
            uint32_t timeout_ms;
        } connected;
        struct {
            enum rbc_liveness from, to;
        } liveness;
        struct {
            bool ok;
            bool counted;         /* it taught the smart heartbeat something */
            uint32_t interval_ms; /* the idle interval it followed */
            uint32_t rtt_ms;      /* client mode: PING to PONG */
        } heartbeat;
        struct rbc_heartbeat interval;
        struct {
            const void *data; /* valid during the callback only */
            size_t len;
        } data;
        struct {
            enum rbc_close_reason reason;
            int peer_code;       /* RBC_CLOSED_PEER: the server's CLOSE code */
            int error;           /* -errno where one applies, else 0 */
            int32_t retry_in_ms; /* the next attempt, or -1: none (stopped) */
        } closed;
    } u;
};

/*
 * The smart heartbeat (docs/client.md). Zero fields take the defaults, which are the constants of
 * Tencent Mars (mars/stn/config.h), the open implementation of WeChat's smart heartbeat.
 */
struct rbc_smart_config {
    uint32_t min_interval_ms;    /* 210000 (3 min 30 s): where every search starts */
    uint32_t max_interval_ms;    /* 600000 (10 min) */
    uint32_t step_ms;            /* 60000: added after enough successes */
    uint32_t margin_ms;          /* 20000: kept below the last interval that held */
    uint32_t warmup;             /* 3: heartbeats at the minimum on each new connection */
    uint32_t successes_to_step;  /* 5: successes at an interval before the next step */
    uint32_t failures_to_settle; /* 2: failures that end a probe (or reset a stable value) */
    uint32_t reprobe_ms;         /* 604800000 (7 days) of heartbeats at a stable value */
    bool fixed;                  /* no learning: every heartbeat at min_interval_ms */
};

struct rbc_config {
    /* "HOST:PORT", "[V6]:PORT" or "tcp://HOST:PORT": protocol v1 over TCP. ws:// and tls:// are
     * reserved for the WebSocket and TLS transports (rbc_create: -EPROTONOSUPPORT for now). */
    const char *url;
    enum rbc_mode mode;
    const char *client_id; /* sent in the HELLO (at most 64 bytes); may be NULL */
    const char *network;   /* the initial network label ("wifi:home", "cell:46001"); NULL: "" */
    bool foreground;       /* start pinned to the minimum interval */
    struct rbc_smart_config smart;
    uint32_t answer_timeout_ms;  /* 10000: a PING's PONG, or a server PING's lateness */
    uint32_t connect_timeout_ms; /* 10000: TCP connect, then again for the WELCOME */
    uint32_t backoff_min_ms;     /* 1000: first reconnect delay bound (full jitter: 0..bound) */
    uint32_t backoff_max_ms;     /* 120000: the bound doubles per failed attempt up to this */
    uint32_t max_frame;          /* 4096: largest DATA payload sent or accepted (<= 65535) */
    uint32_t send_buffer;        /* 65536: bytes of output queued before rbc_send says -ENOBUFS */
    uint64_t seed;               /* reconnect jitter seed; 0: from getrandom() */

    /* Every event, on the thread that called into the library (or the helper thread). The
     * callback may call any rbc_* function except rbc_destroy and rbc_thread_stop. */
    void (*on_event)(struct rbc *c, const struct rbc_event *ev, void *user);
    /* Persistence of learned intervals, per network label. The library writes nothing itself:
     * load copies up to cap bytes of what store was last given for that label and returns their
     * number (0: nothing known; a negative value is treated as 0); store keeps len bytes. */
    int (*load)(void *user, const char *network, void *buf, size_t cap);
    void (*store)(void *user, const char *network, const void *buf, size_t len);
    void *user;
};

struct rbc_stats {
    uint64_t attempts; /* connection attempts */
    uint64_t opened;   /* WELCOMEs to a HELLO */
    uint64_t pings_sent, pongs_received;
    uint64_t pings_received, pongs_sent;
    uint64_t heartbeats_ok, heartbeats_failed;
    uint64_t tunes_sent, tunes_refused;
    uint64_t data_sent, data_received;
    uint64_t bytes_sent, bytes_received;
};

/* All functions that can fail return 0 or a negative errno. */

/* -EINVAL (a bad field), -EPROTONOSUPPORT (a URL scheme this build lacks), -ENOMEM, or an error
 * creating the handle's descriptors. Nothing connects before rbc_start(). */
int rbc_create(const struct rbc_config *cfg, struct rbc **out);
/* Stops the helper thread, sends CLOSE(1), stores the learned state and frees everything. */
void rbc_destroy(struct rbc *c);

/* Connects now and keeps reconnecting (with backoff) until rbc_stop(). */
int rbc_start(struct rbc *c);
/* Sends CLOSE(1), closes, and stops reconnecting. */
int rbc_stop(struct rbc *c);

/*
 * Event-loop integration. rbc_fd() is one descriptor, stable for the handle's life: wait for it
 * to be READABLE (poll POLLIN, epoll EPOLLIN, libuv UV_READABLE, ALooper_addFd EVENT_INPUT) and
 * call rbc_step(). It folds the socket's read/write interest and the library's timer into one
 * epoll descriptor, so a loop registers it once even though the socket changes on every
 * reconnect. rbc_timeout_ms() is the time until the library's next deadline (-1: none), for
 * loops that prefer a timeout, or for scheduling a wake-up alarm while the device sleeps.
 */
int rbc_fd(const struct rbc *c);
int rbc_timeout_ms(struct rbc *c);
/* Does whatever is due: reads, writes, heartbeats, timeouts, reconnects. Never blocks (except
 * in getaddrinfo() for a host name: see docs/client.md). */
int rbc_step(struct rbc *c);

/* An optional thread of the library's own that waits and steps, for apps without a loop. Once
 * it runs, events arrive on it and every rbc_* call may come from any thread. */
int rbc_thread_start(struct rbc *c);
int rbc_thread_stop(struct rbc *c);

/* Queues a DATA message: -ENOTCONN (not open), -EMSGSIZE (> max_frame), -ENOBUFS (no room). */
int rbc_send(struct rbc *c, const void *data, size_t len);

/* The app moved to another network: reconnect at once (no backoff), with the interval learned
 * for label (the store callback's key; at most RBC_NETWORK_MAX - 1 bytes are kept). */
int rbc_network_changed(struct rbc *c, const char *label);
/* Foreground: heartbeats at the minimum interval (the server is told with TUNE). */
int rbc_set_foreground(struct rbc *c, bool foreground);

int rbc_heartbeat_info(struct rbc *c, struct rbc_heartbeat *out);
int rbc_stats(struct rbc *c, struct rbc_stats *out);

/* The clock every time in this library is measured on: CLOCK_BOOTTIME in milliseconds, which
 * keeps counting while the device sleeps (as a NAT's idle timer does). */
uint64_t rbc_clock_ms(void);

const char *rbc_close_reason_name(enum rbc_close_reason r);
const char *rbc_liveness_name(enum rbc_liveness l);
const char *rbc_phase_name(enum rbc_phase p);

#ifdef __cplusplus
}
#endif
#endif
