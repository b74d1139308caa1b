#!/usr/bin/env python3
"""A hand-made migration source that speaks livemig's wire protocol
(docs/PROTOCOL.md) and sends one chosen kind of bad input, to check that
`livemig incoming` rejects it cleanly. Prints the destination's reply."""
import json
import os
import socket
import struct
import sys
import time
import zlib

MAGIC, VERSION = 0x4C4D4947, 5
PMAGIC, PVERSION = 0x4C4D504B, 1
(HELLO, HELLO_ACK, PAGES, ROUND_END, DEVICE_STATE, COMPLETE, RESUMED, ERROR, VERIFY, PING,
 PONG, CHANNEL_HELLO) = range(1, 13)
SWITCHOVER_READY = 18
POSTCOPY_SWITCH, POSTCOPY_RUN = 13, 14
RECOVER_MAP = 21
VERIFY_FLAG, POSTCOPY, NO_PREEMPT, RECOVER, COMMITTED = 1, 2, 4, 8, 16
PAGE = os.sysconf("SC_PAGE_SIZE")
BLOCK_LEN = 1 << 20


def frame(mtype, body=b"", version=VERSION, magic=MAGIC, length=None):
    n = len(body) if length is None else length
    return struct.pack(">IHHII", magic, version, mtype, n, 0) + body


def hello(verify=False, channels=0, compress=0, uuid=b"\x42" * 16, blocks=None, flags=0):
    """blocks: (id, length, name) triples; one 1 MiB block 0 named "ram" by default."""
    blocks = blocks or [(0, BLOCK_LEN, b"ram")]
    total = sum(b[1] for b in blocks)
    fixed = struct.pack(">IIIIQII", PAGE, flags | (1 if verify else 0), len(blocks), channels,
                        total, compress, 0) + uuid
    body = b"".join(struct.pack(">IIQ", i, 0, n) + name.ljust(32, b"\0") for i, n, name in blocks)
    return frame(HELLO, fixed + body)


def packet(normal, zero, block=0, pages_alloc=128, payload=None, normal_count=None,
           payload_size=None, flags=0, magic=PMAGIC):
    ncount = len(normal) if normal_count is None else normal_count
    data = b"\xaa" * (PAGE * len(normal)) if payload is None else payload
    psize = (ncount * PAGE if payload is None else len(payload)) if payload_size is None else payload_size
    hdr = struct.pack(">IIIIIIIIQQQQ", magic, PVERSION, flags, pages_alloc, ncount, len(zero),
                      block, 0, psize, 1, 0, 0)
    offs = b"".join(struct.pack(">Q", o) for o in normal + zero)
    return hdr + offs + data


def recv_frame(s):
    hdr = b""
    while len(hdr) < 16:
        chunk = s.recv(16 - len(hdr))
        if not chunk:
            return None, b""
        hdr += chunk
    magic, version, mtype, length, _ = struct.unpack(">IHHII", hdr)
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return mtype, body


COMPRESSED = 2
UUID = b"\x42" * 16


def channel(host, port, chan_id, uuid=UUID):
    c = socket.create_connection((host, int(port)), timeout=10)
    c.sendall(frame(CHANNEL_HELLO, uuid + struct.pack(">II", chan_id, 0)))
    return c


def handshake(s, verify=False, channels=0, compress=0):
    s.sendall(hello(verify, channels, compress))
    mtype, body = recv_frame(s)
    if mtype != HELLO_ACK:
        sys.exit(f"fake source: expected HELLO_ACK, got {mtype} {body!r}")


def rss_anon(pid):
    """The destination's resident anonymous memory, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def zlib_payload(comp, pages):
    return comp.compress(b"".join(pages)) + comp.flush(zlib.Z_SYNC_FLUSH)


def scatter(s, npages, method):
    """One page in every 2 MiB of a large block, in packets of 128: how much
    memory does the destination commit for the bytes it received? Prints
    rss_growth, wire_bytes and page_bytes as JSON."""
    s.sendall(hello(compress=1 if method == "zlib" else 0, blocks=[(0, 64 << 30, b"ram")]))
    mtype, body = recv_frame(s)
    if mtype != HELLO_ACK:
        sys.exit(f"fake source: expected HELLO_ACK, got {mtype} {body!r}")
    pid = int(os.environ["FAKE_DEST_PID"])
    before = rss_anon(pid)
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    wire = 0
    for first in range(0, npages, 128):
        offs = [(first + i) * (2 << 20) for i in range(min(128, npages - first))]
        pages = [bytes([0x5A]) * PAGE for _ in offs]
        if method == "zlib":
            body = packet(offs, [], flags=COMPRESSED, payload=zlib_payload(comp, pages))
        else:
            body = packet(offs, [])
        f = frame(PAGES, body)
        wire += len(f)
        s.sendall(f)
    s.sendall(frame(PING))
    mtype, body = recv_frame(s)
    if mtype != PONG:
        sys.exit(f"fake source: expected PONG, got {mtype} {body!r}")
    growth = rss_anon(pid) - before
    print(json.dumps({"rss_growth": growth, "wire_bytes": wire, "page_bytes": npages * PAGE}))


def hold(host, port, n):
    """n connections that say nothing, held until this process is killed."""
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(n)]
    print(f"holding {len(held)}", flush=True)
    time.sleep(120)


def strays(host, port, uuid=UUID):
    """Connections that are not the migration's channel (or source): another
    migration's uuid, a channel id out of range, garbage, silence."""
    conns = []
    for i in range(20):
        kind = i % 4
        if kind == 0:
            conns.append(channel(host, port, 0, uuid=b"\x13" * 16))
        elif kind == 1:
            conns.append(channel(host, port, 5, uuid=uuid))
        elif kind == 2:
            c = socket.create_connection((host, int(port)), timeout=10)
            c.sendall(os.urandom(64))
            conns.append(c)
        else:
            conns.append(socket.create_connection((host, int(port)), timeout=10))
    return conns


def stray_channels(s, host, port):
    """20 strays while the destination waits for its one channel; then the
    real channel sends a packet out of range, which only a destination that
    took it can report."""
    handshake(s, channels=1)
    conns = strays(host, port)
    time.sleep(0.3)
    c = channel(host, port, 0)
    c.sendall(packet([BLOCK_LEN], []))
    mtype, body = recv_frame(s)
    print("ERROR:" if mtype == ERROR else f"reply: {mtype}", body[4:].decode(errors="replace"))
    for x in conns:
        x.close()


def recover_strays(s, host, port):
    """Precopy breaks; while the destination waits for its source (with
    --recover-timeout), strays and silent connections come first, more than
    the lobby holds; then the source, which must be taken back."""
    handshake(s)
    s.sendall(frame(PAGES, packet([0], [])))
    s.sendall(frame(PING))
    recv_frame(s)
    s.close()
    time.sleep(0.5)
    conns = strays(host, port)
    conns += [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
    time.sleep(0.3)
    r = socket.create_connection((host, int(port)), timeout=10)
    r.sendall(hello(flags=RECOVER))
    mtype, _ = recv_frame(r)
    mtype2, _ = recv_frame(r) if mtype == HELLO_ACK else (None, b"")
    print("taken back" if (mtype, mtype2) == (HELLO_ACK, RECOVER_MAP) else f"reply: {mtype} {mtype2}")
    for x in conns:
        x.close()


def parse_size(text):
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    return int(text[:-1]) << units[text[-1]] if text[-1] in units else int(text)


def declare(s, spec):
    """HELLO with the layout ID:SIZE:NAME[,ID:SIZE:NAME...]; when taken, a few
    pages spread over it and a PING: prints "accepted", or the ERROR."""
    blocks = []
    for part in spec.split(","):
        i, size, name = part.split(":")
        blocks.append((int(i), parse_size(size), name.encode()))
    s.sendall(hello(blocks=blocks))
    mtype, body = recv_frame(s)
    if mtype != HELLO_ACK:
        print("ERROR:" if mtype == ERROR else f"reply: {mtype}", body[4:].decode(errors="replace"))
        return
    for i, size, _ in blocks:
        s.sendall(frame(PAGES, packet([0, size // 2 // PAGE * PAGE, size - PAGE], [], block=i)))
    s.sendall(frame(PING))
    mtype, _ = recv_frame(s)
    print("accepted" if mtype == PONG else f"reply: {mtype}")


def guest_state():
    """A thread guest's device state (src/guest/guest.c): one idle vCPU
    that never touches RAM, so it runs even on memory nobody sent."""
    head = struct.pack(">IIIIIIQQQ", 0x4C4D4753, 1, 0, 1, 1, 0, 0, 0, BLOCK_LEN)
    head += b"idle".ljust(48, b"\0")
    return head + struct.pack(">QQQQQ", 1, 1, 0, 0, BLOCK_LEN // PAGE)


def forged_postcopy(s, case):
    """A postcopy start out of order: before any page (postcopy-first), or
    after the first pass but without the PING that drains the pipe
    (postcopy-without-ping), or drained but with a map that leaves pages
    neither received nor to come (postcopy-uncovered: half the pages sent,
    an empty map). A destination that takes it runs the guest on memory
    nobody sent, or waits on pages that never come; it must refuse."""
    s.sendall(hello(flags=POSTCOPY | NO_PREEMPT))
    mtype, body = recv_frame(s)
    if mtype != HELLO_ACK:
        sys.exit(f"fake source: expected HELLO_ACK, got {mtype} {body!r}")
    npages = BLOCK_LEN // PAGE
    if case == "postcopy-without-ping":
        for first in range(0, npages, 128):
            s.sendall(frame(PAGES, packet([], [p * PAGE for p in range(first, first + 128)])))
        s.sendall(frame(ROUND_END))
    words = (npages + 63) // 64
    need = b"\xff" * 8 * words
    if case == "postcopy-uncovered":
        for first in range(0, npages // 2, 128):
            s.sendall(frame(PAGES, packet([], [p * PAGE for p in range(first, first + 128)])))
        s.sendall(frame(ROUND_END))
        s.sendall(frame(PING))
        mtype, body = recv_frame(s)
        if mtype != PONG:
            sys.exit(f"fake source: expected PONG, got {mtype} {body!r}")
        need = b"\x00" * 8 * words
    s.sendall(frame(POSTCOPY_SWITCH, struct.pack(">IIQ", 0, 0, npages) + need))
    s.sendall(frame(DEVICE_STATE, guest_state()))
    mtype, body = recv_frame(s)
    if mtype == SWITCHOVER_READY:
        s.sendall(frame(POSTCOPY_RUN))
        mtype, body = recv_frame(s)
        print(f"reply: {mtype} (the guest runs on memory nobody sent)")
        return
    print("ERROR:" if mtype == ERROR else f"reply: {mtype}", body[4:].decode(errors="replace"))


def verify_wait(s):
    """Declares a large guest (with verification), sends nothing, and never
    its digest: the destination's wait for it must not grow with the size
    declared. Waits for the destination to give up."""
    s.sendall(hello(verify=True, blocks=[(0, 512 << 30, b"ram")]))
    mtype, body = recv_frame(s)
    if mtype != HELLO_ACK:
        sys.exit(f"fake source: expected HELLO_ACK, got {mtype} {body!r}")
    s.sendall(frame(DEVICE_STATE, b"state"))
    s.sendall(frame(COMPLETE))
    s.settimeout(None)
    mtype, body = recv_frame(s)
    print("ERROR:" if mtype == ERROR else f"reply: {mtype}", body[4:].decode(errors="replace"))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    case = sys.argv[2]
    if case.startswith("hold:"):
        hold(host, port, int(case.split(":")[1]))
        return
    s = socket.create_connection((host, int(port)), timeout=10)
    if case.startswith("scatter:"):
        _, n, method = case.split(":")
        scatter(s, int(n), method)
        return
    if case == "verify-wait-declared":
        verify_wait(s)
        return
    if case.startswith("postcopy-"):
        forged_postcopy(s, case)
        return
    if case.startswith("declare:"):
        declare(s, case[len("declare:"):])
        return
    if case == "stray-channels":
        stray_channels(s, host, port)
        return
    if case == "recover-strays":
        recover_strays(s, host, port)
        return
    if case == "garbage":
        s.sendall(os.urandom(4096))
    elif case == "truncated":
        s.sendall(hello()[:40])
        s.shutdown(socket.SHUT_WR)
    elif case == "wrong-version":
        s.sendall(frame(HELLO, hello()[16:], version=7))
    elif case == "not-hello-first":
        s.sendall(frame(ROUND_END))
    elif case == "bad-hello":
        bad = bytearray(hello())
        struct.pack_into(">I", bad, 16, 4095)  # page size
        s.sendall(bytes(bad))
    elif case == "error-before-channels":
        handshake(s, channels=2)
        s.sendall(frame(ERROR, struct.pack(">I", 12) + b"compression setup failed"))
        s.close()
        return
    elif case.startswith("channel-"):
        handshake(s, channels=1)
        c = channel(host, port, 0)
        if case == "channel-bad-magic":
            c.sendall(packet([0], [], magic=0x12345678))
        elif case == "channel-offset-out-of-range":
            c.sendall(packet([BLOCK_LEN], []))
        elif case == "channel-unknown-block":
            c.sendall(packet([0], [], block=9))
        elif case == "channel-compressed-not-negotiated":
            c.sendall(packet([0], [], flags=COMPRESSED, payload=b"x" * 100))
        elif case == "channel-counts-over-alloc":
            c.sendall(packet([0, PAGE], [], pages_alloc=1))
        else:
            sys.exit(f"unknown case {case}")
    elif case in ("corrupt-zstd", "corrupt-zlib", "corrupt-lz4", "oversize-compressed"):
        method = {"corrupt-zlib": 1, "corrupt-lz4": 3}.get(case, 2)
        handshake(s, compress=method)
        size = 10 << 20 if case == "oversize-compressed" else None
        body = packet([0, PAGE], [], flags=COMPRESSED, payload=os.urandom(3000), payload_size=size)
        s.sendall(frame(PAGES, body))
    else:
        handshake(s, verify=(case == "verify-mismatch"))
        if case == "offset-out-of-range":
            body = packet([BLOCK_LEN], [])
        elif case == "offset-unaligned":
            body = packet([100], [])
        elif case == "zero-offset-out-of-range":
            body = packet([], [BLOCK_LEN + PAGE])
        elif case == "unknown-block":
            body = packet([0], [], block=7)
        elif case == "counts-over-alloc":
            body = packet([0], [PAGE] * 8, pages_alloc=4)
        elif case == "payload-mismatch":
            body = packet([0], [], payload_size=2 * PAGE)
        elif case == "frame-length-mismatch":
            body = packet([0], [], normal_count=2)
        elif case == "truncated-payload":
            full = packet([0, PAGE], [])
            s.sendall(frame(PAGES, full[:-PAGE - 100], length=len(full)))
            s.shutdown(socket.SHUT_WR)
            body = None
        elif case == "verify-mismatch":
            s.sendall(frame(PAGES, packet([0], [PAGE])))
            s.sendall(frame(PING))
            mtype, _ = recv_frame(s)
            if mtype != PONG:
                sys.exit(f"fake source: expected PONG, got {mtype}")
            s.sendall(frame(DEVICE_STATE, b"not a guest state"))
            s.sendall(frame(COMPLETE))
            s.sendall(frame(VERIFY, struct.pack(">Q", BLOCK_LEN // PAGE) + b"\x11" * 16 + bytes(8)))
            body = None
        elif case == "complete-without-state":
            s.sendall(frame(COMPLETE))
            body = None
        else:
            sys.exit(f"unknown case {case}")
        if body is not None:
            s.sendall(frame(PAGES, body))
    mtype, body = recv_frame(s)
    if mtype == ERROR:
        print("ERROR:", body[4:].decode(errors="replace"))
    elif mtype in (RESUMED, SWITCHOVER_READY):
        status, verified, _ = struct.unpack(">iIQ", body)
        print(f"RESUMED: status={status} verified={verified}")
    else:
        print(f"reply: {mtype}")


if __name__ == "__main__":
    main()
