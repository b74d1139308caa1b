/* Errors: internal calls return 0 or -errno; the first failure also leaves a
 * sentence in an lm_err so the user learns what happened and what to do. */
#ifndef LM_UTIL_ERROR_H
#define LM_UTIL_ERROR_H

#include <pthread.h>

typedef struct lm_err {
    pthread_mutex_t lock; /* several threads may fail at once; the first wins */
    int code;
    char msg[512];
} lm_err;

void lm_err_init(lm_err *e);
void lm_err_reset(lm_err *e);
/* Records the message if none is recorded yet and returns code (negative). */
int lm_err_set(lm_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Copies the first message into buf (for errbuf-style interfaces). */
void lm_err_copy(const lm_err *e, char *buf, size_t len);

#endif
