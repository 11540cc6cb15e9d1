/* metrics_http.c — serves rb_metrics_render()'s exposition on GET /metrics with libmicrohttpd. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/*
 * libmicrohttpd's one internal epoll thread multiplexes every scraper connection, so a client
 * that dawdles (half a request, a window that never opens) holds its own connection and nothing
 * else. These bound what all such clients together can hold.
 */
#define METRICS_IDLE_TIMEOUT_S 3   /* a connection silent this long (either way) is closed */
#define METRICS_MAX_CONNS      128 /* beyond: accepted and closed at once by MHD */
#define METRICS_CONN_MEMORY    (16 * 1024) /* per connection: request head and MHD's I/O buffers */
#define METRICS_BACKLOG        128         /* a burst of scrapers must not see SYNs dropped */
#define METRICS_BODY_INITIAL   (64 * 1024)
#define METRICS_OWN_RESERVE    512 /* room kept after the engine's exposition for our own family */

struct rb_metrics {
    struct rb_engine *engine;
    struct MHD_Daemon *httpd;
    uint16_t port;
    size_t body_hint;       /* atomic: last body length, so the next buffer is right first time */
    unsigned conns;         /* atomic: connections MHD holds now, from its notifications */
    uint64_t log_window_ns; /* atomic: start of the current 1 s window of MHD log lines */
    unsigned log_lines;     /* atomic: lines logged in that window */
};

/*
 * MHD's messages go to our log. Some come once per refused connection ("reached connection
 * limit"), so a flood of scrapers is allowed 5 lines a second and no more.
 */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct rb_metrics *m = cls;
    uint64_t now = rb_clock_ns();
    uint64_t start = __atomic_load_n(&m->log_window_ns, __ATOMIC_RELAXED);
    if (now - start >= 1000000000ULL) {
        __atomic_store_n(&m->log_window_ns, now, __ATOMIC_RELAXED);
        __atomic_store_n(&m->log_lines, 0, __ATOMIC_RELAXED);
    }
    if (__atomic_fetch_add(&m->log_lines, 1, __ATOMIC_RELAXED) >= 5)
        return;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    rb_log(RB_LOG_WARN, "metrics_http", "msg=\"%s\"", msg);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_state,
                          enum MHD_ConnectionNotificationCode what)
{
    (void)conn;
    (void)socket_state;
    struct rb_metrics *m = cls;
    if (what == MHD_CONNECTION_NOTIFY_STARTED)
        __atomic_fetch_add(&m->conns, 1, __ATOMIC_RELAXED);
    else if (what == MHD_CONNECTION_NOTIFY_CLOSED)
        __atomic_fetch_sub(&m->conns, 1, __ATOMIC_RELAXED);
}

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
                             struct MHD_Response *resp, const char *content_type)
{
    if (resp == NULL)
        return MHD_NO; /* out of memory: MHD closes the connection */
    enum MHD_Result rc = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (rc == MHD_YES && status == MHD_HTTP_METHOD_NOT_ALLOWED)
        rc = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, MHD_HTTP_METHOD_GET);
    if (rc == MHD_YES)
        rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp); /* MHD keeps its own reference while it sends */
    return rc;
}

static enum MHD_Result answer_simple(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    return queue(conn, status, resp, "text/plain; charset=utf-8");
}

/*
 * Each request renders into a buffer of its own, handed to MHD and freed when sent: scrapes are
 * seconds apart and a render costs microseconds, so a shared cached body would only add a lock and
 * a staleness rule, and two scrapers would see each other's numbers.
 */
static enum MHD_Result answer_metrics(struct rb_metrics *m, struct MHD_Connection *conn)
{
    size_t hint = __atomic_load_n(&m->body_hint, __ATOMIC_RELAXED);
    /* Counters grow between renders; the slack makes one pass almost always enough. */
    size_t cap = hint + hint / 4 + 1024 + METRICS_OWN_RESERVE;
    char *body = NULL;
    size_t len = 0;
    bool rendered = false;
    for (int tries = 0; tries < 3 && !rendered; tries++) {
        char *nb = realloc(body, cap);
        if (nb == NULL)
            break;
        body = nb;
        size_t need = rb_metrics_render(m->engine, body, cap - METRICS_OWN_RESERVE);
        if (need < cap - METRICS_OWN_RESERVE) {
            len = need;
            rendered = true;
        } else {
            cap = need + need / 4 + 1024 + METRICS_OWN_RESERVE;
        }
    }
    if (!rendered) {
        free(body);
        return answer_simple(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "500 Internal Server Error\n");
    }
    __atomic_store_n(&m->body_hint, len, __ATOMIC_RELAXED);
    /* This server's own family: what rb_metrics_render sees of the engine cannot see it. */
    int n = snprintf(body + len, cap - len,
                     "# HELP ringbeat_metrics_http_connections Connections to this /metrics "
                     "endpoint now (the scrape's own included).\n"
                     "# TYPE ringbeat_metrics_http_connections gauge\n"
                     "ringbeat_metrics_http_connections %u\n",
                     __atomic_load_n(&m->conns, __ATOMIC_RELAXED));
    if (n > 0 && (size_t)n < cap - len)
        len += (size_t)n;
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (resp == NULL)
        free(body);
    return queue(conn, MHD_HTTP_OK, resp, "text/plain; version=0.0.4; charset=utf-8");
}

/*
 * Called once the request head is complete (MHD has parsed and validated it). Answering on this
 * first call means a request body, which no answer here needs, is never read: MHD closes the
 * connection after the response instead.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_state)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_state;
    /* MHD passes the path without its query string; any query is ignored. */
    if (strcmp(url, "/metrics") != 0)
        return answer_simple(conn, MHD_HTTP_NOT_FOUND, "404 Not Found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return answer_simple(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
    return answer_metrics(cls, conn);
}

/*
 * The listening socket is ours, not MHD's: bind errors come back as a precise -errno (MHD only
 * says NULL), and port 0 is resolved with getsockname.
 */
static int listen_on(const char *addr, int *fd_out, uint16_t *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = rb_parse_addr(addr, &ss, &sl); /* the one address grammar (addr.c) */
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, METRICS_BACKLOG) < 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &bl) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *port_out = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    *fd_out = fd;
    return 0;
}

int rb_metrics_start(struct rb_engine *e, const char *addr, struct rb_metrics **out)
{
    if (e == NULL || addr == NULL || out == NULL)
        return -EINVAL;
    struct rb_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->engine = e;
    m->body_hint = METRICS_BODY_INITIAL;
    int fd = -1;
    int rc = listen_on(addr, &fd, &m->port);
    if (rc < 0) {
        free(m);
        return rc;
    }
    /* ITC: MHD_stop_daemon wakes the thread at once instead of waiting out a connection. */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    m->httpd =
        MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, m, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)METRICS_IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)METRICS_MAX_CONNS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)METRICS_CONN_MEMORY, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
                         m, MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (m->httpd == NULL) {
        /* MHD said why on its log; errno is not reliably set. The socket is not closed here:
         * MHD closes a given socket on its late failure paths (the only ones constant options can
         * reach), and a second close could hit a descriptor another thread has just opened. */
        free(m);
        return -EIO;
    }
    *out = m;
    return 0;
}

uint16_t rb_metrics_port(const struct rb_metrics *m)
{
    return m != NULL ? m->port : 0;
}

void rb_metrics_stop(struct rb_metrics *m)
{
    if (m == NULL)
        return;
    MHD_stop_daemon(m->httpd); /* closes every connection and the listening socket, joins */
    free(m);
}
