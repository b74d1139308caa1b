#include "util/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lm_json_init(lm_json *j)
{
    memset(j, 0, sizeof(*j));
}

static void put(lm_json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(lm_json *j, const char *fmt, ...)
{
    if (j->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = j->cap - j->len;
        int n = vsnprintf(j->buf ? j->buf + j->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            j->failed = true;
            return;
        }
        if ((size_t)n < room) {
            j->len += (size_t)n;
            return;
        }
        size_t cap = j->cap ? j->cap * 2 : 1024;
        while (cap < j->len + (size_t)n + 1)
            cap *= 2;
        char *nb = realloc(j->buf, cap);
        if (!nb) {
            j->failed = true;
            return;
        }
        j->buf = nb;
        j->cap = cap;
    }
}

static void put_string(lm_json *j, const char *s)
{
    put(j, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(j, "\\%c", c);
        else if (c < 0x20)
            put(j, "\\u%04x", c);
        else
            put(j, "%c", c);
    }
    put(j, "\"");
}

/* Comma and key before a value at the current depth. */
static void lead(lm_json *j, const char *key)
{
    if (j->depth && j->need_comma[j->depth - 1])
        put(j, ",");
    if (j->depth)
        j->need_comma[j->depth - 1] = true;
    if (key) {
        put_string(j, key);
        put(j, ":");
    }
}

static void open_scope(lm_json *j, const char *key, const char *brace)
{
    lead(j, key);
    put(j, "%s", brace);
    if (j->depth >= LM_JSON_MAX_DEPTH) {
        j->failed = true;
        return;
    }
    j->need_comma[j->depth++] = false;
}

static void close_scope(lm_json *j, const char *brace)
{
    if (!j->depth) {
        j->failed = true;
        return;
    }
    j->depth--;
    put(j, "%s", brace);
}

void lm_json_object_begin(lm_json *j, const char *key)
{
    open_scope(j, key, "{");
}
void lm_json_object_end(lm_json *j)
{
    close_scope(j, "}");
}
void lm_json_array_begin(lm_json *j, const char *key)
{
    open_scope(j, key, "[");
}
void lm_json_array_end(lm_json *j)
{
    close_scope(j, "]");
}

void lm_json_u64(lm_json *j, const char *key, uint64_t v)
{
    lead(j, key);
    put(j, "%llu", (unsigned long long)v);
}

void lm_json_double(lm_json *j, const char *key, double v)
{
    lead(j, key);
    if (isfinite(v))
        put(j, "%.3f", v);
    else
        put(j, "null");
}

void lm_json_str(lm_json *j, const char *key, const char *v)
{
    lead(j, key);
    put_string(j, v ? v : "");
}

void lm_json_bool(lm_json *j, const char *key, bool v)
{
    lead(j, key);
    put(j, "%s", v ? "true" : "false");
}

char *lm_json_finish(lm_json *j)
{
    if (j->failed || j->depth) {
        free(j->buf);
        return NULL;
    }
    put(j, "\n");
    return j->failed ? NULL : j->buf;
}
