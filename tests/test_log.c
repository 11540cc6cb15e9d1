/* test_log.c — unit tests of engine/log.c: line shapes, JSON fields, levels, file reopen. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringbeat.h"

static char dir[64];
static char path[128];
static int saved_stderr = -1;

/* Every test logs into a fresh file that stands in for stderr. */
static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/rb-test-log-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/log", dir);
    rb_log_configure(RB_LOG_INFO, RB_LOG_TEXT);
    return rb_log_set_file(path) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char old[160];
    snprintf(old, sizeof(old), "%s.1", path);
    unlink(path);
    unlink(old);
    rmdir(dir);
    /* Give cmocka its real stderr back for the next report. */
    dup2(saved_stderr, STDERR_FILENO);
    return 0;
}

/* The whole log file; the caller frees it. */
static char *slurp(const char *p)
{
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_text_line_shape(void **state)
{
    (void)state;
    rb_log(RB_LOG_INFO, "listening", "addr=127.0.0.1:%d", 41234);
    char *s = slurp(path);
    /* 2026-11-25T22:41:35.123Z info listening addr=127.0.0.1:41234 */
    assert_int_equal(count_lines(s), 1);
    assert_true(strlen(s) == 24 + strlen(" info listening addr=127.0.0.1:41234\n"));
    assert_true(s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':' && s[16] == ':' &&
                s[19] == '.' && s[23] == 'Z');
    for (int i = 0; i < 23; i++) {
        if (i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19)
            continue;
        assert_true(s[i] >= '0' && s[i] <= '9');
    }
    assert_string_equal(s + 24, " info listening addr=127.0.0.1:41234\n");
    free(s);
}

static void test_levels_filter(void **state)
{
    (void)state;
    rb_log(RB_LOG_DEBUG, "hidden", "x=1");
    rb_log(RB_LOG_WARN, "shown", "x=2");
    rb_log_configure(RB_LOG_ERROR, RB_LOG_TEXT);
    rb_log(RB_LOG_WARN, "hidden", "x=3");
    rb_log(RB_LOG_ERROR, "shown", "x=4");
    rb_log_configure(RB_LOG_DEBUG, RB_LOG_TEXT);
    rb_log(RB_LOG_DEBUG, "shown", NULL);
    char *s = slurp(path);
    assert_int_equal(count_lines(s), 3);
    assert_null(strstr(s, "hidden"));
    assert_non_null(strstr(s, " warn shown x=2\n"));
    assert_non_null(strstr(s, " error shown x=4\n"));
    assert_non_null(strstr(s, " debug shown\n"));
    free(s);
}

static void test_json_fields(void **state)
{
    (void)state;
    rb_log_configure(RB_LOG_INFO, RB_LOG_JSON);
    rb_log(RB_LOG_INFO, "stats",
           "conns=10 ratio=0.5 neg=-3 lead=012 name=\"two words\" esc=a\\b "
           "addr=127.0.0.1:80 free words");
    char *s = slurp(path);
    assert_int_equal(count_lines(s), 1);
    assert_true(strncmp(s, "{\"ts\":\"", 7) == 0);
    const char *rest = strstr(s, "Z\",\"level\":\"info\",\"event\":\"stats\",");
    assert_non_null(rest);
    assert_string_equal(strchr(rest, ',') + 1,
                        "\"level\":\"info\",\"event\":\"stats\",\"conns\":10,\"ratio\":0.5,"
                        "\"neg\":-3,\"lead\":\"012\",\"name\":\"two words\",\"esc\":\"a\\\\b\","
                        "\"addr\":\"127.0.0.1:80\",\"msg\":\"free words\"}\n");
    free(s);
}

static void test_no_forged_lines(void **state)
{
    (void)state;
    rb_log(RB_LOG_INFO, "evil", "a=1\nfake line b=\x01");
    rb_log_configure(RB_LOG_INFO, RB_LOG_JSON);
    rb_log(RB_LOG_INFO, "evil", "a=\"x\ny\" c=\x02");
    char *s = slurp(path);
    assert_int_equal(count_lines(s), 2);
    assert_non_null(strstr(s, "\"a\":\"x y\",\"c\":\"\\u0002\"}\n"));
    free(s);
}

static void test_long_lines_are_cut_but_whole(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'a', sizeof(big) - 1);
    rb_log(RB_LOG_INFO, "big", "k=1 v=%s", big);
    rb_log_configure(RB_LOG_INFO, RB_LOG_JSON);
    rb_log(RB_LOG_INFO, "big", "k=1 v=%s", big);
    char *s = slurp(path);
    assert_int_equal(count_lines(s), 2);
    char *second = strchr(s, '\n') + 1;
    assert_true(second - s <= 4096);
    /* The oversized field is dropped whole, so the object still parses. */
    assert_non_null(strstr(second, "\"event\":\"big\",\"k\":1}\n"));
    free(s);
}

static void test_reopen_after_rotation(void **state)
{
    (void)state;
    char old[160];
    snprintf(old, sizeof(old), "%s.1", path);
    rb_log(RB_LOG_INFO, "before", NULL);
    assert_int_equal(rename(path, old), 0);
    rb_log(RB_LOG_INFO, "still_old", NULL);
    assert_int_equal(rb_log_reopen(), 0);
    rb_log(RB_LOG_INFO, "after", NULL);
    char *o = slurp(old), *n = slurp(path);
    assert_non_null(strstr(o, " before\n"));
    assert_non_null(strstr(o, " still_old\n"));
    assert_null(strstr(o, "after"));
    assert_int_equal(count_lines(n), 1);
    assert_non_null(strstr(n, " info after\n"));
    free(o);
    free(n);
    assert_int_equal(rb_log_set_file("/nonexistent-dir/x.log"), -ENOENT);
    assert_int_equal(rb_log_set_file(""), -EINVAL);
}

static void test_parse(void **state)
{
    (void)state;
    enum rb_log_level l;
    enum rb_log_format f;
    assert_int_equal(rb_log_parse_level("error", &l), 0);
    assert_int_equal(l, RB_LOG_ERROR);
    assert_int_equal(rb_log_parse_level("debug", &l), 0);
    assert_int_equal(l, RB_LOG_DEBUG);
    assert_int_equal(rb_log_parse_level("INFO", &l), -EINVAL);
    assert_int_equal(rb_log_parse_level("", &l), -EINVAL);
    assert_int_equal(rb_log_parse_format("json", &f), 0);
    assert_int_equal(f, RB_LOG_JSON);
    assert_int_equal(rb_log_parse_format("text", &f), 0);
    assert_int_equal(f, RB_LOG_TEXT);
    assert_int_equal(rb_log_parse_format("xml", &f), -EINVAL);
}

int main(void)
{
    saved_stderr = dup(STDERR_FILENO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_text_line_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_forged_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lines_are_cut_but_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_rotation, setup, teardown),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
