/* A small JSON writer into a growing string: objects, arrays, numbers,
 * strings (escaped), booleans. Errors (ENOMEM) stick and surface at the end. */
#ifndef LM_UTIL_JSON_H
#define LM_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LM_JSON_MAX_DEPTH 16

typedef struct lm_json {
    char *buf;
    size_t len, cap;
    bool failed;
    unsigned depth;
    bool need_comma[LM_JSON_MAX_DEPTH];
} lm_json;

void lm_json_init(lm_json *j);
/* Returns the finished string (caller frees), or NULL if anything failed. */
char *lm_json_finish(lm_json *j);

void lm_json_object_begin(lm_json *j, const char *key);
void lm_json_object_end(lm_json *j);
void lm_json_array_begin(lm_json *j, const char *key);
void lm_json_array_end(lm_json *j);
/* key is NULL inside arrays. */
void lm_json_u64(lm_json *j, const char *key, uint64_t v);
void lm_json_double(lm_json *j, const char *key, double v);
void lm_json_str(lm_json *j, const char *key, const char *v);
void lm_json_bool(lm_json *j, const char *key, bool v);

#endif
