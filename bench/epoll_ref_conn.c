/* epoll_ref_conn.c — the epoll reference server's connections: input, output, accept, close. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "epoll_ref.h"

/* ---- output ---- */

static void conn_close(struct ref *r, int fd, uint64_t *counter);

/* Queues what the socket refused; false when the pending-output cap is reached. */
static bool out_queue(struct ref *r, struct conn *c, int fd, const uint8_t *p, size_t len)
{
    if ((size_t)c->out_len + len > r->max_pending_out)
        return false;
    if (c->out_len + len > c->out_cap) {
        uint32_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + len)
            cap *= 2;
        uint8_t *nb = realloc(c->out, cap);
        if (!nb)
            return false;
        c->out = nb;
        c->out_cap = cap;
    }
    bool was_empty = c->out_len == 0;
    memcpy(c->out + c->out_len, p, len);
    c->out_len += (uint32_t)len;
    if (was_empty) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
        epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    return true;
}

/* Writes now, or queues behind output already pending. Returns false if the connection closed. */
bool conn_write(struct ref *r, int fd, const uint8_t *p, size_t len)
{
    struct conn *c = &r->conns[fd];
    if (c->out_len == 0) {
        ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == (ssize_t)len)
            return true;
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                conn_close(r, fd, &r->closed_reset);
                return false;
            }
            n = 0;
        }
        p += n;
        len -= (size_t)n;
    }
    if (!out_queue(r, c, fd, p, len)) {
        conn_close(r, fd, &r->closed_slow);
        return false;
    }
    return true;
}

static bool tx_flush(struct ref *r, int fd)
{
    uint32_t len = r->tx_len;
    r->tx_len = 0;
    return len == 0 || conn_write(r, fd, r->tx, len);
}

/* Replies produced by one read are gathered so they leave in one send. */
static uint8_t *tx_reserve(struct ref *r, int fd, size_t len, bool *alive)
{
    *alive = true;
    r->frames_out++;
    if (r->tx_len + len > REF_TX_BUF)
        *alive = tx_flush(r, fd);
    uint8_t *p = r->tx + r->tx_len;
    r->tx_len += (uint32_t)len;
    return p;
}

void on_writable(struct ref *r, int fd)
{
    struct conn *c = &r->conns[fd];
    ssize_t n = send(fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(r, fd, &r->closed_reset);
        return;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (uint32_t)n;
    if (c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
}

/* Sends CLOSE(code) best effort (the peer may not read), then releases the connection. */
void conn_close_with(struct ref *r, int fd, uint16_t code, uint64_t *counter)
{
    uint8_t buf[RB__CONTROL_MAX];
    size_t len = rb__put_close(buf, code, NULL);
    r->frames_out++;
    send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    conn_close(r, fd, counter);
}

static void conn_close(struct ref *r, int fd, uint64_t *counter)
{
    struct conn *c = &r->conns[fd];
    if (!c->open)
        return;
    heap_remove(r, fd);
    free(c->in_big);
    free(c->out);
    c->in_big = NULL;
    c->out = NULL;
    c->open = false;
    close(fd); /* also drops it from the epoll set: the fd is never duplicated */
    r->nopen--;
    (*counter)++;
}

/* ---- input ---- */

static void apply_hello(struct ref *r, struct conn *c, const struct rb__hello *h)
{
    c->mode = h->mode;
    uint32_t iv = h->interval_ms ? h->interval_ms : r->interval_ms;
    if (iv < r->min_interval_ms)
        iv = r->min_interval_ms;
    if (iv > r->max_interval_ms)
        iv = r->max_interval_ms;
    uint32_t to = h->timeout_ms ? h->timeout_ms : (h->interval_ms ? 3 * iv : r->timeout_ms);
    uint64_t max_to = 4ull * r->max_interval_ms;
    if (to > max_to)
        to = (uint32_t)max_to;
    /* A timeout shorter than the interval would drop every healthy peer between two PINGs. */
    if (to <= iv)
        to = iv + REF_SLACK_MS;
    c->interval_ms = iv;
    c->timeout_ms = to;
}

/* Handles one complete frame. Returns false if the connection was closed. */
static bool on_frame(struct ref *r, int fd, const struct rb__frame_hdr *h, const uint8_t *pl)
{
    struct conn *c = &r->conns[fd];
    bool first = !c->seen_frame, alive;
    r->frames_in++;
    c->seen_frame = true;
    c->last_rx_ms = now_ms();
    switch (h->type) {
    case RB_FRAME_HELLO: {
        struct rb__hello hello;
        if (!first || rb__hello_parse(pl, h->len, &hello) < 0) {
            conn_close_with(r, fd, RB_CLOSE_PROTOCOL, &r->closed_proto);
            return false;
        }
        r->hellos++;
        apply_hello(r, c, &hello);
        struct rb__welcome w = {RB_PROTO_VERSION, c->mode, c->interval_ms, c->timeout_ms, c->id};
        uint8_t *p = tx_reserve(r, fd, RB_FRAME_HEADER_LEN + RB__WELCOME_LEN, &alive);
        if (!alive)
            return false;
        rb__put_welcome(p, &w);
        /* The new interval can be shorter than the default the heap entry was made with. */
        heap_update(r, fd, conn_deadline(c));
        return true;
    }
    case RB_FRAME_PING:
        r->pings_in++;
        if (c->mode == RB_MODE_SILENT)
            return true;
        uint8_t *p = tx_reserve(r, fd, RB_FRAME_HEADER_LEN + RB__PING_LEN, &alive);
        if (!alive)
            return false;
        rb__put_ping(p, RB_FRAME_PONG, rb__get_u64(pl));
        r->pongs_out++;
        return true;
    case RB_FRAME_PONG: {
        r->pongs_in++;
        uint64_t token = rb__get_u64(pl);
        if (token != 0 && token == c->ping_token) {
            int64_t rtt = now_us() - (int64_t)token;
            r->rtt_hist[lat_index(rtt > 0 ? (uint64_t)rtt : 0)]++;
            r->rtt_count++;
            c->ping_token = 0;
        }
        return true;
    }
    case RB_FRAME_DATA: {
        r->data_in++;
        uint8_t *d = tx_reserve(r, fd, RB_FRAME_HEADER_LEN + (size_t)h->len, &alive);
        if (!alive)
            return false;
        rb__put_data(d, pl, h->len);
        return true;
    }
    case RB_FRAME_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        if (rb__close_parse(pl, h->len, &code, &reason, &reason_len) < 0) {
            conn_close_with(r, fd, RB_CLOSE_PROTOCOL, &r->closed_proto);
            return false;
        }
        if (!tx_flush(r, fd))
            return false;
        conn_close(r, fd, &r->closed_peer);
        return false;
    }
    default: /* WELCOME from a client */
        conn_close_with(r, fd, RB_CLOSE_PROTOCOL, &r->closed_proto);
        return false;
    }
}

static bool header_ok(struct ref *r, int fd, const uint8_t *hdr, struct rb__frame_hdr *h)
{
    int rc = rb__frame_check(hdr, r->max_frame, h);
    if (rc == 0)
        return true;
    r->tx_len = 0;
    conn_close_with(r, fd, rc == -EMSGSIZE ? RB_CLOSE_TOO_BIG : RB_CLOSE_PROTOCOL,
                    &r->closed_proto);
    return false;
}

/* Parses the bytes of one read: first completes a partial frame, then frames in place. */
static bool consume(struct ref *r, int fd, const uint8_t *p, size_t n)
{
    struct conn *c = &r->conns[fd];
    struct rb__frame_hdr h;
    if (c->in_len > 0) {
        uint8_t *buf = c->in_big ? c->in_big : c->in_inline;
        while (c->in_len < RB_FRAME_HEADER_LEN && n > 0) {
            buf[c->in_len++] = *p++;
            n--;
        }
        if (c->in_len < RB_FRAME_HEADER_LEN)
            return true;
        if (!header_ok(r, fd, buf, &h))
            return false;
        size_t total = RB_FRAME_HEADER_LEN + (size_t)h.len;
        if (total > REF_INLINE && !c->in_big) {
            c->in_big = malloc(RB_FRAME_HEADER_LEN + r->max_frame);
            if (!c->in_big) {
                conn_close(r, fd, &r->closed_reset);
                return false;
            }
            memcpy(c->in_big, c->in_inline, c->in_len);
            buf = c->in_big;
        }
        size_t take = total - c->in_len < n ? total - c->in_len : n;
        memcpy(buf + c->in_len, p, take);
        c->in_len += (uint16_t)take;
        p += take;
        n -= take;
        if (c->in_len < total)
            return true;
        c->in_len = 0;
        if (!on_frame(r, fd, &h, buf + RB_FRAME_HEADER_LEN))
            return false;
        free(c->in_big);
        c->in_big = NULL;
    }
    while (n >= RB_FRAME_HEADER_LEN) {
        if (!header_ok(r, fd, p, &h))
            return false;
        size_t total = RB_FRAME_HEADER_LEN + (size_t)h.len;
        if (n < total)
            break;
        if (!on_frame(r, fd, &h, p + RB_FRAME_HEADER_LEN))
            return false;
        p += total;
        n -= total;
    }
    if (n > 0) {
        if (n > REF_INLINE) {
            c->in_big = malloc(RB_FRAME_HEADER_LEN + r->max_frame);
            if (!c->in_big) {
                conn_close(r, fd, &r->closed_reset);
                return false;
            }
        }
        memcpy(c->in_big ? c->in_big : c->in_inline, p, n);
        c->in_len = (uint16_t)n;
    }
    return true;
}

void on_readable(struct ref *r, int fd)
{
    /* Bounded: a peer that streams cannot starve the others; level triggering brings us back. */
    for (int round = 0; round < 4; round++) {
        ssize_t n = recv(fd, r->rx, REF_RX_BUF, 0);
        if (n == 0) {
            conn_close(r, fd, &r->closed_eof);
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                conn_close(r, fd, &r->closed_reset);
            return;
        }
        r->tx_len = 0;
        if (!consume(r, fd, r->rx, (size_t)n))
            return;
        if (!tx_flush(r, fd))
            return;
        if (n < REF_RX_BUF)
            return; /* drained: skip the read that would only say EAGAIN */
    }
}

void on_accept(struct ref *r)
{
    int64_t now = now_ms();
    for (int i = 0; i < REF_ACCEPT_BATCH; i++) {
        int fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Level-triggered: a listener we cannot serve would spin. Pause it briefly. */
                struct epoll_event ev = {.events = 0, .data.fd = r->lfd};
                epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->lfd, &ev);
                r->accept_paused_until_ms = now + 100;
            }
            return;
        }
        r->accepted++;
        if ((uint32_t)fd >= r->nconns_max || r->nopen >= r->max_conns) {
            uint8_t buf[RB__CONTROL_MAX];
            send(fd, buf, rb__put_close(buf, RB_CLOSE_FULL, NULL), MSG_DONTWAIT | MSG_NOSIGNAL);
            close(fd);
            r->rejected_full++;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = &r->conns[fd];
        *c = (struct conn){
            .id = ++r->next_id,
            .last_rx_ms = now,
            .interval_ms = r->interval_ms,
            .timeout_ms = r->timeout_ms,
            .heap_idx = REF_NO_HEAP,
            .mode = r->mode,
            .open = true,
        };
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            c->open = false;
            continue;
        }
        r->nopen++;
        heap_update(r, fd, conn_deadline(c));
    }
}

/* Runs every timer due (within the slack): PINGs in server mode, CLOSE(2) on timeout. */
