/* load.h — ringbeat-load: configuration, results and the run entry point of the load generator. */
#ifndef RB_LOAD_H
#define RB_LOAD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "ringbeat.h"

#define LOAD_TARGETS_MAX    4096
#define LOAD_CODES          8        /* CLOSE codes 1..7; index 0 counts codes outside that range */
#define LOAD_LATE_ANSWER_US 1000000u /* a PONG sent later than this after its PING is ours */

struct load_cfg {
    struct sockaddr_in *targets; /* destinations, used round-robin by connection number */
    unsigned target_count;
    uint32_t connections;
    double rate_per_s;    /* connection attempts per second during the ramp */
    uint64_t duration_us; /* hold time after the ramp */
    unsigned workers;
    uint8_t mode;         /* enum rb_mode */
    uint32_t interval_ms; /* sent in HELLO; also our PING period (client/silent modes) */
    uint32_t timeout_ms;  /* sent in HELLO; 0 = server default */
    double silent_pct;
    uint64_t silent_after_us; /* since the connection's WELCOME */
    double reset_pct;
    uint64_t reset_after_us; /* since the connection's WELCOME */
    bool reconnect;
    uint64_t connect_timeout_us; /* connect (link timeout) and again HELLO -> WELCOME */
    uint32_t inflight_per_ring;  /* connects in flight per ring */
    uint32_t slots_per_ring;     /* 0: RLIMIT_NOFILE - margin */
    uint32_t buffers;            /* provided receive buffers per ring (power of two) */
    uint32_t buffer_size;
    bool close_frame;    /* send CLOSE(1) before closing at the end */
    uint8_t protocol;    /* enum rb_protocol: v1, or WebSocket (tools/load/load_ws.c) */
    const char *ws_path; /* WebSocket: the request path (NULL: "/") */
    bool tls;            /* over TLS 1.3 (load_tls.c) */
    bool tls_resume;     /* offer the newest session ticket: resumed handshakes */
    const char *tls_ciphersuites;
    uint64_t turn_us; /* shortest loop turn: completions are gathered this long (0: none) */
    bool quiet;       /* no live line */
    uint64_t seed;
    uint8_t client_ids;         /* enum load_client_ids */
    const struct rb_auth *auth; /* mint a token for each HELLO (NULL: none) */
    uint64_t token_expiry_s;    /* ... valid until then (Unix time) */
};
enum load_client_ids {
    LOAD_IDS_SHORT = 0, /* "load-N", N the connection's number */
    LOAD_IDS_UUID = 1,  /* 36 bytes, UUID-shaped, derived from the seed and N */
    LOAD_IDS_NONE = 2,
};

/* Counters of one worker; the worker writes, the reporter reads with relaxed loads. */
struct load_counters {
    uint64_t attempts, established, reconnected, connect_failures, welcome_timeouts;
    uint64_t up_now, pending_now; /* gauges (pending: connecting or waiting for WELCOME) */
    uint64_t pings_sent, pongs_received, pings_received, pongs_sent, pong_unmatched;
    uint64_t data_received;
    uint64_t closes_by_code[LOAD_CODES];
    uint64_t closed_eof, closed_reset; /* closed by the peer without a CLOSE frame */
    uint64_t false_deaths, protocol_errors, send_errors;
    uint64_t silenced, detected, detected_early;
    uint64_t
        early_max_us; /* largest earliness of an early detection (clamped to 0 in the histogram) */
    uint64_t resets, resets_fin_fallback;
    uint64_t late_answers;   /* PONGs we sent more than LOAD_LATE_ANSWER_US after the PING came */
    uint64_t self_inflicted; /* deaths after our own late answers or silence (not the server's) */
    uint64_t enobufs, rearms, cq_overflow, turns, submits;
    uint64_t first_attempt_us, last_established_us; /* since the run start; 0 = none */
    uint64_t last_connect_errno;                    /* diagnostics: the errno of a failed connect */
    uint64_t timeout_ms_max;                        /* largest effective timeout from WELCOME */
};

struct load_result {
    struct load_counters c;
    struct lhist rtt_us;
    struct lhist lateness_us;
    struct lhist send_lag_us;   /* PING sent minus its scheduled time: the generator's own lag */
    struct lhist answer_lag_us; /* PONG submitted minus the PING's reading */
    struct lhist loop_lag_us;   /* a turn's start minus when it was due: the loop's own lag */
    double duration_s;
    double ramp_s;
    uint64_t rings;
    uint64_t slots_per_ring;
    uint64_t rss_kb, rss_peak_kb;
    bool setsockopt_cmd; /* SO_LINGER via IORING_OP_URING_CMD was available */
    uint64_t tls_full, tls_resumed, tls_failed; /* --tls: handshakes, as the client saw them */
};

/* Runs the whole bounded experiment; 0 or -errno (setup failures). */
int load_run(const struct load_cfg *cfg, struct load_result *res);
/* Requests an early, clean stop (signal-safe). */
void load_request_stop(void);

#endif
