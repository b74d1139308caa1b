#!/usr/bin/env python3
"""TLS throughput (issue 12): the same migration in plaintext and over TLS 1.3,
interleaved in one run, with the limits measured beside them.

`livemig demo` (source and destination as two processes on loopback) moves
fill:1G in a 2 GiB guest with 4 channels, verified, RUNS times per mode after
WARMUP discarded rounds; modes run in turn (plain, x509, psk, plain, ...) so a
slow spell of the host hits all of them. Credentials are made on the spot by
tests/integration/tls_creds.sh (openssl). Beside the table: loopback TCP and
memcpy (build/lm-limits) and the single-core AEAD rate of GnuTLS
(build/lm-tls-rate), the cost TLS adds per byte on each side.

    ./bench/tls.py
    RUNS=3 WARMUP=1 RAM=2G FILL=1G CHANNELS=4 ./bench/tls.py
Raw JSON goes to bench/results/tls-*/.
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
LIVEMIG = os.path.join(BUILD, "livemig")
RUNS = int(os.environ.get("RUNS", "5"))
WARMUP = int(os.environ.get("WARMUP", "1"))
RAM = os.environ.get("RAM", "2G")
FILL = os.environ.get("FILL", "1G")
CHANNELS = os.environ.get("CHANNELS", "4")
OUT = os.path.join(ROOT, "bench", "results", "tls-" + time.strftime("%Y%m%d-%H%M%S"))


def make_creds(where):
    subprocess.run(["bash", "-c", f'. "{ROOT}/tests/integration/tls_creds.sh" && '
                    f'make_tls_creds "{where}"'], check=True)


def run(mode_args, name):
    src, dst = os.path.join(OUT, name + ".src.json"), os.path.join(OUT, name + ".dst.json")
    cmd = [LIVEMIG, "demo", "--ram", RAM, "--workload", f"fill:{FILL}", "--verify",
           "--no-progress", "--multifd-channels", CHANNELS, "--stats-json", src,
           "--dest-stats-json", dst] + mode_args
    p = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(OUT, name + ".log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + p.stdout + p.stderr)
    if p.returncode:
        sys.exit(f"{name}: migration failed ({p.returncode})\n{p.stderr[-2000:]}")
    s, d = json.load(open(src)), json.load(open(dst))
    if not (s["verify"]["match"] and d["verify"]["match"]):
        sys.exit(f"{name}: not verified")
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    creds = os.path.join(OUT, "creds")
    make_creds(creds)
    modes = [("plaintext", []), ("TLS X.509", ["--tls-creds", f"{creds}/ok"]),
             ("TLS PSK", ["--tls-psk", f"{creds}/keys.psk"])]
    lim = json.loads(subprocess.run([os.path.join(BUILD, "lm-limits")], capture_output=True,
                                    text=True, check=True).stdout)
    aead = json.loads(subprocess.run([os.path.join(BUILD, "lm-tls-rate"), "1"],
                                     capture_output=True, text=True, check=True).stdout)
    rows = {m: [] for m, _ in modes}
    cipher = {}
    for i in range(WARMUP + RUNS):
        for mode, args in modes:
            s = run(args, f"{mode.replace(' ', '-').replace('.', '')}-{i}")
            if i < WARMUP:
                continue
            t = s["total-time"] / 1000
            rows[mode].append({"total": s["total-time"], "gbps": s["ram"]["transferred"] / t / 1e9,
                               "data": s["ram"]["normal-bytes"] / t / 1e9})
            cipher[mode] = s["tls"].get("cipher", "-")
    print(f"Machine: {os.cpu_count()} CPUs, {os.uname().release}. Limits measured in this run: "
          f"loopback TCP {lim['loopback_tcp_gbps']:.2f} GB/s, memcpy {lim['memcpy_gbps']:.2f} GB/s; "
          f"GnuTLS single-core seal of 16 KiB records: AES-128-GCM {aead['aes-128-gcm'] / 1e9:.2f} "
          f"GB/s, AES-256-GCM {aead['aes-256-gcm'] / 1e9:.2f} GB/s, ChaCha20-Poly1305 "
          f"{aead['chacha20-poly1305'] / 1e9:.2f} GB/s. fill:{FILL} in a {RAM} guest, "
          f"{CHANNELS} channels, verified; median of {RUNS} after {WARMUP} warm-up round(s), "
          "modes interleaved.\n")
    print("| mode | cipher | total ms | wire GB/s | data GB/s | of plaintext | runs (ms) |")
    print("|---|---|---:|---:|---:|---:|---|")
    base = statistics.median(r["data"] for r in rows["plaintext"])
    for mode, _ in modes:
        r = rows[mode]
        med = {k: statistics.median(x[k] for x in r) for k in r[0]}
        print(f"| {mode} | {cipher.get(mode, '-')} | {med['total']:.0f} | {med['gbps']:.2f} | "
              f"{med['data']:.2f} | {med['data'] / base:.0%} | "
              f"{', '.join('%.0f' % x['total'] for x in r)} |")
    print(f"\nkTLS: {json.load(open(os.path.join(OUT, 'TLS-X509-0.src.json')))['tls']['ktls-reason']}")
    print(f"Raw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
