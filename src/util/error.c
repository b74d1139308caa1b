#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void lm_err_init(lm_err *e)
{
    pthread_mutex_init(&e->lock, NULL);
    e->code = 0;
    e->msg[0] = '\0';
}

void lm_err_reset(lm_err *e)
{
    pthread_mutex_lock(&e->lock);
    e->code = 0;
    e->msg[0] = '\0';
    pthread_mutex_unlock(&e->lock);
}

int lm_err_set(lm_err *e, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&e->lock);
    if (!e->code) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
        e->code = code;
    }
    pthread_mutex_unlock(&e->lock);
    return code;
}

void lm_err_copy(const lm_err *e, char *buf, size_t len)
{
    if (len)
        snprintf(buf, len, "%s", e->msg);
}
