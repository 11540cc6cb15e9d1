/* addr.c — the one parser of socket addresses and listener specs, shared by every tool. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringbeat.h"

int rb_format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    if (!ss || !out || cap == 0)
        return -EINVAL;
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    } else {
        snprintf(out, cap, "-");
        return -EAFNOSUPPORT;
    }
    int n = snprintf(out, cap, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
    return n >= 0 && (size_t)n < cap ? 0 : -ENOSPC;
}

int rb_parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (!s || !out || !out_len)
        return -EINVAL;
    const char *colon = strrchr(s, ':');
    if (!colon || colon[1] < '0' || colon[1] > '9')
        return -EINVAL;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535 || end - (colon + 1) > 5)
        return -EINVAL;
    size_t hlen = (size_t)(colon - s);
    char host[INET6_ADDRSTRLEN + 2];
    if (hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *out_len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    if (hlen == 0 || strcmp(host, "*") == 0)
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -EINVAL;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *out_len = sizeof(*a4);
    return 0;
}

/* Schemes this build serves: a scheme names a protocol (its codec) and the transport under it.
 * A protocol over TLS is one more line here, e.g. {"wss://", RB_PROTOCOL_WS, RB_TRANSPORT_TLS}. */
static const struct {
    const char *scheme;
    enum rb_protocol protocol;
    enum rb_transport transport;
} schemes[] = {
    {"tcp://", RB_PROTOCOL_V1, RB_TRANSPORT_TCP},
    {"tls://", RB_PROTOCOL_V1, RB_TRANSPORT_TLS},
    {"ws://", RB_PROTOCOL_WS, RB_TRANSPORT_TCP},
    {"wss://", RB_PROTOCOL_WS, RB_TRANSPORT_TLS},
};

int rb_parse_listen(const char *s, struct rb_listen_addr *out)
{
    if (!s || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    out->protocol = RB_PROTOCOL_V1;
    const char *sep = strstr(s, "://");
    if (sep) {
        size_t i, n = (size_t)(sep - s) + 3;
        for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
            if (strlen(schemes[i].scheme) == n && strncmp(s, schemes[i].scheme, n) == 0)
                break;
        if (i == sizeof(schemes) / sizeof(schemes[0]))
            return -EPROTONOSUPPORT;
        out->protocol = schemes[i].protocol;
        out->transport = schemes[i].transport;
        s += n;
    }
    return rb_parse_addr(s, &out->addr, &out->addr_len);
}

int rb_parse_cidr(const char *s, struct rb_cidr *out)
{
    if (!s || !out)
        return -EINVAL;
    char host[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max_bits;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max_bits = 128;
    } else {
        return -EINVAL;
    }
    unsigned long bits = max_bits;
    if (slash) {
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        bits = strtoul(slash + 1, &end, 10);
        if (*end || bits > max_bits || end - (slash + 1) > 3)
            return -EINVAL;
    }
    out->prefix_bits = (uint8_t)bits;
    for (unsigned i = 0; i < max_bits / 8; i++) {
        unsigned keep = bits > i * 8 ? (bits - i * 8 >= 8 ? 8 : bits - i * 8) : 0;
        out->addr[i] &= (uint8_t)(0xff00u >> keep);
    }
    return 0;
}

bool rb_cidr_match(const struct rb_cidr *c, const struct sockaddr_storage *ss)
{
    const uint8_t *a;
    uint8_t v4[4];
    if (ss->ss_family == AF_INET) {
        if (c->family != AF_INET)
            return false;
        memcpy(v4, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        a = v4;
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (c->family == AF_INET && IN6_IS_ADDR_V4MAPPED(a6))
            a = a6->s6_addr + 12;
        else if (c->family == AF_INET6)
            a = a6->s6_addr;
        else
            return false;
    } else {
        return false;
    }
    unsigned bits = c->prefix_bits;
    for (unsigned i = 0; bits; i++) {
        unsigned n = bits >= 8 ? 8 : bits;
        uint8_t mask = (uint8_t)(0xff00u >> n);
        if ((a[i] & mask) != c->addr[i])
            return false;
        bits -= n;
    }
    return true;
}
