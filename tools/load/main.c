/* main.c — ringbeat-load command line: flags, signals and the run. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "load.h"
#include "load_report.h"
#include "ringbeat.h"

static const char usage[] =
    "usage: ringbeat-load [flags]\n"
    "  --target A.B.C.D[-A.B.C.E]:PORT  destinations, round-robin (repeatable; default "
    "127.0.0.1:7600)\n"
    "  --connections N        connections to open (1000)\n"
    "  --rate N               connection attempts per second during the ramp (5000)\n"
    "  --duration D           hold time after the ramp (10s)\n"
    "  --workers N            threads; each drives as many rings as its connections need (1)\n"
    "  --protocol v1|ws       protocol v1 (HELLO) or WebSocket (upgrade, masked frames) (v1)\n"
    "  --ws-path PATH         WebSocket request path; the query carries what HELLO would (/)\n"
    "  --mode server|client|silent|kernel  heartbeat mode sent in HELLO (client; kernel: no "
    "PINGs,\n"
    "                                the server sets TCP keepalive)\n"
    "  --interval D           heartbeat interval sent in HELLO and used for our PINGs (1s)\n"
    "  --timeout D            liveness timeout sent in HELLO (0 = server default)\n"
    "  --silent-pct P         P%% of connections go silent (stop sending and answering)\n"
    "  --silent-after D       ... this long after their WELCOME (2s)\n"
    "  --reset-pct P          P%% of connections are closed abruptly with RST\n"
    "  --reset-after D        ... this long after their WELCOME (2s)\n"
    "  --reconnect            reconnect closed/failed connections (backoff 100ms doubling to 5s, "
    "+jitter)\n"
    "  --json FILE            write the summary as JSON\n"
    "  --connect-timeout D    connect and WELCOME timeout (5s)\n"
    "  --inflight N           connects in flight per ring (256; with --tls until the WELCOME)\n"
    "  --slots-per-ring N     fixed-file slots per ring (RLIMIT_NOFILE - 1000)\n"
    "  --buffers N            provided receive buffers per ring, power of two (4096)\n"
    "  --buffer-size N        bytes per receive buffer (128)\n"
    "  --no-close-frame       at the end close without sending CLOSE(1)\n"
    "  --tls                  v1 over TLS 1.3 (the server's tls:// listener; no certificate "
    "check)\n"
    "  --tls-resume           offer the newest session ticket: resumed handshakes (with --tls)\n"
    "  --tls-ciphersuites L   TLS 1.3 suites to offer, OpenSSL syntax (with --tls)\n"
    "  --seed N               seed for phases, jitter and uuid client ids (1)\n"
    "  --client-ids short|uuid|none  HELLO client ids: load-N, 36-byte UUID-shaped, none "
    "(short)\n"
    "  --token-secret-file F  send a token for each client id, minted with F's first key\n"
    "  --turn D               shortest loop turn: completions gather this long, so one turn\n"
    "                         handles many with one io_uring_enter per ring (1ms; 0: none)\n"
    "  --quiet                no live line\n"
    "  --help, --version\n"
    "Durations: us, ms, s, m suffixes; a bare number is milliseconds.\n"
    "Exit: 0 if every connection was established and none died unexpectedly; 1 otherwise; "
    "2 bad flag.\n";

static void on_signal(int sig)
{
    (void)sig;
    load_request_stop();
}

static int bad_flag(const char *flag, const char *why)
{
    fprintf(stderr, "ringbeat-load: bad %s: %s\n", flag, why);
    return 2;
}

/* Durations follow the daemon's rules (rb_parse_duration_us): us, ms, s, m; bare = ms. */
static int parse_duration_us(const char *s, uint64_t *out)
{
    return rb_parse_duration_us(s, out);
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return -EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

static int parse_pct(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v <= 100))
        return -EINVAL;
    *out = v;
    return 0;
}

/* Appends A.B.C.D[-A.B.C.E | -E]:PORT to the target list; the first address and the port go
 * through the engine's one address parser. */
static int parse_target(const char *s, struct sockaddr_in *list, unsigned *count)
{
    char buf[128];
    if (strlen(s) >= sizeof(buf))
        return -EINVAL;
    strcpy(buf, s);
    char *colon = strrchr(buf, ':');
    if (!colon)
        return -EINVAL;
    char *dash = strchr(buf, '-');
    char last_s[INET_ADDRSTRLEN] = "";
    if (dash) {
        size_t n = (size_t)(colon - dash - 1);
        if (dash > colon || n == 0 || n >= sizeof(last_s))
            return -EINVAL;
        memcpy(last_s, dash + 1, n);
        last_s[n] = '\0';
        memmove(dash, colon, strlen(colon) + 1); /* "FIRST:PORT" */
    }
    struct sockaddr_storage ss;
    socklen_t ss_len;
    if (rb_parse_addr(buf, &ss, &ss_len) < 0 || ss.ss_family != AF_INET)
        return -EINVAL;
    const struct sockaddr_in *first = (const struct sockaddr_in *)&ss;
    uint16_t port = ntohs(first->sin_port);
    if (port == 0)
        return -EINVAL;
    struct in_addr a = first->sin_addr, b = a;
    if (dash) {
        if (strchr(last_s, '.')) {
            if (inet_pton(AF_INET, last_s, &b) != 1)
                return -EINVAL;
        } else {
            uint32_t last;
            if (parse_u32(last_s, 0, 255, &last) < 0)
                return -EINVAL;
            b.s_addr = htonl((ntohl(a.s_addr) & 0xffffff00u) | last);
        }
    }
    uint32_t lo = ntohl(a.s_addr), hi = ntohl(b.s_addr);
    if (hi < lo)
        return -EINVAL;
    if ((uint64_t)hi - lo + 1 + *count > LOAD_TARGETS_MAX)
        return -E2BIG;
    for (uint64_t ip = lo; ip <= hi; ip++) {
        struct sockaddr_in *sa = &list[(*count)++];
        memset(sa, 0, sizeof(*sa));
        sa->sin_family = AF_INET;
        sa->sin_port = htons((uint16_t)port);
        sa->sin_addr.s_addr = htonl((uint32_t)ip);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct sockaddr_in targets[LOAD_TARGETS_MAX];
    struct load_cfg cfg = {
        .targets = targets,
        .connections = 1000,
        .rate_per_s = 5000,
        .duration_us = 10000000,
        .workers = 1,
        .mode = RB_MODE_CLIENT,
        .interval_ms = 1000,
        .silent_after_us = 2000000,
        .reset_after_us = 2000000,
        .connect_timeout_us = 5000000,
        .inflight_per_ring = 256,
        .buffers = 4096,
        .buffer_size = 128,
        .close_frame = true,
        .seed = 1,
        .turn_us = 1000,
    };
    const char *json_path = NULL;
    enum {
        O_TARGET = 256,
        O_CONNS,
        O_RATE,
        O_DURATION,
        O_WORKERS,
        O_MODE,
        O_INTERVAL,
        O_TIMEOUT,
        O_SPCT,
        O_SAFTER,
        O_RPCT,
        O_RAFTER,
        O_RECONNECT,
        O_JSON,
        O_CTIMEOUT,
        O_INFLIGHT,
        O_SLOTS,
        O_BUFFERS,
        O_BUFSIZE,
        O_NOCLOSE,
        O_TLS,
        O_TLS_RESUME,
        O_TLS_SUITES,
        O_SEED,
        O_QUIET,
        O_TURN,
        O_CLIENT_IDS,
        O_TOKEN_FILE,
        O_PROTOCOL,
        O_WS_PATH,
        O_HELP,
        O_VERSION,
    };
    static const struct option opts[] = {
        {"target", required_argument, NULL, O_TARGET},
        {"connections", required_argument, NULL, O_CONNS},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"workers", required_argument, NULL, O_WORKERS},
        {"mode", required_argument, NULL, O_MODE},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"silent-pct", required_argument, NULL, O_SPCT},
        {"silent-after", required_argument, NULL, O_SAFTER},
        {"reset-pct", required_argument, NULL, O_RPCT},
        {"reset-after", required_argument, NULL, O_RAFTER},
        {"reconnect", no_argument, NULL, O_RECONNECT},
        {"json", required_argument, NULL, O_JSON},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"slots-per-ring", required_argument, NULL, O_SLOTS},
        {"buffers", required_argument, NULL, O_BUFFERS},
        {"buffer-size", required_argument, NULL, O_BUFSIZE},
        {"no-close-frame", no_argument, NULL, O_NOCLOSE},
        {"tls", no_argument, NULL, O_TLS},
        {"tls-resume", no_argument, NULL, O_TLS_RESUME},
        {"tls-ciphersuites", required_argument, NULL, O_TLS_SUITES},
        {"seed", required_argument, NULL, O_SEED},
        {"quiet", no_argument, NULL, O_QUIET},
        {"turn", required_argument, NULL, O_TURN},
        {"client-ids", required_argument, NULL, O_CLIENT_IDS},
        {"token-secret-file", required_argument, NULL, O_TOKEN_FILE},
        {"protocol", required_argument, NULL, O_PROTOCOL},
        {"ws-path", required_argument, NULL, O_WS_PATH},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint64_t us;
        uint32_t u;
        switch (opt) {
        case O_TARGET: {
            int ret = parse_target(optarg, targets, &cfg.target_count);
            if (ret == -E2BIG)
                return bad_flag("--target", "more than 4096 destination addresses");
            if (ret < 0)
                return bad_flag("--target", "expected A.B.C.D[-A.B.C.E]:PORT");
            break;
        }
        case O_CONNS:
            if (parse_u32(optarg, 1, 100000000, &cfg.connections) < 0)
                return bad_flag("--connections", "expected a count >= 1");
            break;
        case O_RATE: {
            char *end;
            cfg.rate_per_s = strtod(optarg, &end);
            if (end == optarg || *end || !(cfg.rate_per_s > 0) || !isfinite(cfg.rate_per_s))
                return bad_flag("--rate", "expected connections per second > 0");
            break;
        }
        case O_DURATION:
            if (parse_duration_us(optarg, &cfg.duration_us) < 0)
                return bad_flag("--duration", "expected a duration like 30s");
            break;
        case O_WORKERS:
            if (parse_u32(optarg, 1, 256, &cfg.workers) < 0)
                return bad_flag("--workers", "expected 1..256");
            break;
        case O_MODE: {
            enum rb_mode mode;
            if (rb_parse_mode(optarg, &mode) < 0)
                return bad_flag("--mode", "expected server, client, silent or kernel");
            cfg.mode = (uint8_t)mode;
        } break;
        case O_INTERVAL:
            if (parse_duration_us(optarg, &us) < 0 || us / 1000 > UINT32_MAX ||
                (us > 0 && us < 1000))
                return bad_flag("--interval", "expected a duration of whole milliseconds");
            cfg.interval_ms = (uint32_t)(us / 1000);
            break;
        case O_TIMEOUT:
            if (parse_duration_us(optarg, &us) < 0 || us / 1000 > UINT32_MAX ||
                (us > 0 && us < 1000))
                return bad_flag("--timeout", "expected a duration of whole milliseconds");
            cfg.timeout_ms = (uint32_t)(us / 1000);
            break;
        case O_SPCT:
            if (parse_pct(optarg, &cfg.silent_pct) < 0)
                return bad_flag("--silent-pct", "expected a percentage 0..100");
            break;
        case O_SAFTER:
            if (parse_duration_us(optarg, &cfg.silent_after_us) < 0)
                return bad_flag("--silent-after", "expected a duration like 5s");
            break;
        case O_RPCT:
            if (parse_pct(optarg, &cfg.reset_pct) < 0)
                return bad_flag("--reset-pct", "expected a percentage 0..100");
            break;
        case O_RAFTER:
            if (parse_duration_us(optarg, &cfg.reset_after_us) < 0)
                return bad_flag("--reset-after", "expected a duration like 5s");
            break;
        case O_PROTOCOL:
            if (strcmp(optarg, "v1") == 0)
                cfg.protocol = RB_PROTOCOL_V1;
            else if (strcmp(optarg, "ws") == 0)
                cfg.protocol = RB_PROTOCOL_WS;
            else
                return bad_flag("--protocol", "expected v1 or ws");
            break;
        case O_WS_PATH:
            if (optarg[0] != '/' || strpbrk(optarg, "? \t\r\n") || strlen(optarg) > 128)
                return bad_flag("--ws-path", "expected a path like /hb (no query, <= 128 bytes)");
            cfg.ws_path = optarg;
            break;
        case O_RECONNECT:
            cfg.reconnect = true;
            break;
        case O_JSON:
            json_path = optarg;
            break;
        case O_CTIMEOUT:
            if (parse_duration_us(optarg, &cfg.connect_timeout_us) < 0 ||
                cfg.connect_timeout_us < 1000)
                return bad_flag("--connect-timeout", "expected a duration >= 1ms");
            break;
        case O_INFLIGHT:
            if (parse_u32(optarg, 1, 100000, &cfg.inflight_per_ring) < 0)
                return bad_flag("--inflight", "expected 1..100000");
            break;
        case O_SLOTS:
            if (parse_u32(optarg, 1, 1u << 24, &cfg.slots_per_ring) < 0)
                return bad_flag("--slots-per-ring", "expected a count >= 1");
            break;
        case O_BUFFERS:
            if (parse_u32(optarg, 1, 32768, &u) < 0 || (u & (u - 1)))
                return bad_flag("--buffers", "expected a power of two 1..32768");
            cfg.buffers = u;
            break;
        case O_BUFSIZE:
            if (parse_u32(optarg, 16, 65536, &cfg.buffer_size) < 0)
                return bad_flag("--buffer-size", "expected 16..65536 bytes");
            break;
        case O_NOCLOSE:
            cfg.close_frame = false;
            break;
        case O_TLS:
            cfg.tls = true;
            break;
        case O_TLS_RESUME:
            cfg.tls_resume = true;
            break;
        case O_TLS_SUITES:
            cfg.tls_ciphersuites = optarg;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            cfg.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end)
                return bad_flag("--seed", "expected an integer");
            break;
        }
        case O_QUIET:
            cfg.quiet = true;
            break;
        case O_TURN:
            if (parse_duration_us(optarg, &cfg.turn_us) < 0 || cfg.turn_us > 1000000)
                return bad_flag("--turn", "expected a duration 0..1s");
            break;
        case O_CLIENT_IDS:
            if (strcmp(optarg, "short") == 0)
                cfg.client_ids = LOAD_IDS_SHORT;
            else if (strcmp(optarg, "uuid") == 0)
                cfg.client_ids = LOAD_IDS_UUID;
            else if (strcmp(optarg, "none") == 0)
                cfg.client_ids = LOAD_IDS_NONE;
            else
                return bad_flag("--client-ids", "expected short, uuid or none");
            break;
        case O_TOKEN_FILE: {
            struct rb_auth *a = NULL;
            if (rb_auth_load(optarg, &a) < 0)
                return bad_flag("--token-secret-file", "cannot read hex keys from it");
            cfg.auth = a;
            cfg.token_expiry_s = (uint64_t)time(NULL) + 86400;
            break;
        }
        case O_HELP:
            fputs(usage, stdout);
            return 0;
        case O_VERSION:
            printf("ringbeat-load %s (protocol v%d)\n", RB_VERSION_STRING, RB_PROTO_VERSION);
            return 0;
        default: {
            const char *flag = argv[optind - 1];
            if (optopt && optopt >= O_TARGET)
                fprintf(stderr, "ringbeat-load: flag %s needs a value\n", flag);
            else
                fprintf(stderr, "ringbeat-load: unknown flag %s\n", flag);
            return 2;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringbeat-load: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (cfg.target_count == 0)
        parse_target("127.0.0.1:7600", targets, &cfg.target_count);
    if ((cfg.tls_resume || cfg.tls_ciphersuites) && !cfg.tls)
        return bad_flag("--tls-resume/--tls-ciphersuites", "only with --tls");
    if (cfg.interval_ms == 0 && cfg.mode != RB_MODE_SERVER)
        return bad_flag("--interval", "client and silent modes need an interval > 0");
    if (cfg.workers > cfg.connections)
        cfg.workers = cfg.connections;
    uint64_t per_dst = (cfg.connections + cfg.target_count - 1) / cfg.target_count;
    if (per_dst > 14000)
        fprintf(stderr,
                "ringbeat-load: warning: %llu connections per destination address; above ~14k "
                "connect() slows sharply (source port search): widen --target\n",
                (unsigned long long)per_dst);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct load_result *res = calloc(1, sizeof(*res));
    if (!res) {
        fprintf(stderr, "ringbeat-load: out of memory\n");
        return 1;
    }
    int ret = load_run(&cfg, res);
    rb_auth_free((struct rb_auth *)cfg.auth);
    if (ret < 0)
        fprintf(stderr, "ringbeat-load: run failed: %s\n", strerror(-ret));
    const struct load_counters *c = &res->c;
    double span_s = c->last_established_us > c->first_attempt_us
                        ? (double)(c->last_established_us - c->first_attempt_us) / 1e6
                        : 0;
    double connect_rate = span_s > 0 ? (double)c->established / span_s : 0;
    load_print_summary(&cfg, res, connect_rate);
    if (json_path) {
        int jr = load_write_json(json_path, &cfg, res, connect_rate);
        if (jr < 0) {
            fprintf(stderr, "ringbeat-load: --json %s: %s\n", json_path, strerror(-jr));
            ret = jr;
        }
    }
    bool ok = ret == 0 && c->established == cfg.connections && c->false_deaths == 0 &&
              c->self_inflicted == 0 && c->protocol_errors == 0;
    free(res);
    return ok ? 0 : 1;
}
