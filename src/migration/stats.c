/* The statistics report: lm_stats_json() and lm_stats_print(). */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livemig.h"
#include "util/json.h"
#include "util/parse.h"

/* A time in ms as QEMU's integers: rounded, never negative. */
static uint64_t ms_int(double ms)
{
    return ms > 0 ? (uint64_t)(ms + 0.5) : 0;
}

/* The contract's fields, into the currently open JSON object. Fields that
 * QEMU's query-migrate has (qapi/migration.json, MigrationInfo and
 * MigrationStats) carry its names and JSON types: integers for times in ms,
 * counts and rates in pages, a number for mbps. The rest are livemig's. */
static void stats_json_fields(lm_json *j, const lm_stats *s, const char *role)
{
    bool dest = role && role[0] == 'd';
    lm_json_str(j, "role", role);
    lm_json_str(j, "status", lm_status_name(s->status));
    if (s->error_desc[0])
        lm_json_str(j, "error-desc", s->error_desc);
    lm_json_u64(j, "total-time", ms_int(s->total_time_ms));
    lm_json_u64(j, "downtime", ms_int(s->downtime_ms));
    lm_json_double(j, "downtime-ms", s->downtime_ms); /* the same, with its fraction */
    lm_json_u64(j, "setup-time", ms_int(s->setup_time_ms));
    lm_json_u64(j, "verify-time", ms_int(s->verify_time_ms));
    if (!dest) {
        lm_json_str(j, "dirty-tracker", s->tracker);
        lm_json_str(j, "switchover-reason", s->switchover_reason);
        lm_json_u64(j, "expected-downtime", ms_int(s->expected_downtime_ms));
        lm_json_u64(j, "cpu-throttle-percentage", s->cpu_throttle_percentage);
        lm_json_u64(j, "dirty-limit", s->dirty_limit);
    } else if (s->tracker[0]) {
        lm_json_str(j, "placement", s->tracker); /* how precopy pages were placed */
    }
    lm_json_object_begin(j, "ram");
    lm_json_u64(j, "transferred", s->transferred);
    lm_json_u64(j, "remaining", s->remaining);
    lm_json_u64(j, "total", s->total);
    lm_json_u64(j, "duplicate", s->duplicate);
    lm_json_u64(j, "normal", s->normal);
    lm_json_u64(j, "normal-bytes", s->normal_bytes);
    lm_json_u64(j, "dirty-pages-rate", ms_int(s->dirty_pages_rate));
    lm_json_double(j, "mbps", s->mbps);
    lm_json_u64(j, "dirty-sync-count", s->dirty_sync_count);
    lm_json_u64(j, "postcopy-requests", s->postcopy_requests);
    lm_json_u64(j, "page-size", s->page_size);
    lm_json_u64(j, "multifd-bytes", s->multifd_bytes);
    lm_json_u64(j, "pages-per-second", ms_int(s->pages_per_second));
    lm_json_u64(j, "precopy-bytes", s->precopy_bytes);
    lm_json_u64(j, "downtime-bytes", s->downtime_bytes);
    lm_json_u64(j, "postcopy-bytes", s->postcopy_bytes);
    lm_json_object_end(j);
    if (dest) {
        lm_json_u64(j, "dest-minor-faults", s->dest_minor_faults);
        lm_json_u64(j, "dest-major-faults", s->dest_major_faults);
    } else {
        lm_json_array_begin(j, "rounds");
        unsigned n = s->nrounds < LM_MAX_ROUND_STATS ? s->nrounds : LM_MAX_ROUND_STATS;
        for (unsigned i = 0; i < n; i++) {
            const lm_round_stats *r = &s->rounds[i];
            lm_json_object_begin(j, NULL);
            lm_json_u64(j, "round", r->round);
            lm_json_u64(j, "dirty-pages", r->dirty_pages);
            lm_json_u64(j, "bytes", r->bytes);
            lm_json_double(j, "duration", r->duration_ms);
            lm_json_double(j, "bandwidth-mbps", r->bandwidth_bps * 8 / 1e6);
            lm_json_u64(j, "dirty-pages-rate", ms_int(r->dirty_pages_rate));
            lm_json_u64(j, "cpu-throttle-percentage", r->throttle_percent);
            lm_json_object_end(j);
        }
        lm_json_array_end(j);
    }
    if (s->postcopy) {
        lm_json_object_begin(j, "postcopy");
        if (!dest)
            lm_json_u64(j, "needed", s->postcopy_needed);
        if (dest) {
            lm_json_u64(j, "faults", s->postcopy_faults);
            lm_json_u64(j, "pages-placed", s->postcopy_pages_placed);
            lm_json_u64(j, "zero-pages-placed", s->postcopy_zero_placed);
            lm_json_u64(j, "duplicates", s->postcopy_duplicates);
            lm_json_u64(j, "eexist", s->postcopy_eexist);
            lm_json_u64(j, "moved", s->postcopy_moved);
            lm_json_double(j, "request-latency-p50-us", s->request_latency_p50_us);
            lm_json_double(j, "request-latency-p99-us", s->request_latency_p99_us);
            lm_json_double(j, "request-latency-max-us", s->request_latency_max_us);
            lm_json_u64(j, "request-latency-count", s->request_latency_count);
            lm_json_double(j, "vcpu-blocktime-ms", s->vcpu_blocktime_ms);
        }
        lm_json_object_end(j);
    }
    if (s->reconnects) {
        lm_json_object_begin(j, "recovery");
        lm_json_u64(j, "reconnects", s->reconnects);
        lm_json_double(j, "paused-time", s->paused_ms);
        lm_json_double(j, "resume-time", s->resume_ms);
        if (!dest && s->resume_lacked_bytes) {
            lm_json_u64(j, "lacked-bytes", s->resume_lacked_bytes);
            lm_json_u64(j, "bytes-after", s->resume_sent_bytes);
        }
        lm_json_object_end(j);
    }
    lm_json_object_begin(j, "tls");
    lm_json_bool(j, "enabled", s->tls_mode[0] != '\0');
    if (s->tls_mode[0]) {
        lm_json_str(j, "mode", s->tls_mode);
        lm_json_str(j, "cipher", s->tls_cipher);
        lm_json_bool(j, "ktls", s->tls_ktls);
        lm_json_str(j, "ktls-reason", s->tls_ktls_why);
    }
    lm_json_object_end(j);
    if (s->verify_done) {
        lm_json_object_begin(j, "verify");
        lm_json_bool(j, "match", s->verify_match);
        lm_json_str(j, "digest", s->digest);
        lm_json_object_end(j);
    }
}

static char *stats_json_text(const lm_stats *s, const char *role);
static void stats_print_text(const lm_stats *s, const char *role, FILE *out);

/* A caller's lm_stats may be shorter (built against an older header):
 * its size bytes over zeros, in a full one. NULL if out of memory. */
static lm_stats *stats_full(const lm_stats *s)
{
    lm_stats *full = calloc(1, sizeof(*full));
    if (!full)
        return NULL;
    /* A size of 0 (a struct the caller filled itself) is API 1.0's. */
    size_t v1_0 = offsetof(lm_stats, rounds) + sizeof(s->rounds);
    size_t size = s->size ? s->size : v1_0;
    size_t n = size < sizeof(*full) ? size : sizeof(*full);
    memcpy(full, s, n);
    full->size = sizeof(*full);
    return full;
}

char *lm_stats_json(const lm_stats *caller, const char *role)
{
    lm_stats *s = stats_full(caller);
    if (!s)
        return NULL;
    char *out = stats_json_text(s, role);
    free(s);
    return out;
}

static char *stats_json_text(const lm_stats *s, const char *role)
{
    lm_json j;
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    stats_json_fields(&j, s, role);
    lm_json_object_end(&j);
    return lm_json_finish(&j);
}

void lm_stats_print(const lm_stats *caller, const char *role, FILE *out)
{
    lm_stats *s = stats_full(caller);
    if (!s) {
        fprintf(out, "Migration status: %s (the report needs memory it could not get)\n",
                lm_status_name(caller->status));
        return;
    }
    stats_print_text(s, role, out);
    free(s);
}

static void stats_print_text(const lm_stats *s, const char *role, FILE *out)
{
    char a[32], b[32];
    bool dest = role && role[0] == 'd';
    fprintf(out, "Migration status: %s (%s)\n", lm_status_name(s->status),
            dest ? "destination" : "source");
    if (s->error_desc[0])
        fprintf(out, "error: %s\n", s->error_desc);
    fprintf(out, "total time: %.0f ms\n", s->total_time_ms);
    fprintf(out, "downtime: %.1f ms%s\n", s->downtime_ms,
            dest ? " (from the source's last word before it stopped the guest)" : "");
    fprintf(out, "setup: %.1f ms\n", s->setup_time_ms);
    if (s->tls_mode[0])
        fprintf(out, "tls: %s, %s, kernel TLS %s\n", s->tls_mode, s->tls_cipher,
                s->tls_ktls ? "on" : "off");
    if (s->verify_done)
        fprintf(out, "verify: %s (digest %s, %.0f ms, not counted in downtime)\n",
                s->verify_match ? "match" : "MISMATCH", s->digest, s->verify_time_ms);
    fprintf(out, "transferred ram: %s\n", lm_format_bytes(s->transferred, a, sizeof(a)));
    fprintf(out, "throughput: %.2f mbps\n", s->mbps);
    fprintf(out, "total ram: %s\n", lm_format_bytes(s->total, a, sizeof(a)));
    fprintf(out, "duplicate: %llu pages\n", (unsigned long long)s->duplicate);
    fprintf(out, "normal: %llu pages\n", (unsigned long long)s->normal);
    fprintf(out, "normal bytes: %s\n", lm_format_bytes(s->normal_bytes, a, sizeof(a)));
    fprintf(out, "dirty sync count: %llu\n", (unsigned long long)s->dirty_sync_count);
    fprintf(out, "pages-per-second: %.0f\n", s->pages_per_second);
    if (s->postcopy)
        fprintf(out, "postcopy: %llu page requests\n", (unsigned long long)s->postcopy_requests);
    if (s->reconnects)
        fprintf(out, "recovery: %llu reconnects, paused %.0f ms, last resume %.0f ms\n",
                (unsigned long long)s->reconnects, s->paused_ms, s->resume_ms);
    if (s->postcopy && dest)
        fprintf(out,
                "postcopy: %llu pages placed, %llu zero pages placed, request latency "
                "p50 %.0f us p99 %.0f us max %.0f us, vCPU blocktime %.1f ms\n",
                (unsigned long long)s->postcopy_pages_placed,
                (unsigned long long)s->postcopy_zero_placed, s->request_latency_p50_us,
                s->request_latency_p99_us, s->request_latency_max_us, s->vcpu_blocktime_ms);
    if (!dest) {
        if (s->switchover_reason[0])
            fprintf(out, "switchover: %s (expected downtime %.1f ms)\n", s->switchover_reason,
                    s->expected_downtime_ms);
        if (s->cpu_throttle_percentage || s->dirty_limit)
            fprintf(out, "convergence: cpu throttle %u%%, dirty limit %llu pages/s per vCPU\n",
                    s->cpu_throttle_percentage, (unsigned long long)s->dirty_limit);
        fprintf(out, "dirty tracker: %s\n", s->tracker);
    }
    fprintf(out, "precopy ram: %s\n", lm_format_bytes(s->precopy_bytes, a, sizeof(a)));
    fprintf(out, "downtime ram: %s\n", lm_format_bytes(s->downtime_bytes, b, sizeof(b)));
    if (s->postcopy)
        fprintf(out, "postcopy ram: %s\n", lm_format_bytes(s->postcopy_bytes, a, sizeof(a)));
    if (dest) {
        fprintf(out, "destination page faults: %llu minor, %llu major\n",
                (unsigned long long)s->dest_minor_faults, (unsigned long long)s->dest_major_faults);
    }
}
