/* ringbeat.h — public API of the ringbeat io_uring heartbeat engine (the only header to include).
 */
#ifndef RINGBEAT_H
#define RINGBEAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RB_VERSION_MAJOR  0
#define RB_VERSION_MINOR  2
#define RB_VERSION_PATCH  0
#define RB_VERSION_STRING "0.2.0"

/* Wire protocol v1 (docs/protocol.md). */
#define RB_PROTO_VERSION    1
#define RB_FRAME_HEADER_LEN 4
#define RB_CLIENT_ID_MAX    64

enum rb_frame_type {
    RB_FRAME_HELLO = 0x01,
    RB_FRAME_WELCOME = 0x02,
    RB_FRAME_PING = 0x03,
    RB_FRAME_PONG = 0x04,
    RB_FRAME_DATA = 0x05,
    RB_FRAME_CLOSE = 0x06,
    RB_FRAME_TUNE = 0x07, /* client: new interval and timeout; answered by WELCOME */
};
#define RB_FRAME_TYPE_MAX 8 /* array bound for per-type counters (index 0 unused) */

/* The protocols a listener can speak (docs/protocol.md, docs/websocket.md). */
enum rb_protocol {
    RB_PROTOCOL_V1 = 0, /* ringbeat wire protocol v1: "ADDR:PORT" */
    RB_PROTOCOL_WS = 1, /* WebSocket (RFC 6455): "ws://ADDR:PORT" */
};
#define RB_PROTOCOL_MAX 4 /* array bound for per-protocol counters */

/* What carries a listener's protocol (docs/tls.md); the scheme names both (tls://: v1 over TLS). */
enum rb_transport {
    RB_TRANSPORT_TCP = 0, /* the protocol's bytes straight on the socket */
    RB_TRANSPORT_TLS = 1, /* TLS 1.3 (1.2 with rb_config.tls_allow_12), handshake on the loop */
};

/* What a message is: WebSocket's binary and text opcodes; v1 DATA is binary. */
enum rb_data_kind {
    RB_DATA_BINARY = 0,
    RB_DATA_TEXT = 1, /* valid UTF-8 */
};

enum rb_mode {
    RB_MODE_SERVER = 0, /* the server PINGs after an interval of silence, the client answers PONG */
    RB_MODE_CLIENT = 1, /* the client PINGs every interval, the server answers PONG */
    RB_MODE_SILENT = 2, /* the client PINGs, the server only records that it is alive */
    RB_MODE_KERNEL = 3, /* nobody PINGs: TCP keepalive probes, answered by the peer's kernel */
};

/*
 * Why a connection closed. 1..63 are v1 CLOSE codes on the wire; 64 and up are local reasons, never
 * sent as such. Each protocol maps a reason to its own code (WebSocket: docs/websocket.md).
 */
enum rb_close_code {
    RB_CLOSE_NORMAL = 1,
    RB_CLOSE_TIMEOUT = 2,
    RB_CLOSE_PROTOCOL = 3,
    RB_CLOSE_FULL = 4,
    RB_CLOSE_SHUTDOWN = 5,
    RB_CLOSE_TOO_BIG = 6,
    RB_CLOSE_SLOW_READER = 7,  /* extension: the peer does not read; pending output hit its cap */
    RB_CLOSE_REPLACED = 8,     /* the same client id connected again (single session) */
    RB_CLOSE_UNAUTHORIZED = 9, /* no valid token for the client id (rb_config.auth) */
    /* 10 and up: local reasons of protocols other than v1 (v1 sends CLOSE(3) for them). */
    RB_CLOSE_BAD_PAYLOAD = 10, /* a message the protocol forbids (WebSocket: text not UTF-8) */
    RB_CLOSE_HANDSHAKE = 11,   /* an opening handshake refused (WebSocket: HTTP 4xx) */
    RB_CLOSE_PEER = 64,        /* the peer sent CLOSE */
    RB_CLOSE_EOF = 65,         /* the peer closed its side (FIN) */
    RB_CLOSE_RESET = 66,       /* the peer reset the connection, or another socket error */
};
#define RB_CLOSE_REASON_MAX 67 /* array bound for per-reason counters */

/* Liveness decays in steps; see docs/design.md ("the mark"). */
enum rb_liveness {
    RB_ALIVE = 0,
    RB_SUSPECT = 1,
    RB_DEAD = 2,
};

struct rb_engine;

/* What the application learns when a connection identifies itself (its first complete frame). */
struct rb_conn_info {
    uint64_t id;       /* stable for the connection's life; never reused soon */
    unsigned worker;   /* the worker thread that owns it */
    unsigned listener; /* index into rb_config.listen */
    enum rb_protocol protocol;
    enum rb_mode mode; /* effective values after clamping */
    uint32_t interval_ms;
    uint32_t timeout_ms;
    const char *client_id; /* from HELLO (or the WebSocket URL); not NUL-terminated; may be empty */
    size_t client_id_len;
    struct sockaddr_storage peer; /* ss_family == AF_UNSPEC unless rb_config.peer_addr */
    /* rb_config.proxy_protocol: peer is the client's address from the PROXY header; a LOCAL
     * header (the balancer's own connection, e.g. a health check) leaves the proxy's address
     * in peer and sets proxy_local. */
    bool proxy_local;
};

/*
 * Callbacks run on the owning worker thread, between completions of one loop turn. They may call
 * rb_send() and rb_close() (cheap on the owning thread) and rb_engine_stats(); they must not block,
 * must not call rb_engine_stop()'s waiters (rb_engine_wait, rb_engine_destroy), and must return
 * quickly: every connection of that worker waits for them. Data pointers are valid only during the
 * call. Any callback may be NULL.
 */
struct rb_callbacks {
    void (*on_open)(struct rb_engine *e, const struct rb_conn_info *info, void *user);
    /* A whole message (v1 DATA, or a WebSocket message after reassembly). */
    void (*on_data)(struct rb_engine *e, uint64_t id, enum rb_data_kind kind, const void *data,
                    size_t len, void *user);
    void (*on_liveness)(struct rb_engine *e, uint64_t id, enum rb_liveness from,
                        enum rb_liveness to, void *user);
    /* reason is an rb_close_code; for RB_CLOSE_PEER, peer_code is the code the peer sent. */
    void (*on_close)(struct rb_engine *e, uint64_t id, int reason, int peer_code, void *user);
};

#define RB_LISTEN_MAX    16
#define RB_WS_ORIGIN_MAX 16

/* An address prefix ("10.0.0.0/8", "::1", "192.0.2.7"): rb_parse_cidr, rb_cidr_match. */
struct rb_cidr {
    sa_family_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix_bits;
    uint8_t addr[16]; /* network byte order; 4 bytes used for AF_INET */
};
#define RB_PROXY_FROM_MAX 16

/* Keys that prove a client id (HMAC-SHA256 tokens, docs/presence.md): rb_auth_load. */
struct rb_auth;

struct rb_config {
    const char
        *listen[RB_LISTEN_MAX]; /* "[SCHEME://]ADDR:PORT" (rb_parse_listen); port 0 picks one */
    unsigned listen_count;      /* 0 means "0.0.0.0:7600" */
    unsigned workers;           /* 0: one per online core */
    enum rb_mode mode;          /* default for connections without HELLO */
    uint32_t interval_ms;       /* default heartbeat interval (30000) */
    uint32_t timeout_ms;        /* default liveness timeout (0: 3 x interval) */
    uint32_t min_interval_ms;   /* HELLO clamps (1000 .. 3600000) */
    uint32_t max_interval_ms;
    uint32_t max_timeout_ms;   /* HELLO clamp for timeout (0: 4 x max_interval) */
    uint32_t tick_ms;          /* wheel tick = detection precision (10) */
    uint32_t max_conns;        /* beyond: CLOSE(4) (default 1048576) */
    uint32_t max_frame;        /* largest message payload (4096) */
    uint32_t ring_entries;     /* SQ entries per ring (512; the CQ has 4x) */
    uint32_t buffers;          /* provided receive buffers per ring (128) */
    uint32_t buffer_size;      /* bytes per provided buffer (1024) */
    uint32_t batch_window_us;  /* wait up to this for a batch of completions (0: off) */
    uint32_t batch_size;       /* the batch that ends the window early (64) */
    uint32_t drain_timeout_ms; /* stop: time allowed to flush CLOSE(5) (5000) */
    uint32_t max_pending_out;  /* per-connection queued output cap, bytes (65536) */
    uint32_t slots_per_ring;   /* fixed-file slots per ring (0: from RLIMIT_NOFILE) */
    uint32_t max_conns_per_ip; /* per IPv4 address or IPv6 /64; beyond: CLOSE(4) (0: off) */
    uint32_t accept_rate;      /* accepts per second, engine-wide (0: unlimited) */
    bool peer_addr;            /* fetch each peer's address for on_open (costs 2 syscalls) */
    bool echo_data;            /* echo messages back when on_data is NULL (ringbeatd: true) */
    /* Every connection starts with a PROXY protocol v1 or v2 header, accepted only from the
     * proxy_from sources (none given: 127.0.0.0/8 and ::1); others, and a missing or malformed
     * header, are closed. Its address is the peer for max_conns_per_ip and on_open. */
    bool proxy_protocol;
    unsigned proxy_from_count;
    struct rb_cidr proxy_from[RB_PROXY_FROM_MAX];
    /* When set, an opening must carry a valid token for its client id (v1 HELLO token, the
     * WebSocket URL's token); else RB_CLOSE_UNAUTHORIZED. NULL: ids are taken on trust. The
     * keys must outlive the engine (rb_engine_set_auth swaps them). */
    const struct rb_auth *auth;
    struct rb_callbacks cb;
    void *user;
    /* WebSocket listeners (docs/websocket.md); the strings must outlive the engine. */
    const char *ws_path;                     /* the one path served (NULL: any); others: 404 */
    const char *ws_origin[RB_WS_ORIGIN_MAX]; /* Origins allowed (none: any); others: 403 */
    unsigned ws_origin_count;
    /* TLS listeners (tls://, docs/tls.md); the strings must outlive the engine. */
    const char *tls_cert_file;     /* PEM: leaf first, then the chain */
    const char *tls_key_file;      /* PEM private key */
    bool tls_allow_12;             /* --tls-min-version 1.2 (default: TLS 1.3 only) */
    const char *tls_ciphers;       /* TLS 1.2 cipher list, OpenSSL syntax (NULL: its default) */
    const char *tls_ciphersuites;  /* TLS 1.3 suites, OpenSSL syntax (NULL: the AES-GCM and
                                      ChaCha20-Poly1305 three, the only ones allowed) */
    bool tls_no_tickets;           /* no session tickets, so no resumption */
    uint32_t tls_ticket_rotate_s;  /* ticket key period (0: 3600); a ticket lives 1-2 periods */
    uint32_t tls_handshake_budget; /* ClientHellos a worker handles per loop turn; a later
                                      handshake record counts a quarter (0: 8; UINT32_MAX: no
                                      bound) */
    bool tls_keep_ssl;             /* benchmarks only: TLS 1.3 keeps OpenSSL's SSL object too */
    uint32_t handshake_timeout_ms; /* an opening handshake (TLS, WebSocket upgrade) not
                                      complete by then is closed (0: 5 s or timeout_ms,
                                      whichever is shorter) */
};

/* Fills cfg with the defaults listed above. */
void rb_config_init(struct rb_config *cfg);

/* Histograms share one layout: bucket i counts values <= bounds[i]; the last bucket is +Inf. */
#define RB_HIST_BUCKETS 32
extern const uint32_t rb_rtt_bounds_us[RB_HIST_BUCKETS - 1];
extern const uint32_t rb_lateness_bounds_ms[RB_HIST_BUCKETS - 1];

struct rb_hist {
    uint64_t bucket[RB_HIST_BUCKETS];
    uint64_t count;
    uint64_t sum; /* in the histogram's unit */
};

/* Protocol-neutral counters, one set per protocol (rb_stats.proto[enum rb_protocol]). */
struct rb_proto_stats {
    uint64_t conns;                                    /* open now */
    uint64_t accepted;                                 /* total */
    uint64_t opened;                                   /* identified themselves (on_open) */
    uint64_t pings_in, pongs_in, pings_out, pongs_out; /* heartbeats */
    uint64_t data_in, data_out;                        /* whole messages */
    uint64_t welcomes_out, closes_out; /* v1 WELCOME / WebSocket 101; close frames */
    uint64_t closed[RB_CLOSE_REASON_MAX];
};

/* The TLS transport's counters (connections are also counted under their protocol). */
enum rb_tls_alert_kind {
    RB_TLS_ALERT_KIND_CLOSE_NOTIFY,
    RB_TLS_ALERT_KIND_UNEXPECTED_MESSAGE,
    RB_TLS_ALERT_KIND_BAD_RECORD_MAC,
    RB_TLS_ALERT_KIND_RECORD_OVERFLOW,
    RB_TLS_ALERT_KIND_HANDSHAKE_FAILURE,
    RB_TLS_ALERT_KIND_DECODE_ERROR,
    RB_TLS_ALERT_KIND_ILLEGAL_PARAMETER,
    RB_TLS_ALERT_KIND_PROTOCOL_VERSION,
    RB_TLS_ALERT_KIND_INTERNAL_ERROR,
    RB_TLS_ALERT_KIND_OTHER,
    RB_TLS_ALERT_KINDS
};
struct rb_tls_stats {
    uint64_t conns;                     /* open now, handshake done */
    uint64_t handshaking;               /* open now, handshake in progress */
    uint64_t ssl_kept;                  /* open now, served by an OpenSSL SSL object (TLS 1.2) */
    uint64_t full, resumed;             /* handshakes completed */
    uint64_t failed, timeouts, aborted; /* handshakes ended otherwise (aborted: peer gone) */
    uint64_t budget_exhausted;          /* turns that left handshake work for the next */
    uint64_t key_updates_in, key_updates_out;
    uint64_t alerts_in;                      /* fatal alerts from peers */
    uint64_t alerts_out[RB_TLS_ALERT_KINDS]; /* alerts sent, close_notify included */
    uint64_t reloads, rotations;             /* engine-wide: rb_engine_stats only */
};

struct rb_stats {
    uint64_t conns;           /* open now */
    uint64_t by_liveness[3];  /* open now, by enum rb_liveness (dead ones are closing) */
    uint64_t by_weight[8];    /* open now, by remaining weight of the mark (0..7, capped) */
    uint64_t accepted;        /* total */
    uint64_t rejected_full;   /* CLOSE(4): --max-conns or no room */
    uint64_t rejected_per_ip; /* CLOSE(4): --max-conns-per-ip */
    uint64_t accept_paused;   /* times accepting paused for --accept-rate */
    uint64_t closed[RB_CLOSE_REASON_MAX];
    uint64_t frames_in[RB_FRAME_TYPE_MAX];  /* protocol v1 only, by frame type */
    uint64_t frames_out[RB_FRAME_TYPE_MAX]; /* protocol v1 only, by frame type */
    uint64_t bytes_in, bytes_out;
    uint64_t pong_unmatched; /* PONGs whose token we did not issue (liveness still counts) */
    uint64_t loop_turns, submits, sqes_submitted;
    uint64_t enobufs, cq_overflow, send_retries;
    uint64_t timer_fires;
    uint64_t pings_deferred;     /* PINGs held back a tick by pacing */
    uint64_t auth_refused[5];    /* openings refused, by enum rb_auth_result (index 0 unused) */
    uint64_t proxy_refused;      /* PROXY header from a source outside proxy_from */
    uint64_t proxy_bad;          /* PROXY header missing, malformed or too long */
    struct rb_hist rtt_us;       /* server-initiated PING to PONG */
    struct rb_hist lateness_ms;  /* dead detection minus (last frame + timeout) */
    uint64_t keepalive_timeouts; /* kernel mode: the kernel's verdict (ETIMEDOUT on receive) */
    uint64_t keepalive_failed;   /* kernel mode refused by the socket: fell back to server mode */
    uint64_t deaths_postponed;   /* a timeout judged with bytes unread in the socket (SIOCINQ) */
    uint64_t lag_turns;          /* turns late past the shedding threshold (accepts paused) */
    struct rb_hist loop_lag_ms;  /* each turn's start minus the wheel deadline it slept for */
    struct rb_proto_stats proto[RB_PROTOCOL_MAX];
    struct rb_tls_stats tls;
    unsigned workers, rings;
};

/* All functions that can fail return 0 or a negative errno. */
int rb_engine_create(const struct rb_config *cfg, struct rb_engine **out);
/* Binds every listener and starts the workers; returns once all of them accept. */
int rb_engine_start(struct rb_engine *e);
/* Asks every worker to drain: CLOSE(5) to each connection, then exit. Thread- and signal-safe. */
void rb_engine_stop(struct rb_engine *e);
/* The first error a worker stopped with, or 0 while every worker runs (or stopped cleanly). */
int rb_engine_error(struct rb_engine *e);
/* Waits for the workers to finish; returns the first worker error, or 0. */
int rb_engine_wait(struct rb_engine *e);
void rb_engine_destroy(struct rb_engine *e);

/* The port listener i is bound to (useful with port 0); 0 if there is no such listener. */
uint16_t rb_engine_port(const struct rb_engine *e, unsigned listener);

/* Re-reads tls_cert_file and tls_key_file for handshakes that start afterwards; connections up or
 * handshaking keep theirs, ticket keys stay. Any thread. -ENOTSUP without a TLS listener; on a
 * file error (-ENOENT, -EIO, -EKEYREJECTED) the old certificate stays. */
int rb_engine_tls_reload(struct rb_engine *e);

/*
 * Sends a binary message to connection id (v1 DATA, WebSocket binary frame). On the owning worker
 * (inside a callback) this queues the frame for the loop's next submit; from any other thread it
 * copies the payload into a bounded hand-off queue of the owning worker (one allocation, one CAS,
 * one eventfd write). -ENOENT: no such connection (from another thread only for an id that can
 * never be valid: the owner learns of a closed id after the hand-off and drops the message);
 * -EMSGSIZE: len > max_frame; -EAGAIN: hand-off queue full.
 */
int rb_send(struct rb_engine *e, uint64_t id, const void *data, size_t len);
/* The same for a text message (WebSocket text frame; v1 DATA). -EILSEQ: not valid UTF-8. */
int rb_send_text(struct rb_engine *e, uint64_t id, const char *text, size_t len);
/* Sends CLOSE(code) and releases the connection; same threading rules as rb_send. */
int rb_close(struct rb_engine *e, uint64_t id, uint16_t code);

/* Sums the workers' counters (relaxed reads: each counter is exact, the set is not a snapshot). */
void rb_engine_stats(struct rb_engine *e, struct rb_stats *out);
int rb_engine_worker_stats(struct rb_engine *e, unsigned worker, struct rb_stats *out);

/* jemalloc's view of the process (stats.allocated / stats.resident), 0 when unavailable. */
void rb_memory_stats(uint64_t *allocated_bytes, uint64_t *resident_bytes);

/*
 * Replaces the keys openings are checked against (e.g. after the key file changed), from any
 * thread; NULL turns checking off. The previous keys may still be read by a worker that is
 * checking an opening right now: free them only after rb_engine_destroy.
 */
void rb_engine_set_auth(struct rb_engine *e, const struct rb_auth *auth);

/*
 * Extra Prometheus text appended to rb_metrics_render (a component's own series, e.g. the Redis
 * presence component). fn writes at most cap bytes into buf and returns the length it needs,
 * like snprintf; it runs on the metrics thread.
 */
typedef size_t (*rb_metrics_extra_fn)(char *buf, size_t cap, void *user);
void rb_engine_set_metrics_extra(struct rb_engine *e, rb_metrics_extra_fn fn, void *user);

const char *rb_close_code_name(int code);
const char *rb_mode_name(enum rb_mode mode);
const char *rb_liveness_name(enum rb_liveness l);
const char *rb_protocol_name(enum rb_protocol p);
const char *rb_transport_name(enum rb_transport t);
const char *rb_tls_alert_kind_name(enum rb_tls_alert_kind k);

/* ---- The one clock and the one parser of each kind, shared by the engine and its tools. ---- */

/* The monotonic clock every part of ringbeat measures with, in nanoseconds. */
uint64_t rb_clock_ns(void);

/* Parses "250ms", "30s", "2m", "500us" or a bare number of milliseconds into *out_us. */
int rb_parse_duration_us(const char *s, uint64_t *out_us);
/* "server", "client" or "silent": 0 or -EINVAL. */
int rb_parse_mode(const char *s, enum rb_mode *out);
/*
 * A numeric socket address: "A.B.C.D:PORT", "[v6]:PORT", and ":PORT" or "*:PORT" for every IPv4
 * address (0.0.0.0). No name lookups. 0 or -EINVAL.
 */
int rb_parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *out_len);
/* The inverse, for logs: "A.B.C.D:PORT" or "[v6]:PORT" into out (RB_ADDR_STRLEN bytes suffice);
 * 0, -ENOSPC (truncated) or -EAFNOSUPPORT (out holds "-"). */
#define RB_ADDR_STRLEN 56
int rb_format_addr(const struct sockaddr_storage *ss, char *out, size_t cap);

/* "A.B.C.D[/N]" or "V6[/N]" (no brackets): 0 or -EINVAL; host bits beyond the prefix are cleared.
 */
int rb_parse_cidr(const char *s, struct rb_cidr *out);
/* Whether the address (AF_INET, AF_INET6; v4-mapped v6 matches v4 prefixes) lies in c. */
bool rb_cidr_match(const struct rb_cidr *c, const struct sockaddr_storage *ss);

/* ---- Tokens that prove a client id: HMAC-SHA256 with OpenSSL's libcrypto (engine/auth.c). ---- */

/* Why an opening was refused (rb_stats.auth_refused index); RB_AUTH_OK is 0. */
enum rb_auth_result {
    RB_AUTH_OK = 0,
    RB_AUTH_MISSING = 1,   /* no token */
    RB_AUTH_MALFORMED = 2, /* not "EXPIRY.MAC" with a decimal expiry and a 43-character MAC */
    RB_AUTH_EXPIRED = 3,   /* a valid MAC whose expiry has passed */
    RB_AUTH_FORGED = 4,    /* no key gives this MAC for this client id and expiry */
};
#define RB_TOKEN_MAX 64 /* longest token: 20 digits, '.', 43 base64url characters */

/*
 * Loads keys from a file: one key per line as hex (at least 16 bytes; `openssl rand -hex 32`),
 * blank lines and '#' comments skipped. The first key mints, every key verifies (so a new key
 * goes first and the previous one stays below it while its tokens expire). 0, -ENOENT/-EACCES
 * (cannot read), -EINVAL (a line that is not a key, or no key), -ENOMEM.
 */
int rb_auth_load(const char *path, struct rb_auth **out);
void rb_auth_free(struct rb_auth *a);
unsigned rb_auth_key_count(const struct rb_auth *a);
/*
 * Checks a token for client_id at now_unix_s (wall clock seconds): an enum rb_auth_result.
 * Constant-time in the MAC comparison; tries every key.
 */
enum rb_auth_result rb_auth_verify(const struct rb_auth *a, const void *client_id, size_t id_len,
                                   const char *token, size_t token_len, uint64_t now_unix_s);
/* Writes the token for client_id valid until expiry_unix_s with the first key, NUL-terminated;
 * returns its length, or -ENOSPC (cap < RB_TOKEN_MAX + 1), -ENOMEM. */
int rb_auth_mint(const struct rb_auth *a, const void *client_id, size_t id_len,
                 uint64_t expiry_unix_s, char *out, size_t cap);
const char *rb_auth_result_name(enum rb_auth_result r);

/* A listener: the protocol and transport its scheme names ("ws://", "tls://", "wss://"; none: v1
 * over TCP) and its
 * address. */
struct rb_listen_addr {
    enum rb_protocol protocol;
    enum rb_transport transport;
    struct sockaddr_storage addr;
    socklen_t addr_len;
};
/* "[SCHEME://]ADDR:PORT": -EINVAL (malformed), -EPROTONOSUPPORT (a scheme this build lacks). */
int rb_parse_listen(const char *s, struct rb_listen_addr *out);

/* ---- Logging: operator log lines on stderr (text or JSON), never one per heartbeat. ---- */
enum rb_log_level { RB_LOG_ERROR = 0, RB_LOG_WARN = 1, RB_LOG_INFO = 2, RB_LOG_DEBUG = 3 };
enum rb_log_format { RB_LOG_TEXT = 0, RB_LOG_JSON = 1 };

/* Process-wide settings, set once at start by the embedding program (ringbeatd's flags). */
void rb_log_configure(enum rb_log_level level, enum rb_log_format format);
/* Parses "error|warn|info|debug" / "text|json": 0 or -EINVAL. */
int rb_log_parse_level(const char *s, enum rb_log_level *out);
int rb_log_parse_format(const char *s, enum rb_log_format *out);
/* Reopens the log file (stderr redirected to a path) after rotation; no-op when none was given. */
int rb_log_set_file(const char *path);
int rb_log_reopen(void);
/* One event line: `event` is a short snake_case name, fmt the human message (key=value pairs). */
void rb_log(enum rb_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- Metrics: Prometheus text exposition on GET /metrics from a thread of its own. ---- */
struct rb_metrics;

/* Listens on addr ("ADDR:PORT", port 0 allowed) and serves from a thread of its own, so a slow
 * scraper never delays a heartbeat loop. */
int rb_metrics_start(struct rb_engine *e, const char *addr, struct rb_metrics **out);
uint16_t rb_metrics_port(const struct rb_metrics *m);
void rb_metrics_stop(struct rb_metrics *m);
/* Renders the whole exposition into buf; returns the length it needs (like snprintf). */
size_t rb_metrics_render(struct rb_engine *e, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
