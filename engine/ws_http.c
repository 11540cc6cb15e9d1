/* ws_http.c — the WebSocket opening handshake: HTTP/1.1 upgrade request and 101 response. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ws.h"

/*
 * One grammar for request and response heads (RFC 9112): a start line, header lines of
 * `name: value`, an empty line. Lines end with CRLF; a bare LF is accepted as well (RFC 9112
 * 2.2 allows it), a CR anywhere else is refused (it is how requests are smuggled). No HTTP
 * library is packaged that parses in place without state per connection (llhttp and
 * picohttpparser are not in Debian; libmicrohttpd owns the socket), and the head is at most 8 KiB
 * and parsed once per connection, so this is written by hand and fuzzed (fuzz_ws_http.c).
 */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

size_t rb__http_head_end(const uint8_t *p, size_t n, size_t from)
{
    for (size_t i = from > 2 ? from - 2 : 0; i < n; i++) {
        if (p[i] != '\n' || i == 0)
            continue;
        if (p[i - 1] == '\n')
            return i + 1;
        if (p[i - 1] == '\r' && i >= 2 && p[i - 2] == '\n')
            return i + 1;
    }
    return 0;
}

struct cursor {
    const uint8_t *p, *end;
};

/* The next line without its line end: 1, 0 at the end of the head, -1 for a stray CR. */
static int next_line(struct cursor *cur, const uint8_t **line, size_t *len)
{
    if (cur->p >= cur->end)
        return 0;
    const uint8_t *lf = memchr(cur->p, '\n', (size_t)(cur->end - cur->p));
    if (!lf)
        return -1; /* rb__http_head_end guarantees one */
    const uint8_t *e = lf > cur->p && lf[-1] == '\r' ? lf - 1 : lf;
    if (memchr(cur->p, '\r', (size_t)(e - cur->p)))
        return -1;
    *line = cur->p;
    *len = (size_t)(e - cur->p);
    cur->p = lf + 1;
    return 1;
}

static bool is_tchar(uint8_t c)
{
    /* RFC 9110 5.6.2 token characters */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

static bool ieq(const uint8_t *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(p[i]) != lower((uint8_t)s[i]))
            return false;
    return true;
}

/* A header line split into name and value (OWS trimmed): 0, or -1 when malformed. */
static int split_header(const uint8_t *line, size_t len, const uint8_t **name, size_t *name_len,
                        const uint8_t **val, size_t *val_len)
{
    size_t i = 0;
    while (i < len && is_tchar(line[i]))
        i++;
    if (i == 0 || i == len || line[i] != ':')
        return -1; /* no name, whitespace before the colon, or an obsolete folded line */
    *name = line;
    *name_len = i;
    size_t a = i + 1, b = len;
    while (a < b && (line[a] == ' ' || line[a] == '\t'))
        a++;
    while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t'))
        b--;
    for (size_t k = a; k < b; k++)
        if ((line[k] < 0x20 && line[k] != '\t') || line[k] == 0x7F)
            return -1; /* control characters are not field content */
    *val = line + a;
    *val_len = b - a;
    return 0;
}

/* Does a comma-separated token list (Connection, Upgrade) hold `want`? */
static bool has_token(const uint8_t *v, size_t n, const char *want)
{
    size_t i = 0;
    while (i < n) {
        size_t a = i;
        while (i < n && v[i] != ',')
            i++;
        size_t b = i;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (ieq(v + a, b - a, want))
            return true;
        i++;
    }
    return false;
}

/* ---- Sec-WebSocket-Key and -Accept (libcrypto) ---- */

static bool is_b64(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int rb__ws_accept(const uint8_t *key, size_t key_len, char out[RB__WS_ACCEPT_LEN + 1])
{
    /* 16 bytes in base64: 22 characters and "==" (RFC 6455 4.2.1 item 5). */
    if (key_len != RB__WS_KEY_LEN || key[22] != '=' || key[23] != '=')
        return -EINVAL;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key[i]))
            return -EINVAL;
    unsigned char raw[18];
    if (EVP_DecodeBlock(raw, key, RB__WS_KEY_LEN) != 18) /* 18: the padding counts */
        return -EINVAL;
    unsigned char buf[RB__WS_KEY_LEN + sizeof(ws_guid) - 1];
    memcpy(buf, key, RB__WS_KEY_LEN);
    memcpy(buf + RB__WS_KEY_LEN, ws_guid, sizeof(ws_guid) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(buf, sizeof(buf), md, &md_len, EVP_sha1(), NULL) || md_len != 20)
        return -EINVAL;
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != RB__WS_ACCEPT_LEN)
        return -EINVAL;
    out[RB__WS_ACCEPT_LEN] = '\0';
    return 0;
}

/* ---- the query: what a HELLO carries ---- */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes (and '+' as a space, as browsers' URLSearchParams encode it) into out. */
static int pct_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            if ((hi = hexval(p[i + 1])) < 0 || (lo = hexval(p[i + 2])) < 0)
                return -1;
            c = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (k == cap)
            return -1;
        out[k++] = c;
    }
    *out_len = k;
    return 0;
}

/* A duration in whole milliseconds, 1 .. UINT32_MAX (the flags' syntax: "30s", "1500ms"). */
static int query_ms(const uint8_t *v, size_t n, uint32_t *out)
{
    char buf[32];
    size_t len;
    uint64_t us;
    if (pct_decode(v, n, (uint8_t *)buf, sizeof(buf) - 1, &len) < 0 || len == 0)
        return -1;
    buf[len] = '\0';
    if (memchr(buf, '\0', len) || rb_parse_duration_us(buf, &us) < 0 || us % 1000 || us == 0 ||
        us / 1000 > UINT32_MAX)
        return -1;
    *out = (uint32_t)(us / 1000);
    return 0;
}

static enum rb__ws_refusal parse_query(const uint8_t *q, size_t n, struct rb__ws_request *rq)
{
    struct rb__open_params *op = &rq->params;
    bool seen_interval = false, seen_timeout = false, seen_mode = false, seen_id = false;
    bool seen_token = false;
    size_t i = 0;
    while (i < n) {
        size_t a = i;
        while (i < n && q[i] != '&')
            i++;
        const uint8_t *kv = q + a, *eq = memchr(kv, '=', i - a);
        size_t klen = eq ? (size_t)(eq - kv) : i - a;
        const uint8_t *v = eq ? eq + 1 : kv + klen;
        size_t vlen = (size_t)(q + i - v);
        i++;
        /* Other parameters belong to the application: left alone. */
        if (ieq(kv, klen, "interval")) {
            if (seen_interval || query_ms(v, vlen, &op->interval_ms) < 0)
                return RB__WS_QUERY;
            seen_interval = true;
        } else if (ieq(kv, klen, "timeout")) {
            if (seen_timeout || query_ms(v, vlen, &op->timeout_ms) < 0)
                return RB__WS_QUERY;
            seen_timeout = true;
        } else if (ieq(kv, klen, "mode")) {
            char buf[8];
            size_t len;
            if (seen_mode || pct_decode(v, vlen, (uint8_t *)buf, sizeof(buf) - 1, &len) < 0)
                return RB__WS_QUERY;
            buf[len] = '\0';
            if (memchr(buf, '\0', len) || rb_parse_mode(buf, &op->mode) < 0)
                return RB__WS_QUERY;
            op->has_mode = seen_mode = true;
        } else if (ieq(kv, klen, "id")) {
            size_t len;
            if (seen_id || pct_decode(v, vlen, rq->id, sizeof(rq->id), &len) < 0)
                return RB__WS_QUERY; /* over RB_CLIENT_ID_MAX bytes once decoded */
            op->client_id = rq->id;
            op->client_id_len = len;
            seen_id = true;
        } else if (ieq(kv, klen, "token")) {
            size_t len;
            if (seen_token || pct_decode(v, vlen, rq->token, sizeof(rq->token), &len) < 0)
                return RB__WS_QUERY;
            op->token = rq->token;
            op->token_len = len;
            seen_token = true;
        }
    }
    return RB__WS_OK;
}

/* ---- the request ---- */

static enum rb__ws_refusal request_line(const uint8_t *l, size_t n, struct rb__ws_request *rq)
{
    const uint8_t *sp1 = memchr(l, ' ', n);
    if (!sp1 || sp1 == l)
        return RB__WS_MALFORMED;
    for (const uint8_t *c = l; c < sp1; c++)
        if (!is_tchar(*c))
            return RB__WS_MALFORMED;
    bool get = sp1 - l == 3 && memcmp(l, "GET", 3) == 0; /* methods are case-sensitive */
    const uint8_t *t = sp1 + 1, *end = l + n;
    const uint8_t *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2 || sp2 == t || *t != '/')
        return RB__WS_MALFORMED; /* origin-form only: "/path?query" */
    for (const uint8_t *c = t; c < sp2; c++)
        if (*c <= 0x20 || *c >= 0x7F)
            return RB__WS_MALFORMED;
    const uint8_t *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return RB__WS_MALFORMED;
    if (!get)
        return RB__WS_METHOD;
    if (v[5] != '1' || v[7] < '1')
        return RB__WS_HTTP_VERSION; /* RFC 6455 4.1: HTTP/1.1 or higher */
    const uint8_t *qm = memchr(t, '?', (size_t)(sp2 - t));
    rq->path = t;
    rq->path_len = (size_t)((qm ? qm : sp2) - t);
    rq->query = qm ? qm + 1 : NULL;
    rq->query_len = qm ? (size_t)(sp2 - qm - 1) : 0;
    return RB__WS_OK;
}

struct seen {
    const uint8_t *v;
    size_t len;
    unsigned count;
};

static void see(struct seen *s, const uint8_t *v, size_t len)
{
    s->v = v;
    s->len = len;
    s->count++;
}

enum rb__ws_refusal rb__ws_request_parse(const uint8_t *head, size_t len,
                                         const struct rb_config *cfg, struct rb__ws_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    if (len > RB__WS_HEAD_MAX)
        return RB__WS_TOO_LARGE;
    struct cursor cur = {head, head + len};
    const uint8_t *line;
    size_t n;
    if (next_line(&cur, &line, &n) != 1)
        return RB__WS_MALFORMED;
    enum rb__ws_refusal r = request_line(line, n, rq);
    if (r != RB__WS_OK)
        return r;
    struct seen host = {0}, version = {0}, key = {0}, origin = {0};
    bool upgrade = false, connection = false, ended = false;
    int got;
    while ((got = next_line(&cur, &line, &n)) == 1) {
        if (n == 0) {
            ended = true;
            break;
        }
        const uint8_t *name, *v;
        size_t nl, vl;
        if (split_header(line, n, &name, &nl, &v, &vl) < 0)
            return RB__WS_MALFORMED;
        if (ieq(name, nl, "host"))
            see(&host, v, vl);
        else if (ieq(name, nl, "upgrade"))
            upgrade |= has_token(v, vl, "websocket");
        else if (ieq(name, nl, "connection"))
            connection |= has_token(v, vl, "upgrade");
        else if (ieq(name, nl, "sec-websocket-version"))
            see(&version, v, vl);
        else if (ieq(name, nl, "sec-websocket-key"))
            see(&key, v, vl);
        else if (ieq(name, nl, "origin"))
            see(&origin, v, vl);
        /* Sec-WebSocket-Extensions (permessage-deflate) and -Protocol: declined by omission. */
    }
    if (got < 0 || !ended || cur.p != cur.end)
        return RB__WS_MALFORMED; /* a stray CR, or bytes past the empty line */
    if (cfg->ws_path &&
        (rq->path_len != strlen(cfg->ws_path) || memcmp(rq->path, cfg->ws_path, rq->path_len)))
        return RB__WS_PATH;
    if (!upgrade)
        return RB__WS_UPGRADE;
    if (!connection)
        return RB__WS_CONNECTION;
    if (version.count != 1 || version.len != 2 || memcmp(version.v, "13", 2) != 0)
        return RB__WS_VERSION;
    if (key.count != 1 || rb__ws_accept(key.v, key.len, rq->accept) < 0)
        return RB__WS_KEY;
    if (host.count != 1 || host.len == 0)
        return RB__WS_HOST;
    if (cfg->ws_origin_count) {
        /* A browser always sends Origin; a client without one is not a browser, and could send
         * any Origin it likes: no protection is lost by letting it in. */
        bool ok = origin.count == 0;
        for (unsigned i = 0; origin.count == 1 && i < cfg->ws_origin_count && !ok; i++)
            ok = ieq(origin.v, origin.len, cfg->ws_origin[i]);
        if (!ok)
            return RB__WS_ORIGIN;
    }
    return rq->query ? parse_query(rq->query, rq->query_len, rq) : RB__WS_OK;
}

/* ---- responses ---- */

static const struct {
    uint16_t status;
    const char *phrase, *text;
} refusals[RB__WS_REFUSAL_COUNT] = {
    [RB__WS_OK] = {101, "Switching Protocols", ""},
    [RB__WS_MALFORMED] = {400, "Bad Request", "not an HTTP/1.1 request head"},
    [RB__WS_METHOD] = {400, "Bad Request", "a WebSocket upgrade is a GET"},
    [RB__WS_HTTP_VERSION] = {400, "Bad Request", "HTTP/1.1 or later is required"},
    [RB__WS_HOST] = {400, "Bad Request", "one Host header is required"},
    [RB__WS_PATH] = {404, "Not Found", "no WebSocket at this path"},
    [RB__WS_UPGRADE] = {426, "Upgrade Required", "this is a WebSocket endpoint"},
    [RB__WS_CONNECTION] = {400, "Bad Request", "Connection must include upgrade"},
    [RB__WS_VERSION] = {426, "Upgrade Required", "Sec-WebSocket-Version must be 13"},
    [RB__WS_KEY] = {400, "Bad Request", "Sec-WebSocket-Key must be 16 bytes in base64"},
    [RB__WS_ORIGIN] = {403, "Forbidden", "Origin not allowed"},
    [RB__WS_QUERY] = {400, "Bad Request", "bad interval, timeout, mode or id parameter"},
    [RB__WS_UNHONOURABLE] = {400, "Bad Request", "timeout must be longer than interval"},
    [RB__WS_TOO_LARGE] = {431, "Request Header Fields Too Large", "request head over 8 KiB"},
    [RB__WS_UNAUTHORIZED] = {401, "Unauthorized", "no valid token for this id"},
};

uint16_t rb__ws_refusal_status(enum rb__ws_refusal r)
{
    return r < RB__WS_REFUSAL_COUNT ? refusals[r].status : 400;
}

const char *rb__ws_refusal_text(enum rb__ws_refusal r)
{
    return r < RB__WS_REFUSAL_COUNT ? refusals[r].text : "refused";
}

size_t rb__ws_put_101(uint8_t *out, const char *accept, const struct rb__welcome_info *wi)
{
    int n = snprintf((char *)out, RB__WS_101_MAX,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "Ringbeat-Interval-Ms: %" PRIu32 "\r\n"
                     "Ringbeat-Timeout-Ms: %" PRIu32 "\r\n"
                     "Ringbeat-Mode: %s\r\n"
                     "Ringbeat-Connection-Id: %" PRIu64 "\r\n"
                     "\r\n",
                     accept, wi->interval_ms, wi->timeout_ms, rb_mode_name(wi->mode), wi->conn_id);
    return n > 0 && n < RB__WS_101_MAX ? (size_t)n : 0;
}

static size_t put_error(uint8_t *out, uint16_t status, const char *phrase, const char *extra,
                        const char *text)
{
    int n = snprintf((char *)out, RB__WS_ERROR_MAX,
                     "HTTP/1.1 %u %s\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n"
                     "%s\n",
                     status, phrase, extra, strlen(text) + 1, text);
    return n > 0 && n < RB__WS_ERROR_MAX ? (size_t)n : 0;
}

size_t rb__ws_put_refusal(uint8_t *out, enum rb__ws_refusal r)
{
    if (r == RB__WS_OK || r >= RB__WS_REFUSAL_COUNT)
        r = RB__WS_MALFORMED;
    const char *extra = refusals[r].status == 426 ? "Upgrade: websocket\r\n"
                                                    "Sec-WebSocket-Version: 13\r\n"
                                                  : "";
    return put_error(out, refusals[r].status, refusals[r].phrase, extra, refusals[r].text);
}

size_t rb__ws_put_unavailable(uint8_t *out, unsigned retry_after_s)
{
    char extra[40];
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_after_s);
    return put_error(out, 503, "Service Unavailable", extra, "too many connections, or stopping");
}

/* ---- the client's side ---- */

size_t rb__ws_put_request(uint8_t *out, size_t cap, const char *host, const char *target,
                          const char key[RB__WS_KEY_LEN + 1])
{
    int n = snprintf((char *)out, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     target, host, key);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static uint64_t parse_u64(const uint8_t *v, size_t n, bool *ok)
{
    uint64_t x = 0;
    *ok = n > 0 && n <= 20;
    for (size_t i = 0; *ok && i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - (v[i] - '0')) / 10)
            *ok = false;
        else
            x = x * 10 + (v[i] - '0');
    }
    return x;
}

int rb__ws_reply_parse(const uint8_t *head, size_t len, const char *accept, int *status,
                       struct rb__ws_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->mode = -1;
    *status = 0;
    struct cursor cur = {head, head + len};
    const uint8_t *line;
    size_t n;
    if (next_line(&cur, &line, &n) != 1 || n < 12 || memcmp(line, "HTTP/1.1 ", 9) != 0)
        return -EPROTO;
    bool ok;
    *status = (int)parse_u64(line + 9, 3, &ok);
    if (!ok || (n > 12 && line[12] != ' '))
        return -EPROTO;
    bool upgrade = false, connection = false, accepted = false;
    int got;
    while ((got = next_line(&cur, &line, &n)) == 1 && n) {
        const uint8_t *name, *v;
        size_t nl, vl;
        if (split_header(line, n, &name, &nl, &v, &vl) < 0)
            return -EPROTO;
        if (ieq(name, nl, "upgrade"))
            upgrade |= has_token(v, vl, "websocket");
        else if (ieq(name, nl, "connection"))
            connection |= has_token(v, vl, "upgrade");
        else if (ieq(name, nl, "sec-websocket-accept"))
            accepted = vl == strlen(accept) && memcmp(v, accept, vl) == 0;
        else if (ieq(name, nl, "ringbeat-interval-ms"))
            out->interval_ms = (uint32_t)parse_u64(v, vl, &ok);
        else if (ieq(name, nl, "ringbeat-timeout-ms"))
            out->timeout_ms = (uint32_t)parse_u64(v, vl, &ok);
        else if (ieq(name, nl, "ringbeat-connection-id"))
            out->conn_id = parse_u64(v, vl, &ok);
        else if (ieq(name, nl, "ringbeat-mode")) {
            char m[8];
            if (vl < sizeof(m)) {
                memcpy(m, v, vl);
                m[vl] = '\0';
                enum rb_mode mode;
                if (rb_parse_mode(m, &mode) == 0)
                    out->mode = (int)mode;
            }
        }
    }
    if (got < 0 || *status != 101 || !upgrade || !connection || !accepted)
        return -EPROTO;
    return 0;
}
