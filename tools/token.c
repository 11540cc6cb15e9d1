/* token.c — ringbeat-token: mints (or checks) the token that lets a client claim its client id. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringbeat.h"

static const char usage[] =
    "usage: ringbeat-token --secret-file FILE --client ID [--ttl D | --expiry UNIX_S]\n"
    "       ringbeat-token --secret-file FILE --client ID --verify TOKEN\n"
    "Prints the token for client id ID, valid for --ttl (default 24h) or until --expiry, minted\n"
    "with the file's first key (the file ringbeatd --auth-secret-file reads). --verify checks a\n"
    "token against every key and prints ok, missing, malformed, expired or forged.\n"
    "Exit: 0 minted / valid, 1 not valid, 2 bad usage or unreadable keys.\n";

int main(int argc, char **argv)
{
    const char *file = NULL, *client = NULL, *verify = NULL;
    uint64_t ttl_us = 86400ull * 1000000, expiry = 0;
    static const struct option opts[] = {
        {"secret-file", required_argument, NULL, 'f'}, {"client", required_argument, NULL, 'c'},
        {"ttl", required_argument, NULL, 't'},         {"expiry", required_argument, NULL, 'e'},
        {"verify", required_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'f':
            file = optarg;
            break;
        case 'c':
            client = optarg;
            break;
        case 't':
            if (rb_parse_duration_us(optarg, &ttl_us) < 0) {
                fprintf(stderr, "ringbeat-token: --ttl: '%s' is not a duration\n", optarg);
                return 2;
            }
            break;
        case 'e':
            errno = 0;
            expiry = strtoull(optarg, &end, 10);
            if (errno || *end || optarg[0] < '0' || optarg[0] > '9') {
                fprintf(stderr, "ringbeat-token: --expiry: '%s' is not a Unix time\n", optarg);
                return 2;
            }
            break;
        case 'v':
            verify = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (!file || !client || optind < argc) {
        fputs(usage, stderr);
        return 2;
    }
    if (strlen(client) > RB_CLIENT_ID_MAX) {
        fprintf(stderr, "ringbeat-token: --client: longer than %d bytes\n", RB_CLIENT_ID_MAX);
        return 2;
    }
    struct rb_auth *a = NULL;
    int rc = rb_auth_load(file, &a);
    if (rc < 0) {
        fprintf(stderr, "ringbeat-token: --secret-file '%s': %s\n", file,
                rc == -EINVAL ? "a line is not a hex key of 16..128 bytes, or no key"
                              : strerror(-rc));
        return 2;
    }
    uint64_t now = (uint64_t)time(NULL);
    int ret = 0;
    if (verify) {
        enum rb_auth_result r =
            rb_auth_verify(a, client, strlen(client), verify, strlen(verify), now);
        puts(rb_auth_result_name(r));
        ret = r == RB_AUTH_OK ? 0 : 1;
    } else {
        char tok[RB_TOKEN_MAX + 1];
        if (!expiry)
            expiry = now + ttl_us / 1000000;
        int n = rb_auth_mint(a, client, strlen(client), expiry, tok, sizeof(tok));
        if (n < 0) {
            fprintf(stderr, "ringbeat-token: %s\n", strerror(-n));
            ret = 2;
        } else {
            puts(tok);
        }
    }
    rb_auth_free(a);
    return ret;
}
