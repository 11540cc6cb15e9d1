/* rconn.c — Redis connections: the --redis URL, connect with timeouts, AUTH, SELECT, a name. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static int parse_db(const char *s, int *out)
{
    if (!*s || strlen(s) > 5)
        return -EINVAL;
    int v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

/* redis://HOST[:PORT][/DB] (HOST a name, an IPv4 address or [IPv6]) or unix:///PATH[?db=N]. */
int rbp_url_parse(const char *url, struct rbp_target *out)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (!url)
        return -EINVAL;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7, *q = strchr(path, '?');
        size_t n = q ? (size_t)(q - path) : strlen(path);
        if (path[0] != '/' || n < 2 || n >= sizeof(out->host))
            return -EINVAL;
        if (memchr(path, '@', n))
            return -EPERM;
        memcpy(out->host, path, n);
        out->unix_socket = true;
        if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &out->db) < 0))
            return -EINVAL;
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return -EINVAL;
    const char *h = url + 8, *slash = strchr(h, '/');
    size_t hlen = slash ? (size_t)(slash - h) : strlen(h);
    if (memchr(h, '@', hlen))
        return -EPERM; /* user:password@ would sit in the process list */
    char hp[300];
    if (hlen == 0 || hlen >= sizeof(hp))
        return -EINVAL;
    memcpy(hp, h, hlen);
    hp[hlen] = '\0';
    char *port = NULL;
    if (hp[0] == '[') {
        char *end = strchr(hp, ']');
        if (!end || end == hp + 1)
            return -EINVAL;
        *end = '\0';
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            return -EINVAL;
        memmove(hp, hp + 1, strlen(hp + 1) + 1);
    } else if ((port = strchr(hp, ':'))) {
        *port++ = '\0';
    }
    if (!hp[0] || strlen(hp) >= sizeof(out->host))
        return -EINVAL;
    strcpy(out->host, hp);
    if (port) {
        int p;
        if (parse_db(port, &p) < 0 || p < 1 || p > 65535)
            return -EINVAL;
        out->port = p;
    }
    if (slash && slash[1] && parse_db(slash + 1, &out->db) < 0)
        return -EINVAL;
    return 0;
}

int rbp_url_check(const char *url)
{
    struct rbp_target t;
    return rbp_url_parse(url, &t);
}

static bool ok_reply(redisReply *r)
{
    return r && r->type != REDIS_REPLY_ERROR;
}

redisContext *rbp_connect(const struct rbp_target *t, const char *password, const char *name,
                          uint32_t timeout_ms, char *err, size_t err_cap)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = t->unix_socket ? redisConnectUnixWithTimeout(t->host, tv)
                                     : redisConnectWithTimeout(t->host, t->port, tv);
    if (!c || c->err) {
        snprintf(err, err_cap, "%s", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    /* A Redis that stops answering must not hold the thread forever: reads and writes time out,
     * and the caller reconnects. */
    redisSetTimeout(c, tv);
    if (!t->unix_socket)
        redisEnableKeepAlive(c);
    redisReply *r;
    if (password) {
        r = redisCommand(c, "AUTH %s", password);
        if (!ok_reply(r)) {
            snprintf(err, err_cap, "AUTH: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (t->db) {
        r = redisCommand(c, "SELECT %d", t->db);
        if (!ok_reply(r)) {
            snprintf(err, err_cap, "SELECT %d: %s", t->db, r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "CLIENT SETNAME %s", name);
    if (!r) {
        snprintf(err, err_cap, "%s", c->errstr);
        goto fail;
    }
    freeReplyObject(r); /* an error here (a proxy without CLIENT) is no reason to give up */
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

int64_t rbp_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t rbp_mono_ms(void)
{
    return rb_clock_ns() / 1000000;
}

uint32_t rbp_backoff_next(uint32_t prev_ms, uint64_t *rng)
{
    uint32_t base = prev_ms ? prev_ms * 2 : 100;
    if (base > 5000)
        base = 5000;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return base + (uint32_t)(*rng % (base / 4 + 1));
}
