/* ringbeatd_flags.c — the daemon's command line: --help text, flags, their checks, into struct
 * options. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "presence.h"
#include "ringbeat.h"
#include "ringbeatd.h"

static const char usage_text[] =
    "Usage: ringbeatd [flags]\n"
    "Keeps many long-lived TCP connections alive with heartbeats and closes dead ones on time.\n"
    "\n"
    "  --listen [SCHEME://]ADDR:PORT  listen here (repeatable, up to 16; default 0.0.0.0:7600;\n"
    "                         [v6]:PORT for IPv6, :PORT for all IPv4; port 0 picks a free one;\n"
    "                         no scheme or tcp:// serves protocol v1, ws:// WebSocket, tls://\n"
    "                         v1 over TLS, wss:// WebSocket over TLS)\n"
    "  --workers N            worker threads, one io_uring loop each (default: online cores)\n"
    "  --mode M               server|client|silent|kernel for peers that send no HELLO (default "
    "server)\n"
    "  --interval D           default heartbeat interval (default 30s)\n"
    "  --timeout D            silence after which a peer is dead (default 3 x interval)\n"
    "  --min-interval D       smallest interval a HELLO may ask for (default 1s)\n"
    "  --max-interval D       largest interval a HELLO may ask for (default 1h)\n"
    "  --max-timeout D        largest timeout a HELLO may ask for (default 4 x max-interval)\n"
    "  --tick D               timer wheel tick = detection precision (default 10ms)\n"
    "  --max-conns N          connections beyond this get CLOSE(4) (default 1048576)\n"
    "  --max-conns-per-ip N   per IPv4 address or IPv6 /64, beyond: CLOSE(4) (default 0: off)\n"
    "  --accept-rate N        new connections accepted per second (default 0: unlimited)\n"
    "  --max-frame N          largest DATA payload in bytes, <= 65535 (default 4096)\n"
    "  --ring-entries N       submission queue entries per ring (default 512)\n"
    "  --buffers N            receive buffers per ring, a power of two (default 128)\n"
    "  --buffer-size BYTES    bytes per receive buffer (default 1024)\n"
    "  --slots-per-ring N     fixed-file slots per ring (default: from RLIMIT_NOFILE)\n"

    "  --batch-window D       wait up to D to batch completions, e.g. 500us (default 0: off)\n"
    "  --batch-size N         completions that end a batch window early (default 64)\n"
    "  --drain-timeout D      on SIGTERM, time allowed to flush CLOSE(5) (default 5s)\n"
    "  --max-pending-out BYTES  queued output per connection before CLOSE(7) (default 64k)\n"
    "  --ws-path PATH         WebSocket listeners serve only this path, others get 404\n"
    "                         (default: any path)\n"
    "  --ws-origin ORIGIN     allow this Origin on WebSocket listeners (repeatable, up to 16;\n"
    "                         default: any); others get 403\n"
    "  --tls-cert FILE        certificate chain (PEM, leaf first) for tls:// listeners\n"
    "  --tls-key FILE         its private key (PEM); SIGHUP reloads both for new connections\n"
    "  --tls-min-version V    1.3 (default) or 1.2 (TLS 1.2 keeps OpenSSL's ~15 KB per "
    "connection)\n"
    "  --tls-ciphers LIST     TLS 1.2 cipher list, OpenSSL syntax\n"
    "  --tls-ciphersuites L   TLS 1.3 suites, OpenSSL syntax (AES-GCM and ChaCha20-Poly1305 only)\n"
    "  --tls-no-tickets       no session tickets (every reconnect is a full handshake)\n"
    "  --tls-ticket-rotate D  ticket key period; a ticket lives 1-2 periods (default 1h)\n"
    "  --tls-handshake-budget N  new TLS handshakes per worker per loop turn, 0: no bound\n"
    "                         (default 8): a reconnect storm cannot delay heartbeats\n"
    "  --handshake-timeout D  close an opening handshake (TLS, WebSocket upgrade) not done by\n"
    "                         then (default 5s, or the heartbeat timeout when shorter)\n"
    "  --metrics ADDR:PORT    serve Prometheus metrics on GET /metrics\n"
    "  --redis URL            publish presence to Redis and read this node's inbox:\n"
    "                         redis://HOST[:PORT][/DB] or unix:///PATH[?db=N] (docs/presence.md)\n"
    "  --redis-password-file FILE  Redis AUTH password (or RINGBEAT_REDIS_PASSWORD)\n"
    "  --node NAME            this node's name in Redis (default: the host name)\n"
    "  --redis-prefix P       key prefix (default ringbeat:)\n"
    "  --redis-events-max N   MAXLEN ~ of the events stream (default 1000000)\n"
    "  --redis-node-ttl D     TTL of the node key, refreshed every third (default 30s)\n"
    "  --redis-queue N        presence events queued for Redis, a power of two (default 65536)\n"
    "  --single-session       a client id connects once: a newer session closes the older\n"
    "                         one with CLOSE(8), on whichever node it is (with --redis)\n"
    "  --auth-secret-file FILE  accept a client id only with a token from these keys\n"
    "                         (HMAC-SHA256; SIGHUP rereads the file; docs/presence.md)\n"
    "  --proxy-protocol       every connection starts with a PROXY v1/v2 header\n"
    "  --proxy-from CIDR      sources allowed to send it (repeatable; default 127.0.0.0/8, ::1)\n"
    "  --log-level L          error|warn|info|debug (default info)\n"
    "  --log-format F         text|json (default text)\n"
    "  --log-file PATH        log here instead of stderr; SIGHUP reopens it\n"
    "  --stats-interval D     log a stats line this often; 0 turns it off (default 10s)\n"
    "  -h, --help             print this help and exit\n"
    "  -V, --version          print the version and exit\n"
    "\n"
    "Durations take a us, ms, s, m or h suffix; a bare number is milliseconds.\n"
    "Sizes (BYTES) take an optional k, m or g suffix (powers of 1024).\n"
    "Signals: SIGTERM/SIGINT drain and exit, SIGUSR1 logs a stats line, SIGHUP reopens the log\n"
    "and reloads --tls-cert/--tls-key.\n"
    "Exit status: 0 clean shutdown, 1 runtime failure (e.g. cannot bind), 2 bad command line.\n";

enum {
    OPT_LISTEN = 256,
    OPT_WORKERS,
    OPT_MODE,
    OPT_INTERVAL,
    OPT_TIMEOUT,
    OPT_MIN_INTERVAL,
    OPT_MAX_INTERVAL,
    OPT_MAX_TIMEOUT,
    OPT_TICK,
    OPT_MAX_CONNS,
    OPT_MAX_CONNS_PER_IP,
    OPT_ACCEPT_RATE,
    OPT_MAX_FRAME,
    OPT_RING_ENTRIES,
    OPT_BUFFERS,
    OPT_BUFFER_SIZE,
    OPT_SLOTS_PER_RING,
    OPT_BATCH_WINDOW,
    OPT_BATCH_SIZE,
    OPT_DRAIN_TIMEOUT,
    OPT_MAX_PENDING_OUT,
    OPT_METRICS,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_LOG_FILE,
    OPT_STATS_INTERVAL,
    OPT_REDIS,
    OPT_REDIS_PASSWORD_FILE,
    OPT_NODE,
    OPT_REDIS_PREFIX,
    OPT_REDIS_EVENTS_MAX,
    OPT_REDIS_NODE_TTL,
    OPT_REDIS_QUEUE,
    OPT_SINGLE_SESSION,
    OPT_AUTH_SECRET_FILE,
    OPT_PROXY_PROTOCOL,
    OPT_PROXY_FROM,
    OPT_WS_PATH,
    OPT_WS_ORIGIN,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_MIN_VERSION,
    OPT_TLS_CIPHERS,
    OPT_TLS_CIPHERSUITES,
    OPT_TLS_NO_TICKETS,
    OPT_TLS_TICKET_ROTATE,
    OPT_TLS_HANDSHAKE_BUDGET,
    OPT_TLS_KEEP_SSL,
    OPT_HANDSHAKE_TIMEOUT,
};

static const struct option long_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"mode", required_argument, NULL, OPT_MODE},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"min-interval", required_argument, NULL, OPT_MIN_INTERVAL},
    {"max-interval", required_argument, NULL, OPT_MAX_INTERVAL},
    {"max-timeout", required_argument, NULL, OPT_MAX_TIMEOUT},
    {"tick", required_argument, NULL, OPT_TICK},
    {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
    {"max-conns-per-ip", required_argument, NULL, OPT_MAX_CONNS_PER_IP},
    {"accept-rate", required_argument, NULL, OPT_ACCEPT_RATE},
    {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
    {"ring-entries", required_argument, NULL, OPT_RING_ENTRIES},
    {"buffers", required_argument, NULL, OPT_BUFFERS},
    {"buffer-size", required_argument, NULL, OPT_BUFFER_SIZE},
    {"slots-per-ring", required_argument, NULL, OPT_SLOTS_PER_RING},
    {"batch-window", required_argument, NULL, OPT_BATCH_WINDOW},
    {"batch-size", required_argument, NULL, OPT_BATCH_SIZE},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"max-pending-out", required_argument, NULL, OPT_MAX_PENDING_OUT},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"stats-interval", required_argument, NULL, OPT_STATS_INTERVAL},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"redis-password-file", required_argument, NULL, OPT_REDIS_PASSWORD_FILE},
    {"node", required_argument, NULL, OPT_NODE},
    {"redis-prefix", required_argument, NULL, OPT_REDIS_PREFIX},
    {"redis-events-max", required_argument, NULL, OPT_REDIS_EVENTS_MAX},
    {"redis-node-ttl", required_argument, NULL, OPT_REDIS_NODE_TTL},
    {"redis-queue", required_argument, NULL, OPT_REDIS_QUEUE},
    {"single-session", no_argument, NULL, OPT_SINGLE_SESSION},
    {"auth-secret-file", required_argument, NULL, OPT_AUTH_SECRET_FILE},
    {"proxy-protocol", no_argument, NULL, OPT_PROXY_PROTOCOL},
    {"proxy-from", required_argument, NULL, OPT_PROXY_FROM},
    {"ws-path", required_argument, NULL, OPT_WS_PATH},
    {"ws-origin", required_argument, NULL, OPT_WS_ORIGIN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-min-version", required_argument, NULL, OPT_TLS_MIN_VERSION},
    {"tls-ciphers", required_argument, NULL, OPT_TLS_CIPHERS},
    {"tls-ciphersuites", required_argument, NULL, OPT_TLS_CIPHERSUITES},
    {"tls-no-tickets", no_argument, NULL, OPT_TLS_NO_TICKETS},
    {"tls-ticket-rotate", required_argument, NULL, OPT_TLS_TICKET_ROTATE},
    {"tls-handshake-budget", required_argument, NULL, OPT_TLS_HANDSHAKE_BUDGET},
    /* Benchmarks only (not in --help): TLS 1.3 keeps OpenSSL's SSL object, to measure it. */
    {"tls-keep-ssl", no_argument, NULL, OPT_TLS_KEEP_SSL},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static void __attribute__((noreturn, format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "ringbeatd: %s (see --help)\n", msg);
    exit(EXIT_USAGE);
}

static uint64_t parse_uint(const char *flag, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        usage_error("%s: '%s' is not a number", flag, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        usage_error("%s: '%s' is not a number", flag, s);
    if (errno != 0 || v < min || v > max)
        usage_error("%s: %s is out of range %" PRIu64 "..%" PRIu64, flag, s, min, max);
    return v;
}

static uint64_t parse_bytes(const char *flag, const char *s, uint64_t min, uint64_t max)
{
    char buf[32];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(buf))
        usage_error("%s: '%s' is not a size", flag, s);
    memcpy(buf, s, n + 1);
    uint64_t mult = 1;
    char last = buf[n - 1];
    if (last == 'k' || last == 'K')
        mult = 1024;
    else if (last == 'm' || last == 'M')
        mult = 1024 * 1024;
    else if (last == 'g' || last == 'G')
        mult = 1024 * 1024 * 1024;
    if (mult != 1)
        buf[n - 1] = '\0';
    uint64_t v = parse_uint(flag, buf, 0, UINT64_MAX / mult) * mult;
    if (v < min || v > max)
        usage_error("%s: %s is out of range %" PRIu64 "..%" PRIu64 " bytes", flag, s, min, max);
    return v;
}

static uint64_t parse_duration(const char *flag, const char *s)
{
    uint64_t us;
    if (rb_parse_duration_us(s, &us) != 0)
        usage_error("%s: '%s' is not a duration (e.g. 500us, 250ms, 30s, 2m)", flag, s);
    return us;
}

/* Whole milliseconds in [min_ms, max_ms]; the engine's clocks count milliseconds. */
static uint32_t parse_duration_ms(const char *flag, const char *s, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t us = parse_duration(flag, s);
    if (us % 1000 != 0)
        usage_error("%s: '%s' is not a whole number of milliseconds", flag, s);
    uint64_t ms = us / 1000;
    if (ms < min_ms || ms > max_ms)
        usage_error("%s: %s is out of range %" PRIu64 "ms..%" PRIu64 "ms", flag, s, min_ms, max_ms);
    return (uint32_t)ms;
}

/* Node names appear in key names and in CLIENT SETNAME: no blanks, nothing exotic. */
static bool valid_node(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._-:", s[i])))
            return false;
    return true;
}

/* The engine's own parsers, so the daemon and the engine agree on what an address is. */
static bool valid_addr(const char *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return rb_parse_addr(s, &ss, &len) == 0;
}

void rbd_parse_args(int argc, char **argv, struct options *o)
{
    struct rb_config *c = &o->cfg;
    rb_config_init(c);
    o->metrics_addr = NULL;
    o->log_file = NULL;
    o->log_level = RB_LOG_INFO;
    o->log_format = RB_LOG_TEXT;
    o->stats_interval_ms = 10000;
    o->tls = false;
    o->timeout_given = false;
    o->min_interval_given = false;
    o->max_interval_given = false;
    c->echo_data = true;
    c->listen_count = 0;
    rbp_config_init(&o->presence);
    o->redis_password_file = NULL;
    o->auth_secret_file = NULL;

    const uint32_t hour_ms = 3600u * 1000;
    const uint32_t day_ms = 24u * hour_ms;
    opterr = 0; /* our own one-line messages, always naming the flag */
    int opt;
    while ((opt = getopt_long(argc, argv, ":hV", long_options, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        switch (opt) {
        case OPT_LISTEN: {
            if (c->listen_count == RB_LISTEN_MAX)
                usage_error("--listen: at most %d addresses", RB_LISTEN_MAX);
            struct rb_listen_addr la;
            int rc = rb_parse_listen(optarg, &la);
            if (rc == -EPROTONOSUPPORT)
                usage_error("--listen: '%s' names a protocol this build does not serve", optarg);
            if (rc < 0)
                usage_error("--listen: '%s' is not [SCHEME://]ADDR:PORT (e.g. 0.0.0.0:7600, "
                            "[::1]:7600)",
                            optarg);
            c->listen[c->listen_count++] = optarg;
            o->tls |= la.transport == RB_TRANSPORT_TLS;
            break;
        }
        case OPT_WORKERS:
            c->workers = (unsigned)parse_uint("--workers", optarg, 1, 256);
            break;
        case OPT_MODE:
            if (rb_parse_mode(optarg, &c->mode) < 0)
                usage_error("--mode: '%s' is not server, client, silent or kernel", optarg);
            break;
        case OPT_INTERVAL:
            c->interval_ms = parse_duration_ms("--interval", optarg, 1, day_ms);
            break;
        case OPT_TIMEOUT:
            c->timeout_ms = parse_duration_ms("--timeout", optarg, 1, day_ms);
            o->timeout_given = true;
            break;
        case OPT_MIN_INTERVAL:
            c->min_interval_ms = parse_duration_ms("--min-interval", optarg, 1, day_ms);
            o->min_interval_given = true;
            break;
        case OPT_MAX_INTERVAL:
            c->max_interval_ms = parse_duration_ms("--max-interval", optarg, 1, day_ms);
            o->max_interval_given = true;
            break;
        case OPT_MAX_TIMEOUT:
            c->max_timeout_ms = parse_duration_ms("--max-timeout", optarg, 1, 4 * day_ms);
            break;
        case OPT_TICK:
            c->tick_ms = parse_duration_ms("--tick", optarg, 1, 1000);
            break;
        case OPT_MAX_CONNS:
            c->max_conns = (uint32_t)parse_uint("--max-conns", optarg, 1, UINT32_MAX);
            break;
        case OPT_MAX_CONNS_PER_IP:
            c->max_conns_per_ip = (uint32_t)parse_uint("--max-conns-per-ip", optarg, 0, UINT32_MAX);
            break;
        case OPT_ACCEPT_RATE:
            c->accept_rate = (uint32_t)parse_uint("--accept-rate", optarg, 0, 10000000);
            break;
        case OPT_MAX_FRAME:
            /* The header's length field is 16 bits. */
            c->max_frame = (uint32_t)parse_uint("--max-frame", optarg, 1, 65535);
            break;
        case OPT_RING_ENTRIES:
            c->ring_entries = (uint32_t)parse_uint("--ring-entries", optarg, 8, 32768);
            break;
        case OPT_BUFFERS: {
            /* The kernel's provided-buffer rings take a power of two below 65536 entries. */
            uint64_t n = parse_uint("--buffers", optarg, 1, 32768);
            if ((n & (n - 1)) != 0)
                usage_error("--buffers: %s is not a power of two", optarg);
            c->buffers = (uint32_t)n;
            break;
        }
        case OPT_BUFFER_SIZE:
            c->buffer_size = (uint32_t)parse_bytes("--buffer-size", optarg, 64, 1024 * 1024);
            break;
        case OPT_SLOTS_PER_RING:
            c->slots_per_ring = (uint32_t)parse_uint("--slots-per-ring", optarg, 1, 1u << 20);
            break;
        case OPT_BATCH_WINDOW: {
            uint64_t us = parse_duration("--batch-window", optarg);
            if (us > 1000000)
                usage_error("--batch-window: %s is longer than 1s", optarg);
            c->batch_window_us = (uint32_t)us;
            break;
        }
        case OPT_BATCH_SIZE:
            c->batch_size = (uint32_t)parse_uint("--batch-size", optarg, 1, 65536);
            break;
        case OPT_DRAIN_TIMEOUT:
            c->drain_timeout_ms = parse_duration_ms("--drain-timeout", optarg, 0, hour_ms);
            break;
        case OPT_MAX_PENDING_OUT:
            c->max_pending_out =
                (uint32_t)parse_bytes("--max-pending-out", optarg, 256, 1024u * 1024 * 1024);
            break;
        case OPT_METRICS:
            if (!valid_addr(optarg))
                usage_error("--metrics: '%s' is not ADDR:PORT (e.g. 127.0.0.1:9600)", optarg);
            o->metrics_addr = optarg;
            break;
        case OPT_LOG_LEVEL:
            if (rb_log_parse_level(optarg, &o->log_level) != 0)
                usage_error("--log-level: '%s' is not error, warn, info or debug", optarg);
            break;
        case OPT_LOG_FORMAT:
            if (rb_log_parse_format(optarg, &o->log_format) != 0)
                usage_error("--log-format: '%s' is not text or json", optarg);
            break;
        case OPT_LOG_FILE:
            if (optarg[0] == '\0')
                usage_error("--log-file: empty path");
            o->log_file = optarg;
            break;
        case OPT_STATS_INTERVAL: {
            uint64_t us = parse_duration("--stats-interval", optarg);
            if (us != 0 && us < 100000)
                usage_error("--stats-interval: %s is shorter than 100ms (0 turns it off)", optarg);
            if (us > (uint64_t)day_ms * 1000)
                usage_error("--stats-interval: %s is longer than a day", optarg);
            o->stats_interval_ms = us / 1000;
            break;
        }
        case OPT_REDIS: {
            int rc = rbp_url_check(optarg);
            if (rc == -EPERM)
                usage_error("--redis: no password in the URL (it would show in the process "
                            "list): use --redis-password-file or RINGBEAT_REDIS_PASSWORD");
            if (rc < 0)
                usage_error("--redis: '%s' is not redis://HOST[:PORT][/DB] or unix:///PATH",
                            optarg);
            o->presence.url = optarg;
            break;
        }
        case OPT_REDIS_PASSWORD_FILE:
            o->redis_password_file = optarg;
            break;
        case OPT_NODE:
            if (!valid_node(optarg))
                usage_error("--node: '%s' is not 1..64 of A-Z a-z 0-9 . _ - :", optarg);
            o->presence.node = optarg;
            break;
        case OPT_REDIS_PREFIX:
            if (strlen(optarg) > 100 || strpbrk(optarg, " \t\r\n"))
                usage_error("--redis-prefix: '%s' is longer than 100 bytes or has blanks", optarg);
            o->presence.prefix = optarg;
            break;
        case OPT_REDIS_EVENTS_MAX:
            o->presence.events_max = parse_uint("--redis-events-max", optarg, 1, UINT32_MAX);
            break;
        case OPT_REDIS_NODE_TTL:
            o->presence.node_ttl_ms = parse_duration_ms("--redis-node-ttl", optarg, 1000, day_ms);
            break;
        case OPT_REDIS_QUEUE: {
            uint64_t n = parse_uint("--redis-queue", optarg, 64, 1u << 24);
            if ((n & (n - 1)) != 0)
                usage_error("--redis-queue: %s is not a power of two", optarg);
            o->presence.queue_events = (uint32_t)n;
            break;
        }
        case OPT_SINGLE_SESSION:
            o->presence.single_session = true;
            break;
        case OPT_AUTH_SECRET_FILE:
            o->auth_secret_file = optarg;
            break;
        case OPT_PROXY_PROTOCOL:
            c->proxy_protocol = true;
            break;
        case OPT_PROXY_FROM:
            if (c->proxy_from_count == RB_PROXY_FROM_MAX)
                usage_error("--proxy-from: at most %d prefixes", RB_PROXY_FROM_MAX);
            if (rb_parse_cidr(optarg, &c->proxy_from[c->proxy_from_count]) < 0)
                usage_error("--proxy-from: '%s' is not ADDR[/BITS] (e.g. 10.0.0.0/8, ::1)", optarg);
            c->proxy_from_count++;
            break;
        case OPT_WS_PATH:
            /* Compared with the request's path as sent (origin-form: it starts with '/'). */
            if (optarg[0] != '/' || strpbrk(optarg, "? \t\r\n"))
                usage_error("--ws-path: '%s' is not a path like /heartbeat (no query)", optarg);
            c->ws_path = optarg;
            break;
        case OPT_WS_ORIGIN:
            if (c->ws_origin_count == RB_WS_ORIGIN_MAX)
                usage_error("--ws-origin: at most %d origins", RB_WS_ORIGIN_MAX);
            if (!strstr(optarg, "://") || strpbrk(optarg, " \t\r\n"))
                usage_error("--ws-origin: '%s' is not an origin like https://example.com", optarg);
            c->ws_origin[c->ws_origin_count++] = optarg;
            break;
        case OPT_TLS_CERT:
        case OPT_TLS_KEY:
            if (optarg[0] == '\0' || access(optarg, R_OK) != 0)
                usage_error("%s: cannot read '%s'", flag, optarg);
            *(opt == OPT_TLS_CERT ? &c->tls_cert_file : &c->tls_key_file) = optarg;
            break;
        case OPT_TLS_MIN_VERSION:
            if (strcmp(optarg, "1.2") != 0 && strcmp(optarg, "1.3") != 0)
                usage_error("--tls-min-version: '%s' is not 1.2 or 1.3", optarg);
            c->tls_allow_12 = strcmp(optarg, "1.2") == 0;
            break;
        case OPT_TLS_CIPHERS:
            c->tls_ciphers = optarg; /* checked by OpenSSL when the engine is created */
            break;
        case OPT_TLS_CIPHERSUITES:
            c->tls_ciphersuites = optarg;
            break;
        case OPT_TLS_NO_TICKETS:
            c->tls_no_tickets = true;
            break;
        case OPT_TLS_TICKET_ROTATE: {
            uint32_t ms = parse_duration_ms("--tls-ticket-rotate", optarg, 1000, 7 * day_ms);
            if (ms % 1000 != 0)
                usage_error("--tls-ticket-rotate: '%s' is not a whole number of seconds", optarg);
            c->tls_ticket_rotate_s = ms / 1000;
            break;
        }
        case OPT_TLS_HANDSHAKE_BUDGET: {
            uint64_t n = parse_uint("--tls-handshake-budget", optarg, 0, 1000000);
            c->tls_handshake_budget = n ? (uint32_t)n : UINT32_MAX;
            break;
        }
        case OPT_TLS_KEEP_SSL:
            c->tls_keep_ssl = true;
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            c->handshake_timeout_ms = parse_duration_ms("--handshake-timeout", optarg, 1, hour_ms);
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(EXIT_OK);
        case 'V':
            printf("ringbeatd %s\n", RB_VERSION_STRING);
            exit(EXIT_OK);
        case ':':
            usage_error("%s needs a value", flag);
        default:
            if (optopt != 0 && optopt < 256)
                usage_error("unknown flag '-%c'", optopt);
            usage_error("unknown flag '%s'", flag);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (c->proxy_from_count && !c->proxy_protocol)
        usage_error("--proxy-from is meaningless without --proxy-protocol");
    if (o->redis_password_file && !o->presence.url)
        usage_error("--redis-password-file needs --redis");
    if (!o->presence.node) {
        if (gethostname(o->node_buf, sizeof(o->node_buf) - 1) < 0 || !valid_node(o->node_buf))
            usage_error("--node: the host name is not a usable node name; give --node");
        o->presence.node = o->node_buf;
    }

    /*
     * An --interval outside the default HELLO clamps widens them (tests run with 200ms intervals);
     * only clamps the user gave explicitly are held against it.
     */
    if (c->interval_ms < c->min_interval_ms && !o->min_interval_given)
        c->min_interval_ms = c->interval_ms;
    if (c->interval_ms > c->max_interval_ms && !o->max_interval_given)
        c->max_interval_ms = c->interval_ms;

    /* Checks between flags, with the defaults filled in, naming the flag the user can change. */
    if (c->min_interval_ms > c->max_interval_ms)
        usage_error("--min-interval (%ums) must not exceed --max-interval (%ums)",
                    c->min_interval_ms, c->max_interval_ms);
    if (c->interval_ms < c->min_interval_ms || c->interval_ms > c->max_interval_ms)
        usage_error("--interval (%ums) must lie within --min-interval..--max-interval (%ums..%ums)",
                    c->interval_ms, c->min_interval_ms, c->max_interval_ms);
    if (o->timeout_given && c->timeout_ms <= c->interval_ms)
        usage_error("--timeout (%ums) must be greater than --interval (%ums)", c->timeout_ms,
                    c->interval_ms);
    uint64_t timeout_ms = o->timeout_given ? c->timeout_ms : 3ull * c->interval_ms;
    if (c->max_timeout_ms != 0 && c->max_timeout_ms <= c->max_interval_ms)
        usage_error("--max-timeout (%ums) must be greater than --max-interval (%ums)",
                    c->max_timeout_ms, c->max_interval_ms);
    if (c->max_timeout_ms != 0 && timeout_ms > c->max_timeout_ms)
        usage_error("--timeout (%" PRIu64 "ms) must not exceed --max-timeout (%ums)", timeout_ms,
                    c->max_timeout_ms);
    if (timeout_ms > UINT32_MAX)
        usage_error("--interval: 3 x %ums does not fit a timeout; give --timeout", c->interval_ms);
    if (c->tick_ms >= c->min_interval_ms)
        usage_error("--tick (%ums) must be shorter than --min-interval and --interval (%ums)",
                    c->tick_ms, c->min_interval_ms);
    if (o->tls && (!c->tls_cert_file || !c->tls_key_file))
        usage_error("a tls:// listener needs --tls-cert and --tls-key");
    /* Room for one largest DATA frame and a CLOSE with the longest reason (4 + 2 + 123 bytes). */
    uint64_t pending_min = (uint64_t)c->max_frame + 4 + 4 + 2 + 123;
    if (c->max_pending_out < pending_min)
        usage_error(
            "--max-pending-out (%u) must hold one --max-frame plus a CLOSE: at least %" PRIu64,
            c->max_pending_out, pending_min);
}
