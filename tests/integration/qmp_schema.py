"""QEMU's query-migrate types, written from qapi/migration.json
(MigrationInfo and MigrationStats): livemig must give every field it
reports the same JSON type. "int" is QAPI's int/uint64/size (a JSON
integer), "number" a JSON number (integer or fraction), "str" a string."""

MIGRATION_STATUS = {
    "none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
    "postcopy-paused", "postcopy-recover-setup", "postcopy-recover", "completed",
    "failed", "colo", "pre-switchover", "device", "wait-unplug",
}
# livemig's own states (docs/STATE-MACHINE.md), not QEMU's.
LIVEMIG_STATUS = {"precopy-paused", "switchover-paused"}

MIGRATION_INFO = {
    "status": "str",
    "ram": "object",
    "total-time": "int",
    "expected-downtime": "int",
    "downtime": "int",
    "setup-time": "int",
    "cpu-throttle-percentage": "int",
    "error-desc": "str",
    "postcopy-blocktime": "int",
    "dirty-limit-throttle-time-per-round": "int",
    "dirty-limit-ring-full-time": "int",
}

MIGRATION_STATS = {
    "transferred": "int",
    "remaining": "int",
    "total": "int",
    "duplicate": "int",
    "normal": "int",
    "normal-bytes": "int",
    "dirty-pages-rate": "int",
    "mbps": "number",
    "dirty-sync-count": "int",
    "postcopy-requests": "int",
    "page-size": "int",
    "multifd-bytes": "int",
    "pages-per-second": "int",
    "precopy-bytes": "int",
    "downtime-bytes": "int",
    "postcopy-bytes": "int",
    "dirty-sync-missed-zero-copy": "int",
}

# Fields every livemig report carries (the rest of QEMU's are optional).
REQUIRED_INFO = {"status", "ram", "total-time", "downtime", "setup-time"}
REQUIRED_STATS = {"transferred", "remaining", "total", "duplicate", "normal", "normal-bytes",
                  "dirty-pages-rate", "mbps", "dirty-sync-count", "postcopy-requests",
                  "page-size", "multifd-bytes", "pages-per-second", "precopy-bytes",
                  "downtime-bytes", "postcopy-bytes"}


def _type_ok(value, t):
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "str":
        return isinstance(value, str)
    return isinstance(value, dict)


def check(info, source=True):
    """A list of what differs from QEMU's schema (empty: it matches)."""
    bad = []
    if info == {}:
        return bad  # QEMU's answer before any migration
    for k in REQUIRED_INFO - info.keys():
        bad.append(f"missing {k}")
    for k, t in MIGRATION_INFO.items():
        if k in info and not _type_ok(info[k], t):
            bad.append(f"{k}: {info[k]!r} is not {t}")
    if info.get("status") not in MIGRATION_STATUS | LIVEMIG_STATUS:
        bad.append(f"status {info.get('status')!r} is not a migration status")
    if source and info.get("status") in ("active", "completed") and "expected-downtime" not in info:
        bad.append("missing expected-downtime")
    ram = info.get("ram", {})
    for k in REQUIRED_STATS - ram.keys():
        bad.append(f"missing ram.{k}")
    for k, t in MIGRATION_STATS.items():
        if k in ram and not _type_ok(ram[k], t):
            bad.append(f"ram.{k}: {ram[k]!r} is not {t}")
    if info.get("status") in ("failed", "cancelled") and not info.get("error-desc"):
        bad.append(f"a {info['status']} migration without error-desc")
    return bad
