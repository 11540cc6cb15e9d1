/* fuzz_proxy.c — libFuzzer target: the PROXY protocol header parser (engine/proxy.c). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz_common.h"
#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Invariants: the parser never reads past the input; a result is -EPROTO, 0 or a length within
 * the input and RB__PROXY_MAX; a header found in a prefix is found, the same, in every longer
 * input (bytes after it belong to the codec); every prefix of a header is "need more" (the
 * receive stage buffers it), never an error; an error stays an error when more bytes arrive.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rb__proxy_hdr h, h2;
    int rc = rb__proxy_parse(data, size, &h);
    FUZZ_CHECK(rc == -EPROTO || (rc >= 0 && (size_t)rc <= size && rc <= RB__PROXY_MAX));
    if (rc > 0) {
        FUZZ_CHECK(h.local ? h.src.ss_family == AF_UNSPEC
                           : h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
        for (size_t i = 0; i < (size_t)rc; i++)
            FUZZ_CHECK(rb__proxy_parse(data, i, &h2) == 0);
        FUZZ_CHECK(rb__proxy_parse(data, (size_t)rc, &h2) == rc);
        FUZZ_CHECK(h2.local == h.local && memcmp(&h2.src, &h.src, sizeof(h.src)) == 0);
    } else if (rc == -EPROTO) {
        /* Once refused, the longest prefix that was not refused must have been "need more". */
        size_t lo = 0;
        while (lo < size && rb__proxy_parse(data, lo + 1, &h2) == 0)
            lo++;
        FUZZ_CHECK(rb__proxy_parse(data, lo + 1, &h2) == -EPROTO);
    }
    return 0;
}
