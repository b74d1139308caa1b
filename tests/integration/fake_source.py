#!/usr/bin/env python3
"""A hand-made migration source that speaks livemig's wire protocol
(docs/PROTOCOL.md) and sends one chosen kind of bad input, to check that
`livemig incoming` rejects it cleanly. Prints the destination's reply."""
import os
import socket
import struct
import sys

MAGIC, VERSION = 0x4C4D4947, 2
PMAGIC, PVERSION = 0x4C4D504B, 1
(HELLO, HELLO_ACK, PAGES, ROUND_END, DEVICE_STATE, COMPLETE, RESUMED, ERROR, VERIFY, PING,
 PONG, CHANNEL_HELLO) = range(1, 13)
SWITCHOVER_READY = 18
PAGE = os.sysconf("SC_PAGE_SIZE")
BLOCK_LEN = 1 << 20


def frame(mtype, body=b"", version=VERSION, magic=MAGIC, length=None):
    n = len(body) if length is None else length
    return struct.pack(">IHHII", magic, version, mtype, n, 0) + body


def hello(verify=False, channels=0, compress=0, uuid=b"\x42" * 16):
    fixed = struct.pack(">IIIIQII", PAGE, 1 if verify else 0, 1, channels, BLOCK_LEN, compress,
                        0) + uuid
    block = struct.pack(">IIQ", 0, 0, BLOCK_LEN) + b"ram".ljust(32, b"\0")
    return frame(HELLO, fixed + block)


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


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    case = sys.argv[2]
    s = socket.create_connection((host, int(port)), timeout=10)
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
