/* url.c — the client's one URL parser: "[SCHEME://]HOST:PORT" into a transport, host and port. */
#include "internal.h"

#include <errno.h>
#include <string.h>

/*
 * The scheme picks the transport, so that WebSocket and TLS can arrive behind the same API:
 * none or tcp:// is protocol v1 over TCP (implemented); ws://, wss:// and tls:// are reserved and
 * refused with -EPROTONOSUPPORT until their transports exist; any other scheme is -EINVAL.
 */
int rbc__url_parse(const char *url, struct rbc__url *out)
{
    if (!url)
        return -EINVAL;
    size_t n = strlen(url);
    if (n == 0 || n > RBC__URL_MAX)
        return -EINVAL;
    const char *p = url, *sep = strstr(url, "://");
    if (sep) {
        size_t sl = (size_t)(sep - url);
        if (sl == 3 && !strncmp(url, "tcp", 3))
            out->transport = RBC__TRANSPORT_V1;
        else if ((sl == 2 && !strncmp(url, "ws", 2)) || (sl == 3 && !strncmp(url, "wss", 3)) ||
                 (sl == 3 && !strncmp(url, "tls", 3)))
            return -EPROTONOSUPPORT;
        else
            return -EINVAL;
        p = sep + 3;
    } else {
        out->transport = RBC__TRANSPORT_V1;
    }
    const char *host = p, *host_end, *colon;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':')
            return -EINVAL;
        colon = host_end + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon)
            return -EINVAL;
        host_end = colon;
        if (memchr(host, ':', (size_t)(host_end - host)))
            return -EINVAL; /* a bare IPv6 address needs brackets */
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof(out->host))
        return -EINVAL;
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == '[' || ch == ']' || ch == '@')
            return -EINVAL;
    }
    const char *port = colon + 1;
    unsigned long v = 0;
    size_t pl = 0;
    for (; port[pl] >= '0' && port[pl] <= '9'; pl++) {
        v = v * 10 + (unsigned long)(port[pl] - '0');
        if (v > 65535)
            return -EINVAL;
    }
    if (pl == 0 || port[pl] != '\0' || v == 0)
        return -EINVAL;
    memcpy(out->host, host, hl);
    out->host[hl] = '\0';
    out->port = (uint16_t)v;
    return 0;
}
