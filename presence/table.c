/* table.c — the client table: connection id -> entry and client id -> entries, on this node. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Two chained hash indexes over the same entries, one bucket array each (8 bytes per bucket,
 * doubled when there are two entries per bucket: chains of 1..2, 4..8 bytes per entry and
 * index), and one allocation per connection of exactly the entry's size: with a 36-byte client
 * id that is an 80-byte jemalloc class, so about 90 bytes per connection in all. Callbacks of every worker and the Redis threads share it under one mutex, taken at
 * open, close and liveness changes only, never per heartbeat.
 */
#define INITIAL_BUCKETS 1024u

static uint32_t hash_id(const char *id, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h;
}

static uint32_t hash_conn(uint64_t conn)
{
    return (uint32_t)((conn * 0x9E3779B97F4A7C15ULL) >> 32);
}

int rbp_table_init(struct rbp_table *t)
{
    memset(t, 0, sizeof(*t));
    t->by_conn = calloc(INITIAL_BUCKETS, sizeof(*t->by_conn));
    t->by_client = calloc(INITIAL_BUCKETS, sizeof(*t->by_client));
    if (!t->by_conn || !t->by_client) {
        free(t->by_conn);
        free(t->by_client);
        return -ENOMEM;
    }
    t->mask = INITIAL_BUCKETS - 1;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

void rbp_entry_unref(struct rbp_entry *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        free(e);
}

void rbp_table_free(struct rbp_table *t)
{
    if (!t->by_conn)
        return;
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct rbp_entry *e = t->by_conn[i];
        while (e) {
            struct rbp_entry *next = e->next_conn;
            rbp_entry_unref(e);
            e = next;
        }
    }
    free(t->by_conn);
    free(t->by_client);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof(*t));
}

/* Doubles both indexes at two entries per bucket; keeps the old ones when memory is short. */
static void grow(struct rbp_table *t)
{
    uint32_t cap = (t->mask + 1) * 2;
    struct rbp_entry **bc = calloc(cap, sizeof(*bc)), **bi = calloc(cap, sizeof(*bi));
    if (!bc || !bi) {
        free(bc);
        free(bi);
        return;
    }
    for (uint32_t i = 0; i <= t->mask; i++) {
        for (struct rbp_entry *e = t->by_conn[i], *n; e; e = n) {
            n = e->next_conn;
            uint32_t b = hash_conn(e->conn) & (cap - 1);
            e->next_conn = bc[b];
            bc[b] = e;
        }
        for (struct rbp_entry *e = t->by_client[i], *n; e; e = n) {
            n = e->next_client;
            uint32_t b = e->hash & (cap - 1);
            e->next_client = bi[b];
            bi[b] = e;
        }
    }
    free(t->by_conn);
    free(t->by_client);
    t->by_conn = bc;
    t->by_client = bi;
    t->mask = cap - 1;
    t->rehashes++;
}

struct rbp_entry *rbp_table_add(struct rbp_table *t, uint64_t conn, const char *id, size_t id_len,
                                int64_t since_ms)
{
    if (id_len > RB_CLIENT_ID_MAX)
        id_len = RB_CLIENT_ID_MAX;
    struct rbp_entry *e = malloc(offsetof(struct rbp_entry, id) + id_len);
    if (!e)
        return NULL;
    e->conn = conn;
    e->since_ms = since_ms;
    e->hash = hash_id(id, id_len);
    atomic_init(&e->refs, 1);
    e->state = RB_ALIVE;
    e->id_len = (uint8_t)id_len;
    if (id_len)
        memcpy(e->id, id, id_len);
    e->next_client = NULL;
    pthread_mutex_lock(&t->lock);
    if (t->entries >= 2 * (t->mask + 1))
        grow(t);
    uint32_t b = hash_conn(conn) & t->mask;
    e->next_conn = t->by_conn[b];
    t->by_conn[b] = e;
    if (id_len) {
        uint32_t bi = e->hash & t->mask;
        e->next_client = t->by_client[bi];
        t->by_client[bi] = e;
        t->with_id++;
    }
    t->entries++;
    pthread_mutex_unlock(&t->lock);
    return e;
}

static struct rbp_entry **find_conn(struct rbp_table *t, uint64_t conn)
{
    struct rbp_entry **pp = &t->by_conn[hash_conn(conn) & t->mask];
    while (*pp && (*pp)->conn != conn)
        pp = &(*pp)->next_conn;
    return pp;
}

struct rbp_entry *rbp_table_remove(struct rbp_table *t, uint64_t conn)
{
    pthread_mutex_lock(&t->lock);
    struct rbp_entry **pp = find_conn(t, conn), *e = *pp;
    if (e) {
        *pp = e->next_conn;
        if (e->id_len) {
            struct rbp_entry **pi = &t->by_client[e->hash & t->mask];
            while (*pi != e)
                pi = &(*pi)->next_client;
            *pi = e->next_client;
            t->with_id--;
        }
        t->entries--;
    }
    pthread_mutex_unlock(&t->lock);
    return e;
}

struct rbp_entry *rbp_table_set_state(struct rbp_table *t, uint64_t conn, uint8_t state,
                                      int64_t since_ms)
{
    pthread_mutex_lock(&t->lock);
    struct rbp_entry *e = *find_conn(t, conn);
    if (e) {
        e->state = state;
        e->since_ms = since_ms;
        rbp_entry_ref(e);
    }
    pthread_mutex_unlock(&t->lock);
    return e;
}

unsigned rbp_table_conns_of(struct rbp_table *t, const char *id, size_t id_len, uint64_t except,
                            uint64_t *out, unsigned cap)
{
    unsigned n = 0;
    if (!id_len)
        return 0;
    uint32_t h = hash_id(id, id_len);
    pthread_mutex_lock(&t->lock);
    for (struct rbp_entry *e = t->by_client[h & t->mask]; e && n < cap; e = e->next_client)
        if (e->hash == h && e->id_len == id_len && e->conn != except &&
            memcmp(e->id, id, id_len) == 0)
            out[n++] = e->conn;
    pthread_mutex_unlock(&t->lock);
    return n;
}

bool rbp_table_has_conn(struct rbp_table *t, uint64_t conn)
{
    pthread_mutex_lock(&t->lock);
    bool ok = *find_conn(t, conn) != NULL;
    pthread_mutex_unlock(&t->lock);
    return ok;
}

bool rbp_table_has(struct rbp_table *t, uint64_t conn, const char *id, size_t id_len)
{
    pthread_mutex_lock(&t->lock);
    struct rbp_entry *e = *find_conn(t, conn);
    bool ok = e && e->id_len == id_len && (id_len == 0 || memcmp(e->id, id, id_len) == 0);
    pthread_mutex_unlock(&t->lock);
    return ok;
}

unsigned rbp_table_snapshot(struct rbp_table *t, uint32_t *cursor, struct rbp_snap *out,
                            unsigned cap, uint64_t *rehashes, bool *done)
{
    unsigned n = 0;
    pthread_mutex_lock(&t->lock);
    *rehashes = t->rehashes;
    uint32_t b = *cursor;
    /* Whole buckets only, so a bucket is never split between two calls. */
    for (; b <= t->mask; b++) {
        unsigned len = 0;
        for (struct rbp_entry *e = t->by_client[b]; e; e = e->next_client)
            len++;
        if (n + len > cap && n > 0)
            break;
        for (struct rbp_entry *e = t->by_client[b]; e && n < cap; e = e->next_client) {
            struct rbp_snap *s = &out[n++];
            s->conn = e->conn;
            s->since_ms = e->since_ms;
            s->state = e->state;
            s->id_len = e->id_len;
            memcpy(s->id, e->id, e->id_len);
        }
    }
    *cursor = b;
    *done = b > t->mask;
    pthread_mutex_unlock(&t->lock);
    return n;
}
