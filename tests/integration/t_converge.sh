#!/usr/bin/env bash
# Convergence policies on a stress guest whose dirty set does not shrink by
# itself under a 20 ms downtime limit: --auto-converge throttles the vCPUs
# step by step (and the migration completes, verified); --dirty-limit caps
# each vCPU's dirty rate and precopy converges before the round limit.
. "$(dirname "$0")/lib.sh"
migrate_ok auto 512M stress:2x64M --auto-converge --downtime-limit 20 --max-rounds 8
S=$TMP/auto.src.json
expect_json "$S" 'j["ram"]["cpu-throttle-percentage"] >= 20'
expect_json "$S" 'max(r["cpu-throttle-percentage"] for r in j["rounds"]) >= 20'
expect_json "$S" 'all(r["dirty-pages-rate"] >= 0 for r in j["rounds"])'
migrate_ok limit 512M stress:2x64M --dirty-limit 5000 --downtime-limit 20 --max-rounds 30
S=$TMP/limit.src.json
expect_json "$S" 'j["ram"]["dirty-limit"] == 5000'
expect_json "$S" 'j["ram"]["dirty-sync-count"] < 30'
# The guest's own view: latencies ordered, a longest stall reported.
expect_json "$S" 'j["guest"]["write-latency-p50-us"] <= j["guest"]["write-latency-p99-us"] <= j["guest"]["write-latency-max-us"]'
expect_json "$S" 'j["guest"]["max-stall-ms"] > 0'
echo ok
