/* The statistics report, shared by lm_stats_json() and callers that add
 * their own sections (the CLI adds the synthetic guest's). */
#ifndef LM_MIGRATION_STATS_H
#define LM_MIGRATION_STATS_H

#include "livemig.h"
#include "util/json.h"

/* Writes the contract's fields into the currently open JSON object. */
void lm__stats_json_fields(lm_json *j, const lm_stats *s, const char *role);

#endif
