/* proxy.c — the PROXY protocol header parser (v1 text, v2 binary), as HAProxy specifies it. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

/*
 * Written by hand: no Debian package parses the PROXY header on its own (HAProxy's parser is
 * part of HAProxy). The grammar is HAProxy's doc/proxy-protocol.txt: v1 is one CRLF-terminated
 * line of at most 107 bytes, "PROXY TCP4|TCP6 SRC DST SPORT DPORT" or "PROXY UNKNOWN ..."; v2 is
 * a 12-byte signature, version/command, family/transport, a 16-bit length, the addresses and
 * type-length-value extensions.
 */
#define V1_MAX   107
#define V2_FIXED 16

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

/* A decimal port: 1-5 digits, no leading zero (except "0"), at most 65535. */
static int v1_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -EPROTO;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EPROTO;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -EPROTO;
    *out = (uint16_t)v;
    return 0;
}

/* The n bytes at s as an address of family af (inet_pton wants a NUL-terminated copy). */
static int v1_addr(int af, const char *s, size_t n, void *out)
{
    char buf[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(buf))
        return -EPROTO;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(af, buf, out) == 1 ? 0 : -EPROTO;
}

static int parse_v1(const uint8_t *p, size_t n, struct rb__proxy_hdr *out)
{
    size_t cmp = n < sizeof(v1_sig) - 1 ? n : sizeof(v1_sig) - 1;
    if (memcmp(p, v1_sig, cmp) != 0)
        return -EPROTO;
    const uint8_t *cr = NULL;
    for (size_t i = 0; i < n && i < V1_MAX; i++) {
        if (p[i] == '\r') {
            cr = p + i;
            break;
        }
        if (p[i] == '\n' || p[i] == 0)
            return -EPROTO;
    }
    if (!cr)
        return n >= V1_MAX ? -EPROTO : 0;
    size_t len = (size_t)(cr - p);
    if (len + 1 >= n)
        return len + 2 > V1_MAX ? -EPROTO : 0; /* the LF is still to come */
    if (cr[1] != '\n' || len + 2 > V1_MAX)
        return -EPROTO;
    const char *s = (const char *)p + sizeof(v1_sig) - 1, *end = (const char *)cr;
    memset(out, 0, sizeof(*out));
    if ((size_t)(end - s) >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (s + 7 == end || s[7] == ' ')) {
        out->local = true; /* the rest of the line may be anything and is ignored */
        out->src.ss_family = AF_UNSPEC;
        return (int)(len + 2);
    }
    int af;
    if ((size_t)(end - s) > 5 && memcmp(s, "TCP4 ", 5) == 0)
        af = AF_INET;
    else if ((size_t)(end - s) > 5 && memcmp(s, "TCP6 ", 5) == 0)
        af = AF_INET6;
    else
        return -EPROTO;
    s += 5;
    /* Four fields separated by single spaces: src dst sport dport. */
    const char *f[4];
    size_t fl[4];
    for (int i = 0; i < 4; i++) {
        const char *sp = memchr(s, ' ', (size_t)(end - s));
        const char *fe = i < 3 ? sp : end;
        if (!fe || (i == 3 && sp))
            return -EPROTO;
        f[i] = s;
        fl[i] = (size_t)(fe - s);
        s = fe + 1;
    }
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    if (v1_addr(af, f[0], fl[0], src) < 0 || v1_addr(af, f[1], fl[1], dst) < 0 ||
        v1_port(f[2], fl[2], &sport) < 0 || v1_port(f[3], fl[3], &dport) < 0)
        return -EPROTO;
    if (af == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&out->src;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, src, 4);
        a->sin_port = htons(sport);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->src;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, src, 16);
        a->sin6_port = htons(sport);
    }
    return (int)(len + 2);
}

/* The TLVs after the addresses must fill the header exactly; their contents are not used. */
static int v2_tlvs(const uint8_t *p, size_t n)
{
    while (n) {
        if (n < 3)
            return -EPROTO;
        size_t len = (size_t)p[1] << 8 | p[2];
        if (len > n - 3)
            return -EPROTO;
        p += 3 + len;
        n -= 3 + len;
    }
    return 0;
}

static int parse_v2(const uint8_t *p, size_t n, struct rb__proxy_hdr *out)
{
    size_t cmp = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
    if (memcmp(p, v2_sig, cmp) != 0)
        return -EPROTO;
    if (n > 12 && (p[12] >> 4 != 2 || (p[12] & 0xf) > 1))
        return -EPROTO; /* version 2; command LOCAL (0) or PROXY (1) */
    if (n > 13 && ((p[13] >> 4) > 3 || (p[13] & 0xf) > 2))
        return -EPROTO; /* family UNSPEC/INET/INET6/UNIX; transport UNSPEC/STREAM/DGRAM */
    if (n < V2_FIXED)
        return 0;
    size_t len = (size_t)p[14] << 8 | p[15];
    if (V2_FIXED + len > RB__PROXY_MAX)
        return -EPROTO;
    if (n < V2_FIXED + len)
        return 0;
    bool proxy = (p[12] & 0xf) == 1;
    unsigned fam = p[13] >> 4, transport = p[13] & 0xf;
    static const size_t addr_len[4] = {0, 12, 36, 216};
    if (len < addr_len[fam])
        return -EPROTO;
    const uint8_t *a = p + V2_FIXED;
    if (v2_tlvs(a + addr_len[fam], len - addr_len[fam]) < 0)
        return -EPROTO;
    memset(out, 0, sizeof(*out));
    out->src.ss_family = AF_UNSPEC;
    /* A DGRAM transport cannot describe this stream; a LOCAL header's addresses are ignored. */
    if (proxy && transport == 2)
        return -EPROTO;
    if (!proxy || (fam != 1 && fam != 2)) {
        out->local = true;
        return (int)(V2_FIXED + len);
    }
    if (fam == 1) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&s4->sin_port, a + 8, 2);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
    }
    return (int)(V2_FIXED + len);
}

int rb__proxy_parse(const uint8_t *p, size_t n, struct rb__proxy_hdr *out)
{
    if (n == 0)
        return 0;
    if (p[0] == 'P')
        return parse_v1(p, n, out);
    if (p[0] == 0x0D)
        return parse_v2(p, n, out);
    return -EPROTO;
}
