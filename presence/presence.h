/* presence.h — presence and routing through Redis for a ringbeat engine (ringbeatd --redis). */
#ifndef RBP_PRESENCE_H
#define RBP_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringbeat.h"

/*
 * A component beside the engine, not inside it: it sees the engine only through the public API
 * (the on_open / on_liveness / on_close callbacks it installs, rb_send and rb_close for the
 * inbox and for replaced sessions, and one metrics hook), so the engine's loop stays Redis-
 * agnostic. The callbacks take a lock and queue an event (no Redis call, no syscall on a worker);
 * a writer thread sends the events to Redis in pipelined batches and an inbox thread reads the
 * node's inbox stream. Data model: docs/presence.md.
 */
struct rbp_config {
    const char *url;       /* redis://HOST[:PORT][/DB] or unix:///PATH[?db=N]; NULL: no Redis
                              (the client table alone, for --single-session on one node) */
    const char *password;  /* AUTH; NULL: none */
    const char *node;      /* this node's name */
    const char *prefix;    /* key prefix ("ringbeat:") */
    uint64_t events_max;   /* MAXLEN ~ of the events stream */
    uint32_t node_ttl_ms;  /* TTL of the node key, refreshed every third of it */
    uint32_t queue_events; /* bound of the event queue (a power of two) */
    bool single_session;   /* a client id may be connected once across all nodes */
};

/* Defaults: prefix "ringbeat:", 1,000,000 events, 30 s TTL, 65536 queued events. */
void rbp_config_init(struct rbp_config *c);

/*
 * Checks a URL without connecting: 0, or -EINVAL (not a URL this component speaks), -EPERM (a
 * password inside the URL: it would sit on the command line; use a file or the environment).
 */
int rbp_url_check(const char *url);

struct rbp;
int rbp_create(const struct rbp_config *cfg, struct rbp **out);
/* Installs the callbacks it needs into an engine configuration (cfg->cb and cfg->user). */
void rbp_attach(struct rbp *p, struct rb_config *cfg);
/* Starts the Redis threads once the engine runs (they connect in the background). */
int rbp_start(struct rbp *p, struct rb_engine *e);
/*
 * After the engine has stopped: writes what is queued for up to deadline_ms, removes this node's
 * presence and its node key, and stops the threads.
 */
void rbp_stop(struct rbp *p, uint32_t deadline_ms);
void rbp_destroy(struct rbp *p);
/* Prometheus series of the component (rb_metrics_extra_fn). */
size_t rbp_metrics(char *buf, size_t cap, void *p);

#endif
