/*
 * What `livemig` reports after a migration: the library's statistics and
 * the synthetic guest's part, as text on stdout and as one JSON object.
 */
#ifndef LM_CLI_REPORT_H
#define LM_CLI_REPORT_H

#include "guest/report.h"
#include "livemig.h"

/* The human report on stdout; gr (may be NULL) adds the guest's line, with
 * phase naming the stretch of its progress. */
void cli_report_print(const lm_stats *st, const char *role, const lm_guest_report *gr,
                      const char *phase);
/* Writes lm_stats_json()'s object to path, with the guest's report under
 * "guest" unless gr is NULL. 0, or -1 after saying why on stderr. */
int cli_report_json(const char *path, const lm_stats *st, const char *role,
                    const lm_guest_report *gr);

/* The same with the guest's object already written (a malloc()ed JSON
 * object, taken and freed; NULL: none). */
int cli_report_json_guest(const char *path, const lm_stats *st, const char *role, char *guest);

#endif
