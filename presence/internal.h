/* internal.h — the presence component's private parts: client table, event queue, threads. */
#ifndef RBP_INTERNAL_H
#define RBP_INTERNAL_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>

#include "presence.h"

/* ---- the client table (table.c): connection id -> entry, client id -> entries ---- */

/*
 * One per open connection. Reference-counted: the table holds one reference while the entry is
 * linked, and each queued event holds one, so an event outlives its connection's close.
 */
struct rbp_entry {
    uint64_t conn;
    struct rbp_entry *next_conn;   /* chain of the connection-id index */
    struct rbp_entry *next_client; /* chain of the client-id index */
    int64_t since_ms;              /* wall clock: when the current state began */
    uint32_t hash;                 /* of the client id */
    _Atomic uint32_t refs;
    uint8_t state;  /* enum rb_liveness */
    uint8_t id_len; /* 0: no client id (indexed by connection only) */
    char id[];
};

struct rbp_table {
    pthread_mutex_t lock;
    struct rbp_entry **by_conn, **by_client;
    uint32_t mask; /* both indexes have mask + 1 buckets */
    uint32_t entries, with_id;
    uint64_t rehashes; /* a resync restarts when the table was rehashed under it */
};

int rbp_table_init(struct rbp_table *t);
void rbp_table_free(struct rbp_table *t);
/* Links a new entry (refs 1, held by the table); NULL when memory is short. */
struct rbp_entry *rbp_table_add(struct rbp_table *t, uint64_t conn, const char *id, size_t id_len,
                                int64_t since_ms);
/* Unlinks the connection's entry and returns it with the table's reference (NULL: unknown). */
struct rbp_entry *rbp_table_remove(struct rbp_table *t, uint64_t conn);
/* Sets the state of a linked entry and returns it with a new reference (NULL: unknown). */
struct rbp_entry *rbp_table_set_state(struct rbp_table *t, uint64_t conn, uint8_t state,
                                      int64_t since_ms);
/* Up to cap connection ids of client id (other than `except`); the count found. */
unsigned rbp_table_conns_of(struct rbp_table *t, const char *id, size_t id_len, uint64_t except,
                            uint64_t *out, unsigned cap);
/* Whether conn is open here (with any client id, or none). */
bool rbp_table_has_conn(struct rbp_table *t, uint64_t conn);
/* Whether conn is open here with this client id. */
bool rbp_table_has(struct rbp_table *t, uint64_t conn, const char *id, size_t id_len);
/* A copy of one entry's fields, for a resync. */
struct rbp_snap {
    uint64_t conn;
    int64_t since_ms;
    uint8_t state, id_len;
    char id[RB_CLIENT_ID_MAX];
};
/*
 * Copies up to cap entries with a client id from bucket *cursor on; advances *cursor (past the
 * last bucket: done) and returns the count. *rehashes lets the caller notice a rehash between
 * calls (then it must start over).
 */
unsigned rbp_table_snapshot(struct rbp_table *t, uint32_t *cursor, struct rbp_snap *out,
                            unsigned cap, uint64_t *rehashes, bool *done);
static inline void rbp_entry_ref(struct rbp_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}
void rbp_entry_unref(struct rbp_entry *e);

/* ---- events (presence.c): bounded MPSC queue from the workers to the writer ---- */

enum rbp_event_type { RBP_EV_OPEN, RBP_EV_SUSPECT, RBP_EV_ALIVE, RBP_EV_CLOSE };

struct rbp_event {
    struct rbp_entry *entry; /* holds a reference */
    int64_t t_ms;
    uint8_t type;
    uint16_t reason; /* close: the rb_close_code, or the code given to rb_close */
};
struct rbp_cell {
    _Atomic uint64_t seq;
    struct rbp_event ev;
};
struct rbp_queue {
    struct rbp_cell *cells;
    uint32_t mask;
    _Atomic uint64_t tail;
    uint64_t head; /* the writer */
    int wake_fd;   /* eventfd: written only when the writer sleeps */
    _Atomic int sleeping;
};
int rbp_queue_init(struct rbp_queue *q, uint32_t cells);
void rbp_queue_free(struct rbp_queue *q);
int rbp_queue_push(struct rbp_queue *q, const struct rbp_event *ev);
bool rbp_queue_pop(struct rbp_queue *q, struct rbp_event *out);
uint64_t rbp_queue_depth(struct rbp_queue *q);

/* ---- Redis connections (rconn.c) ---- */

struct rbp_target {
    bool unix_socket;
    char host[256]; /* or the socket path */
    int port;
    int db;
};
int rbp_url_parse(const char *url, struct rbp_target *out);
/* Connects, authenticates, selects the db and names the connection; NULL on failure (err set). */
redisContext *rbp_connect(const struct rbp_target *t, const char *password, const char *name,
                          uint32_t timeout_ms, char *err, size_t err_cap);

/* ---- Lua scripts (scripts.c) ---- */
enum rbp_script {
    RBP_S_OPEN,
    RBP_S_STATE,
    RBP_S_CLOSE,
    RBP_S_BEGIN,
    RBP_S_SWEEP,
    RBP_S_GC,
    RBP_S_COUNT
};
extern const char *const rbp_script_src[RBP_S_COUNT];

/* ---- the component ---- */

#define RBP_RTT_BUCKETS 14
extern const uint32_t rbp_rtt_bounds_us[RBP_RTT_BUCKETS - 1];

struct rbp_stats {
    _Atomic uint64_t written, dropped_full, dropped_lost, resyncs, errors;
    _Atomic uint64_t connects_ok, connects_failed;
    _Atomic uint64_t rtt_bucket[RBP_RTT_BUCKETS], rtt_count, rtt_sum_us;
    _Atomic uint64_t inbox_delivered, inbox_undeliverable, inbox_failed, inbox_malformed;
    _Atomic uint64_t replaced_local, replaced_remote, replaced_stale;
    _Atomic int up, inbox_up;
};

struct rbp {
    struct rbp_config cfg;
    struct rbp_target target;
    bool have_target;
    char *password, *node, *prefix;
    struct rb_engine *engine;
    struct rbp_table table;
    struct rbp_queue queue;
    _Atomic int need_resync; /* an event was dropped or the link broke: rewrite the state */
    _Atomic int stop;
    uint32_t stop_deadline_ms;
    pthread_t writer, inbox;
    bool writer_started, inbox_started;
    int64_t started_ms;
    struct rbp_stats st;
};

void *rbp_writer_main(void *arg);
void *rbp_inbox_main(void *arg);
int64_t rbp_wall_ms(void);
uint64_t rbp_mono_ms(void);
/* 100 ms doubling to 5 s, with up to 25% jitter so that nodes do not reconnect in step. */
uint32_t rbp_backoff_next(uint32_t prev_ms, uint64_t *rng);

#endif
