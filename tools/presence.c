/* presence.c — embedding example: prints who comes online, goes suspect, returns, goes offline. */
#define _GNU_SOURCE /* sigwait under gnu11 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ringbeat.h"

/*
 * on_close only carries the connection id, so the client id seen at open is remembered here, in a
 * small open-addressed table keyed by the whole id (removed entries become tombstones, reused by
 * later inserts). Callbacks run on several worker threads, hence the lock.
 */
#define NAMES     4096
#define TOMBSTONE 1 /* never a connection id: generations start at 1 */
static struct {
    uint64_t id;
    char name[RB_CLIENT_ID_MAX + 1];
} names[NAMES];
static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned find(uint64_t id, int for_insert)
{
    unsigned h = (unsigned)((id * 0x9E3779B97F4A7C15ULL) >> 52) % NAMES;
    for (unsigned i = 0; i < NAMES; i++) {
        unsigned k = (h + i) % NAMES;
        if (names[k].id == id || names[k].id == 0 || (for_insert && names[k].id == TOMBSTONE))
            return k;
    }
    return NAMES;
}

static void name_of(uint64_t id, char out[RB_CLIENT_ID_MAX + 1], int forget)
{
    pthread_mutex_lock(&names_lock);
    unsigned k = find(id, 0);
    strcpy(out, k < NAMES && names[k].id == id ? names[k].name : "?");
    if (forget && k < NAMES && names[k].id == id)
        names[k].id = TOMBSTONE;
    pthread_mutex_unlock(&names_lock);
}

static void on_open(struct rb_engine *e, const struct rb_conn_info *info, void *user)
{
    (void)e, (void)user;
    char name[RB_CLIENT_ID_MAX + 1], peer[RB_ADDR_STRLEN];
    /* The client id is peer-chosen bytes: print only the harmless ones. */
    size_t n = info->client_id_len < RB_CLIENT_ID_MAX ? info->client_id_len : RB_CLIENT_ID_MAX;
    for (size_t i = 0; i < n; i++) {
        char c = info->client_id[i];
        name[i] = (c > ' ' && c < 0x7f) ? c : '_';
    }
    name[n] = '\0';
    if (n == 0)
        strcpy(name, "anonymous");
    pthread_mutex_lock(&names_lock);
    unsigned k = find(info->id, 1);
    if (k < NAMES) {
        names[k].id = info->id;
        strcpy(names[k].name, name);
    }
    pthread_mutex_unlock(&names_lock);
    rb_format_addr(&info->peer, peer, sizeof(peer));
    printf("online  %-20s from %s (mode %s, every %u ms)\n", name, peer, rb_mode_name(info->mode),
           info->interval_ms);
}

static void on_liveness(struct rb_engine *e, uint64_t id, enum rb_liveness from,
                        enum rb_liveness to, void *user)
{
    (void)e, (void)user;
    char name[RB_CLIENT_ID_MAX + 1];
    name_of(id, name, 0);
    if (to == RB_SUSPECT)
        printf("suspect %-20s (missed a heartbeat)\n", name);
    else if (to == RB_ALIVE && from == RB_SUSPECT)
        printf("back    %s\n", name);
}

static void on_close(struct rb_engine *e, uint64_t id, int reason, int peer_code, void *user)
{
    (void)e, (void)user;
    char name[RB_CLIENT_ID_MAX + 1];
    name_of(id, name, 1);
    if (reason == RB_CLOSE_PEER)
        printf("offline %-20s (said goodbye: %s)\n", name, rb_close_code_name(peer_code));
    else
        printf("offline %-20s (%s)\n", name, rb_close_code_name(reason));
}

int main(int argc, char **argv)
{
    struct rb_config cfg;
    rb_config_init(&cfg);
    cfg.listen[0] = argc > 1 ? argv[1] : "127.0.0.1:7600";
    cfg.listen_count = 1;
    cfg.interval_ms = 5000; /* a chat app's presence dot: 5 s pings, gone after 15 s */
    cfg.min_interval_ms = 1000;
    cfg.peer_addr = true;
    cfg.cb.on_open = on_open;
    cfg.cb.on_liveness = on_liveness;
    cfg.cb.on_close = on_close;

    /* Before any worker exists, so only sigwait below sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct rb_engine *e;
    int rc = rb_engine_create(&cfg, &e);
    if (rc == 0 && (rc = rb_engine_start(e)) != 0)
        rb_engine_destroy(e);
    if (rc != 0) {
        fprintf(stderr, "presence: cannot start on %s: %s\n", cfg.listen[0], strerror(-rc));
        return 1;
    }
    printf("presence service listening on %s (port %u); Ctrl-C to stop\n", cfg.listen[0],
           rb_engine_port(e, 0));

    int sig;
    sigwait(&set, &sig);
    rb_engine_stop(e); /* everyone gets CLOSE(5) and shows up as offline (shutdown) */
    rc = rb_engine_wait(e);
    rb_engine_destroy(e);
    return rc == 0 ? 0 : 1;
}
