/* ringbeatd.h — what the daemon's flag parser hands to its main loop. */
#ifndef RINGBEATD_H
#define RINGBEATD_H

#include <stdbool.h>
#include <stdint.h>

#include "presence.h"
#include "ringbeat.h"

/* Exit codes (documented in --help and ringbeatd(8)). */
#define EXIT_OK      0
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

struct options {
    struct rb_config cfg;
    const char *metrics_addr;
    const char *log_file;
    enum rb_log_level log_level;
    enum rb_log_format log_format;
    uint64_t stats_interval_ms;
    bool timeout_given;
    bool min_interval_given, max_interval_given;
    struct rbp_config presence;
    const char *redis_password_file;
    const char *auth_secret_file;
    char node_buf[65];
    bool tls; /* a tls:// listener: SIGHUP also reloads the certificate */
};

/* Parses argv into *o (defaults first); a bad flag prints why and exits with EXIT_USAGE. */
void rbd_parse_args(int argc, char **argv, struct options *o);

#endif
