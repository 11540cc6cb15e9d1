/* test_proxy.c — the PROXY protocol parser (v1 and v2) and the CIDR matcher, byte by byte. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy.h"
#include "ringbeat.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    memcpy(out + 16, body, n);
    return 16 + n;
}

/* Every proper prefix of a valid header asks for more; the whole gives its length. */
static void check_prefixes(const uint8_t *h, size_t n)
{
    struct rb__proxy_hdr out;
    for (size_t i = 0; i < n; i++)
        if (rb__proxy_parse(h, i, &out) != 0)
            fail_msg("prefix of %zu/%zu bytes: got %d", i, n, rb__proxy_parse(h, i, &out));
    assert_int_equal(rb__proxy_parse(h, n, &out), (int)n);
}

static void test_v1_tcp4(void **state)
{
    (void)state;
    const char *line = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 7600\r\n";
    uint8_t buf[200];
    size_t n = strlen(line);
    memcpy(buf, line, n);
    memcpy(buf + n, "\x01\x00\x00\x0c", 4); /* what follows belongs to the codec */
    check_prefixes(buf, n);
    struct rb__proxy_hdr h;
    assert_int_equal(rb__proxy_parse(buf, n + 4, &h), (int)n);
    assert_false(h.local);
    const struct sockaddr_in *a = (const struct sockaddr_in *)&h.src;
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(ntohs(a->sin_port), 56324);
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0xC0000207u);
}

static void test_v1_tcp6_and_unknown(void **state)
{
    (void)state;
    struct rb__proxy_hdr h;
    const char *l6 = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    check_prefixes((const uint8_t *)l6, strlen(l6));
    assert_int_equal(rb__proxy_parse((const uint8_t *)l6, strlen(l6), &h), (int)strlen(l6));
    assert_int_equal(h.src.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&h.src)->sin6_port), 65535);
    const char *u = "PROXY UNKNOWN\r\n";
    assert_int_equal(rb__proxy_parse((const uint8_t *)u, strlen(u), &h), (int)strlen(u));
    assert_true(h.local);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
    const char *u2 = "PROXY UNKNOWN ffff::1 whatever\r\n";
    assert_int_equal(rb__proxy_parse((const uint8_t *)u2, strlen(u2), &h), (int)strlen(u2));
    assert_true(h.local);
}

static void test_v1_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 7600\n",     /* LF without CR */
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 7600\r\r",   /* CR not followed by LF */
        "PROXY TCP4 192.0.2.7  10.0.0.1 56324 7600\r\n",  /* two spaces */
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",        /* a field missing */
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 7600 1\r\n", /* a field too many */
        "PROXY TCP4 192.0.2.7 10.0.0.1 65536 7600\r\n",   /* port out of range */
        "PROXY TCP4 192.0.2.7 10.0.0.1 056324 7600\r\n",  /* leading zero, 6 digits */
        "PROXY TCP4 192.0.2.7 10.0.0.1 -1 7600\r\n",      /* sign */
        "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",        /* v6 address under TCP4 */
        "PROXY TCP6 192.0.2.7 ::1 1 2\r\n",               /* v4 address under TCP6 */
        "PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",          /* unknown protocol */
        "PROXY \r\n",                                     /* empty */
        "PROXY UNKNOWNX\r\n",                             /* not the keyword */
        "proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",          /* case */
        "PROXY TCP4 192.0.2.7 10.0.0.1 1 2\0\r\n",        /* NUL inside */
        "GET / HTTP/1.1\r\n",                             /* not a header at all */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rb__proxy_hdr h;
        size_t n = strlen(bad[i]);
        if (i == 14)
            n = 36;
        int rc = rb__proxy_parse((const uint8_t *)bad[i], n, &h);
        if (rc != -EPROTO)
            fail_msg("case %zu (%s): got %d", i, bad[i], rc);
    }
    /* A line that has not ended within 107 bytes. */
    uint8_t longl[200];
    memcpy(longl, "PROXY UNKNOWN ", 14);
    memset(longl + 14, 'a', sizeof(longl) - 14);
    struct rb__proxy_hdr h;
    assert_int_equal(rb__proxy_parse(longl, 106, &h), 0);
    assert_int_equal(rb__proxy_parse(longl, 107, &h), -EPROTO);
    /* The longest line allowed ends exactly at 107 bytes. */
    longl[105] = '\r';
    longl[106] = '\n';
    assert_int_equal(rb__proxy_parse(longl, 107, &h), 107);
    longl[105] = 'a';
    longl[106] = '\r';
    longl[107] = '\n';
    assert_int_equal(rb__proxy_parse(longl, 108, &h), -EPROTO);
    /* A first byte that starts neither version. */
    assert_int_equal(rb__proxy_parse((const uint8_t *)"\x01", 1, &h), -EPROTO);
}

static void test_v2_inet_inet6_local(void **state)
{
    (void)state;
    uint8_t buf[1200], body[64];
    struct rb__proxy_hdr h;
    /* PROXY, INET/STREAM: 198.51.100.9:40000 -> 10.0.0.1:7600 */
    uint8_t b4[12] = {198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x1d, 0xb0};
    size_t n = v2(buf, 0x21, 0x11, b4, sizeof(b4));
    check_prefixes(buf, n);
    assert_int_equal(rb__proxy_parse(buf, n, &h), (int)n);
    assert_false(h.local);
    const struct sockaddr_in *a = (const struct sockaddr_in *)&h.src;
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0xC6336409u);
    assert_int_equal(ntohs(a->sin_port), 40000);
    /* INET6 with two TLVs after the addresses. */
    memset(body, 0, sizeof(body));
    body[15] = 1; /* ::1 */
    body[32] = 0x12;
    body[33] = 0x34;
    memcpy(body + 36, "\x01\x00\x02h2\x04\x00\x00", 8); /* ALPN "h2", NOOP of length 0 */
    n = v2(buf, 0x21, 0x21, body, 44);
    check_prefixes(buf, n);
    assert_int_equal(rb__proxy_parse(buf, n, &h), (int)n);
    assert_int_equal(h.src.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&h.src)->sin6_port), 0x1234);
    /* LOCAL (a health check): addresses, if any, are ignored. */
    n = v2(buf, 0x20, 0x00, body, 0);
    assert_int_equal(rb__proxy_parse(buf, n, &h), 16);
    assert_true(h.local);
    n = v2(buf, 0x20, 0x11, b4, sizeof(b4));
    assert_int_equal(rb__proxy_parse(buf, n, &h), (int)n);
    assert_true(h.local);
    /* PROXY with UNSPEC or UNIX family: the connection's own address stands. */
    n = v2(buf, 0x21, 0x00, body, 0);
    assert_int_equal(rb__proxy_parse(buf, n, &h), 16);
    assert_true(h.local);
    uint8_t unixb[216] = {0};
    n = v2(buf, 0x21, 0x31, unixb, sizeof(unixb));
    assert_int_equal(rb__proxy_parse(buf, n, &h), (int)n);
    assert_true(h.local);
    /* The largest accepted header: RB__PROXY_MAX bytes of it in all. */
    uint8_t big[RB__PROXY_MAX];
    memset(big, 0, sizeof(big));
    memcpy(big, b4, 12);
    big[12] = 0x04; /* a NOOP TLV filling the rest */
    size_t tlv = RB__PROXY_MAX - 16 - 12 - 3;
    big[13] = (uint8_t)(tlv >> 8);
    big[14] = (uint8_t)tlv;
    n = v2(buf, 0x21, 0x11, big, RB__PROXY_MAX - 16);
    assert_int_equal(rb__proxy_parse(buf, n, &h), RB__PROXY_MAX);
}

static void test_v2_malformed(void **state)
{
    (void)state;
    uint8_t buf[1200];
    uint8_t b4[16] = {198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x1d, 0xb0, 0x04, 0, 1, 0};
    struct rb__proxy_hdr h;
    size_t n;
    for (unsigned vc = 0; vc < 256; vc++) {
        n = v2(buf, (uint8_t)vc, 0x11, b4, 12);
        int want = (vc == 0x20 || vc == 0x21) ? (int)n : -EPROTO;
        assert_int_equal(rb__proxy_parse(buf, n, &h), want);
        assert_int_equal(rb__proxy_parse(buf, 13, &h), want < 0 ? -EPROTO : 0);
    }
    for (unsigned ft = 0; ft < 256; ft++) {
        uint8_t body[216] = {0};
        n = v2(buf, 0x21, (uint8_t)ft, body, sizeof(body));
        int rc = rb__proxy_parse(buf, n, &h);
        bool ok = (ft >> 4) <= 3 && (ft & 0xf) <= 2 && (ft & 0xf) != 2;
        if (rc != (ok ? (int)n : -EPROTO))
            fail_msg("family/transport 0x%02x: got %d", ft, rc);
    }
    /* Shorter than the family's addresses. */
    n = v2(buf, 0x21, 0x11, b4, 11);
    assert_int_equal(rb__proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x21, b4, 16);
    assert_int_equal(rb__proxy_parse(buf, n, &h), -EPROTO);
    /* TLVs that do not fill the header exactly. */
    n = v2(buf, 0x21, 0x11, b4, 14); /* 2 stray bytes */
    assert_int_equal(rb__proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x11, b4, 15); /* a TLV whose length runs past the end */
    assert_int_equal(rb__proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x11, b4, 16); /* a TLV of length 1 after its 3 bytes: exact */
    assert_int_equal(rb__proxy_parse(buf, n, &h), (int)n);
    /* Longer than RB__PROXY_MAX: refused from the length field alone. */
    memcpy(buf, sig, 12);
    buf[12] = 0x21;
    buf[13] = 0x11;
    buf[14] = (uint8_t)((RB__PROXY_MAX - 15) >> 8);
    buf[15] = (uint8_t)(RB__PROXY_MAX - 15);
    assert_int_equal(rb__proxy_parse(buf, 16, &h), -EPROTO);
    /* A signature that goes wrong at any byte. */
    for (int i = 0; i < 12; i++) {
        n = v2(buf, 0x21, 0x11, b4, 12);
        buf[i] ^= 0x40;
        assert_int_equal(rb__proxy_parse(buf, (size_t)i + 1, &h), -EPROTO);
    }
}

static void test_cidr(void **state)
{
    (void)state;
    struct rb_cidr c;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    assert_int_equal(rb_parse_cidr("127.0.0.0/8", &c), 0);
    a4->sin_family = AF_INET;
    inet_pton(AF_INET, "127.9.8.7", &a4->sin_addr);
    assert_true(rb_cidr_match(&c, &ss));
    inet_pton(AF_INET, "128.0.0.1", &a4->sin_addr);
    assert_false(rb_cidr_match(&c, &ss));
    /* v4-mapped v6 sources match v4 prefixes. */
    a6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &a6->sin6_addr);
    assert_true(rb_cidr_match(&c, &ss));
    assert_int_equal(rb_parse_cidr("::1", &c), 0);
    assert_int_equal(c.prefix_bits, 128);
    inet_pton(AF_INET6, "::1", &a6->sin6_addr);
    assert_true(rb_cidr_match(&c, &ss));
    inet_pton(AF_INET6, "::2", &a6->sin6_addr);
    assert_false(rb_cidr_match(&c, &ss));
    assert_int_equal(rb_parse_cidr("10.1.2.3/12", &c), 0); /* host bits cleared */
    assert_int_equal(c.addr[1], 0);
    a4->sin_family = AF_INET;
    inet_pton(AF_INET, "10.15.255.255", &a4->sin_addr);
    assert_true(rb_cidr_match(&c, &ss));
    inet_pton(AF_INET, "10.16.0.0", &a4->sin_addr);
    assert_false(rb_cidr_match(&c, &ss));
    assert_int_equal(rb_parse_cidr("0.0.0.0/0", &c), 0);
    assert_true(rb_cidr_match(&c, &ss));
    assert_int_equal(rb_parse_cidr("2001:db8::/33", &c), 0);
    static const char *const bad[] = {"",           "/8",          "10.0.0.0/", "10.0.0.0/33",
                                      "::/129",     "10.0.0.0/8x", "[::1]",     "10.0.0",
                                      "10.0.0.0/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rb_parse_cidr(bad[i], &c), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),      cmocka_unit_test(test_v1_tcp6_and_unknown),
        cmocka_unit_test(test_v1_malformed), cmocka_unit_test(test_v2_inet_inet6_local),
        cmocka_unit_test(test_v2_malformed), cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
