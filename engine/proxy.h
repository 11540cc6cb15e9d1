/* proxy.h — the PROXY protocol (HAProxy's v1 text and v2 binary header) parser. */
#ifndef RB_PROXY_H
#define RB_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest header accepted: v1's 107 bytes, or v2's 16 + addresses + TLVs up to this. */
#define RB__PROXY_MAX 1024

struct rb__proxy_hdr {
    /* v2 LOCAL, v1 UNKNOWN, or a v2 family without an IP address: the connection's own
     * endpoints stand (the proxy's address), src.ss_family is AF_UNSPEC. */
    bool local;
    struct sockaddr_storage src; /* the client's address and port */
};

/*
 * Looks at the first n bytes of a connection. Returns the header's length when they start with a
 * whole valid header (*out filled), 0 when they are a valid beginning of one and more bytes are
 * needed, -EPROTO when they cannot be one (wrong signature, bad field, v1 line longer than 107
 * bytes, v2 header longer than RB__PROXY_MAX, TLVs that do not fill the header exactly).
 */
int rb__proxy_parse(const uint8_t *p, size_t n, struct rb__proxy_hdr *out);

#endif
