/* log.c — operator log lines (text or JSON) on stderr, one write(2) per line. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringbeat.h"

/* Long enough for a stats line with every counter; longer lines are cut, never split in two. */
#define LOG_LINE_MAX 4096
#define LOG_PATH_MAX 4096

static _Atomic int g_level = RB_LOG_INFO;
static _Atomic int g_format = RB_LOG_TEXT;

static pthread_mutex_t g_file_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_file_path[LOG_PATH_MAX];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void rb_log_configure(enum rb_log_level level, enum rb_log_format format)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&g_format, (int)format, memory_order_relaxed);
}

int rb_log_parse_level(const char *s, enum rb_log_level *out)
{
    if (s == NULL)
        return -EINVAL;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum rb_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int rb_log_parse_format(const char *s, enum rb_log_format *out)
{
    if (s == NULL)
        return -EINVAL;
    if (strcmp(s, "text") == 0)
        *out = RB_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = RB_LOG_JSON;
    else
        return -EINVAL;
    return 0;
}

/* dup2 swaps fd 2 atomically, so a writer on another thread sees either the old or the new file. */
static int redirect_stderr(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (fd != STDERR_FILENO) {
        if (dup2(fd, STDERR_FILENO) < 0)
            rc = -errno;
        close(fd);
    }
    return rc;
}

int rb_log_set_file(const char *path)
{
    if (path == NULL || path[0] == '\0')
        return -EINVAL;
    size_t len = strlen(path);
    if (len >= sizeof(g_file_path))
        return -ENAMETOOLONG;
    pthread_mutex_lock(&g_file_lock);
    int rc = redirect_stderr(path);
    if (rc == 0)
        memcpy(g_file_path, path, len + 1);
    pthread_mutex_unlock(&g_file_lock);
    return rc;
}

int rb_log_reopen(void)
{
    pthread_mutex_lock(&g_file_lock);
    int rc = g_file_path[0] != '\0' ? redirect_stderr(g_file_path) : 0;
    pthread_mutex_unlock(&g_file_lock);
    return rc;
}

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    size_t reserve; /* bytes kept for the line's end: "\n", or "}\n" for JSON */
    bool cut;       /* something did not fit */
};

/* Output past the end is dropped and remembered, so a JSON field can be rolled back whole. */
static void put_mem(struct line *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - l->reserve - l->len;
    if (n > room) {
        n = room;
        l->cut = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put_mem(l, s, strlen(s));
}

static void put_json_string(struct line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put_mem(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put_mem(l, esc, 2);
        } else if (c == '\n') {
            put_mem(l, "\\n", 2);
        } else if (c == '\t') {
            put_mem(l, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put_mem(l, esc, 6);
        } else {
            put_mem(l, (const char *)&c, 1);
        }
    }
    put_mem(l, "\"", 1);
}

/* A plain JSON number (no leading zeros, optional fraction), so it can be emitted unquoted. */
static bool is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || s[i] < '0' || s[i] > '9')
        return false;
    if (s[i] == '0' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9')
        return false;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9')
            return false;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return i == n;
}

static bool is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/*
 * Turns `k=v k2="quoted value" free words` into JSON fields. Values in double quotes may contain
 * spaces and \" escapes; words that are not key=value are gathered into "msg" so nothing is lost.
 */
static void put_json_fields(struct line *l, const char *msg)
{
    char words[LOG_LINE_MAX];
    size_t words_len = 0;
    char val[LOG_LINE_MAX];
    const char *p = msg;

    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *tok = p;
        const char *k = p;
        while (is_key_char(*p))
            p++;
        size_t klen = (size_t)(p - k);
        if (klen > 0 && *p == '=') {
            p++;
            size_t vlen = 0;
            bool quoted = false;
            if (*p == '"') {
                quoted = true;
                p++;
                while (*p != '\0' && *p != '"') {
                    if (*p == '\\' && p[1] != '\0')
                        p++;
                    if (vlen < sizeof(val))
                        val[vlen++] = *p;
                    p++;
                }
                if (*p == '"')
                    p++;
            } else {
                while (*p != '\0' && *p != ' ') {
                    if (vlen < sizeof(val))
                        val[vlen++] = *p;
                    p++;
                }
            }
            size_t before = l->len;
            put_mem(l, ",", 1);
            put_json_string(l, k, klen);
            put_mem(l, ":", 1);
            if (!quoted && is_json_number(val, vlen))
                put_mem(l, val, vlen);
            else
                put_json_string(l, val, vlen);
            if (l->cut) {
                l->len = before; /* a half-written field would make the object unparseable */
                return;
            }
            continue;
        }
        p = tok;
        while (*p != '\0' && *p != ' ')
            p++;
        size_t wlen = (size_t)(p - tok);
        if (words_len != 0 && words_len < sizeof(words))
            words[words_len++] = ' ';
        if (wlen > sizeof(words) - words_len)
            wlen = sizeof(words) - words_len;
        memcpy(words + words_len, tok, wlen);
        words_len += wlen;
    }
    if (words_len > 0) {
        size_t before = l->len;
        put_str(l, ",\"msg\":");
        put_json_string(l, words, words_len);
        if (l->cut)
            l->len = before;
    }
}

static void put_timestamp(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char buf[40];
    int n =
        snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    if (n > 0)
        put_mem(l, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

void rb_log(enum rb_log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&g_level, memory_order_relaxed) || (int)level < 0)
        return;

    char msg[LOG_LINE_MAX];
    msg[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    /* A newline inside a message would forge a second log line. */
    for (char *c = msg; *c != '\0'; c++) {
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    }
    if (event == NULL || event[0] == '\0')
        event = "log";

    struct line l;
    l.len = 0;
    l.cut = false;
    l.reserve = 1;
    if (atomic_load_explicit(&g_format, memory_order_relaxed) == RB_LOG_JSON) {
        l.reserve = 2;
        put_str(&l, "{\"ts\":\"");
        put_timestamp(&l);
        put_str(&l, "\",\"level\":\"");
        put_str(&l, level_names[level]);
        put_str(&l, "\",\"event\":");
        put_json_string(&l, event, strlen(event));
        put_json_fields(&l, msg);
        l.buf[l.len++] = '}';
    } else {
        put_timestamp(&l);
        put_str(&l, " ");
        put_str(&l, level_names[level]);
        put_str(&l, " ");
        put_str(&l, event);
        if (msg[0] != '\0') {
            put_str(&l, " ");
            put_str(&l, msg);
        }
    }
    l.buf[l.len++] = '\n';

    /* O_APPEND or a pipe keeps one write whole; retry only the unlikely EINTR. */
    ssize_t w;
    do {
        w = write(STDERR_FILENO, l.buf, l.len);
    } while (w < 0 && errno == EINTR);
}
