/* epoll_ref.h — the epoll reference server's state, shared by its loop and its connection code. */
#ifndef EPOLL_REF_H
#define EPOLL_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

/*
 * Design (what a careful engineer would write with epoll, so the comparison is fair):
 * - level-triggered epoll, 1024 events per wait, one read per readable socket into a shared 64 KiB
 *   buffer (a second read only when the first filled it), so a heartbeat costs one read and one
 *   write; replies produced by one read leave in one write;
 * - per-connection state in an array indexed by fd; a partial frame stays inline (up to 32 bytes:
 *   every control frame but a long HELLO/CLOSE) and only larger partial frames borrow the heap;
 * - one binary-heap entry per connection with lazy re-arm: a received frame only stores a time,
 *   the heap is touched when the connection's deadline comes up (ping due or timeout);
 * - no allocation on the heartbeat path.
 */

#define REF_EVENTS       1024
#define REF_RX_BUF       65536
#define REF_TX_BUF       65536
#define REF_INLINE       32
#define REF_ACCEPT_BATCH 256
/* Timers due within this much of now fire together: the same precision as ringbeatd's 10 ms tick,
 * and it keeps a PONG that arrives a little late from costing a second heap operation. */
#define REF_SLACK_MS 10
#define REF_NO_HEAP  UINT32_MAX

struct conn {
    uint64_t id;
    int64_t last_rx_ms;   /* last complete frame (or accept) */
    int64_t last_ping_ms; /* last server PING sent */
    uint64_t ping_token;  /* token of the outstanding server PING: its send time in us */
    uint32_t interval_ms;
    uint32_t timeout_ms;
    uint32_t heap_idx;
    uint32_t out_len, out_cap;
    uint16_t in_len; /* bytes of a partial frame */
    uint8_t mode;
    bool open;
    bool seen_frame; /* HELLO is only valid as the first frame */
    uint8_t in_inline[REF_INLINE];
    uint8_t *in_big; /* RB_FRAME_HEADER_LEN + max_frame bytes, only while a big frame is partial */
    uint8_t *out;    /* pending output, only after the socket refused some */
};

struct heap_ent {
    int64_t deadline_ms;
    int fd;
};

/* Log-linear latency histogram: 16 sub-buckets per power of two (values within 6%). */
#define LAT_SUB     16
#define LAT_EXP_MAX 40
#define LAT_BUCKETS (LAT_SUB + (LAT_EXP_MAX - 4) * LAT_SUB)

struct ref {
    int epfd, lfd;
    struct conn *conns;
    uint32_t nconns_max; /* size of conns[] (RLIMIT_NOFILE) */
    struct heap_ent *heap;
    uint32_t heap_len;
    /* configuration */
    uint8_t mode;
    uint32_t interval_ms, timeout_ms, min_interval_ms, max_interval_ms;
    uint32_t max_conns, max_frame, max_pending_out;
    uint64_t stats_interval_ms;
    /* state */
    uint64_t next_id;
    uint64_t nopen, accepted, rejected_full;
    uint64_t closed_timeout, closed_eof, closed_peer, closed_reset, closed_proto, closed_slow;
    uint64_t pings_in, pongs_in, pings_out, pongs_out, data_in, hellos;
    uint64_t frames_in, frames_out;
    uint64_t rtt_hist[LAT_BUCKETS], rtt_count;
    uint64_t late_hist[LAT_BUCKETS], late_count;
    int64_t accept_paused_until_ms;
    uint8_t *rx, *tx;
    uint32_t tx_len;
};

/* epoll_ref.c: clock, log, histograms, timer heap. */
int64_t now_us(void);
int64_t now_ms(void);
__attribute__((format(printf, 2, 3))) void log_line(const char *event, const char *fmt, ...);
unsigned lat_index(uint64_t v);
void heap_update(struct ref *r, int fd, int64_t deadline_ms);
void heap_remove(struct ref *r, int fd);
int64_t conn_deadline(const struct conn *c);

/* epoll_ref_conn.c: a connection's input, output, accept and close. */
bool conn_write(struct ref *r, int fd, const uint8_t *p, size_t len);
void conn_close_with(struct ref *r, int fd, uint16_t code, uint64_t *counter);
void on_writable(struct ref *r, int fd);
void on_readable(struct ref *r, int fd);
void on_accept(struct ref *r);

#endif
