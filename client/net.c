/* net.c — the client's socket: resolve, non-blocking connect, read into the decoder, write out. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

/* Reads per readiness before returning to the app's loop (level-triggered: the rest waits). */
#define READS_PER_STEP 16

/*
 * getaddrinfo() is the one call here that may block (for a host name; a numeric address returns
 * at once): there is no asynchronous resolver in the C library on every platform this targets.
 * docs/client.md says so; an app that cannot afford it passes an address or uses the helper
 * thread.
 */
static int resolve(struct rbc *c, enum rbc_close_reason *reason)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)c->url.port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    struct addrinfo *res = NULL;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    int r = getaddrinfo(c->url.host, port, &hints, &res);
    if (r == EAI_BADFLAGS || (r == EAI_NONAME && !res)) {
        hints.ai_flags = AI_NUMERICSERV; /* AI_ADDRCONFIG hides addresses of a loopback-only box */
        r = getaddrinfo(c->url.host, port, &hints, &res);
    }
    if (r != 0) {
        *reason = RBC_CLOSED_RESOLVE;
        return r == EAI_SYSTEM ? -errno : r == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
    }
    c->naddr = 0;
    for (struct addrinfo *ai = res; ai && c->naddr < RBC__ADDR_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(c->addr[0]))
            continue;
        memcpy(&c->addr[c->naddr], ai->ai_addr, ai->ai_addrlen);
        c->addr_len[c->naddr++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    c->addr_i = 0;
    if (c->naddr == 0) {
        *reason = RBC_CLOSED_RESOLVE;
        return -EHOSTUNREACH;
    }
    return 0;
}

/* Starts connect() to addresses from addr_i on: 0 when one is in flight (or done), else the last
 * error. */
static int try_addresses(struct rbc *c)
{
    int err = -EHOSTUNREACH;
    for (; c->addr_i < c->naddr; c->addr_i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&c->addr[c->addr_i];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* 12-byte heartbeats */
        if (connect(fd, sa, c->addr_len[c->addr_i]) == 0 || errno == EINPROGRESS) {
            c->fd = fd;
            c->state = RBC__CONNECTING;
            return 0;
        }
        err = -errno;
        close(fd);
    }
    return err;
}

int rbc__net_connect(struct rbc *c, enum rbc_close_reason *reason)
{
    int r = resolve(c, reason);
    if (r < 0)
        return r;
    *reason = RBC_CLOSED_CONNECT;
    return try_addresses(c);
}

/* The connect in flight finished (writable or error): on to the HELLO, or the next address. */
static void connect_done(struct rbc *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        rbc__sess_connected(c);
        return;
    }
    rbc__net_close(c);
    c->addr_i++;
    int r = try_addresses(c);
    if (r < 0)
        rbc__sess_close(c, RBC_CLOSED_CONNECT, 0, -err, 0);
}

static void readable(struct rbc *c)
{
    uint32_t gen = c->gen;
    for (int i = 0; i < READS_PER_STEP; i++) {
        ssize_t n = recv(c->fd, c->rxbuf, sizeof(c->rxbuf), MSG_DONTWAIT);
        if (n > 0) {
            c->st.bytes_received += (uint64_t)n;
            if (rbc__sess_input(c, c->rxbuf, (size_t)n) < 0 || c->gen != gen)
                return;
            if ((size_t)n < sizeof(c->rxbuf))
                return; /* drained: a level-triggered wait says if more comes */
            continue;
        }
        if (n == 0) {
            rbc__sess_close(c, RBC_CLOSED_EOF, 0, 0, 0);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR)
            continue;
        rbc__sess_close(c, RBC_CLOSED_ERROR, 0, -errno, 0);
        return;
    }
}

void rbc__net_io(struct rbc *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == RBC__CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            connect_done(c);
        return;
    }
    uint32_t gen = c->gen;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        readable(c); /* reads the error or the end of stream, after any data before it */
    if (c->gen != gen || c->fd < 0)
        return;
    if ((events & EPOLLOUT) && c->out_len) {
        int r = rbc__net_flush(c);
        if (r < 0)
            rbc__sess_close(c, RBC_CLOSED_ERROR, 0, r, 0);
    }
}

uint8_t *rbc__out_reserve(struct rbc *c, size_t n)
{
    if ((size_t)c->out_off + c->out_len + n > c->out_cap && c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
    }
    if ((size_t)c->out_len + n > c->out_cap)
        return NULL;
    return c->out + c->out_off + c->out_len;
}

void rbc__out_commit(struct rbc *c, size_t n)
{
    c->out_len += (uint32_t)n;
    c->st.bytes_sent += n;
}

int rbc__net_flush(struct rbc *c)
{
    while (c->out_len && c->fd >= 0) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (uint32_t)n;
            c->out_len -= (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0; /* the epoll interest gains EPOLLOUT (rbc__sync) */
        return n < 0 ? -errno : -EPIPE;
    }
    if (!c->out_len)
        c->out_off = 0;
    return 0;
}

void rbc__net_close(struct rbc *c)
{
    if (c->fd >= 0) {
        if (c->fd_registered)
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->fd_registered = false;
    c->fd_events = 0;
    c->out_off = c->out_len = 0;
    c->rx_inl_len = 0;
    free(c->rx_split); /* a split DATA frame that will never complete */
    c->rx_split = NULL;
    c->gen++;
}
