"""A small QMP client for the tests and benchmarks: QEMU's wire protocol
(greeting, qmp_capabilities, execute/return/error, events), nothing more.
Every read is bounded by a timeout."""
import json
import socket
import time


class QMPError(Exception):
    def __init__(self, reply):
        super().__init__(f"{reply['error']['class']}: {reply['error']['desc']}")
        self.cls = reply["error"]["class"]
        self.desc = reply["error"]["desc"]


class QMP:
    def __init__(self, path, timeout=30.0, negotiate=True):
        deadline = time.monotonic() + timeout
        while True:  # the socket appears once the process listens
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rb")
        self.events = []
        self.greeting = self._read()
        self.next_id = 1
        if negotiate:
            self.cmd("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def send_raw(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def reply(self):
        """The next reply, keeping the events that come first."""
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def execute(self, name, **args):
        """The whole reply: {"return": ...} or {"error": ...}, with its id."""
        msg = {"execute": name, "id": self.next_id}
        self.next_id += 1
        if args:
            msg["arguments"] = args
        self.send_raw(json.dumps(msg) + "\r\n")
        r = self.reply()
        assert r.get("id") == msg["id"], f"reply {r} is not for id {msg['id']}"
        return r

    def cmd(self, name, **args):
        r = self.execute(name, **args)
        if "error" in r:
            raise QMPError(r)
        return r["return"]

    def wait_event(self, name, timeout=60.0, pred=lambda e: True):
        """Waits for an event (kept ones first); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and pred(e):
                    del self.events[: i + 1]
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout} s")
            self.sock.settimeout(left)
            msg = self._read()
            self.sock.settimeout(30.0)
            if "event" in msg:
                self.events.append(msg)
            else:
                raise AssertionError(f"unexpected reply {msg}")

    def wait_status(self, statuses, timeout=60.0):
        return self.wait_event("MIGRATION", timeout,
                               lambda e: e["data"]["status"] in statuses)["data"]["status"]

    def close(self):
        self.sock.close()
