#!/usr/bin/env python3
"""The memory and time probe of issue 16: hostile inputs against a real stack.

For each case it starts a fresh stack (the secure and public model servers on
Unix sockets, the parent on 127.0.0.1), sends the case's input to
/predict-secure/ (or straight to the secure model server's socket), and
reports the answer, the time, and the peak resident memory (VmHWM) of the
secure model server and of the parent. A fresh stack per case makes each
peak that case's own.

    bench/hostile.py [--bin target/release] [--model models/efficientnet-lite0]
                     [--cases thin,huge,...] [--body-limit BYTES]

`make bench-hostile` runs it on the release build. The inputs are made here
with the standard library only (PNG is zlib plus CRCs); nothing leaves this
machine: every socket is a Unix socket or 127.0.0.1.
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

MIB = 1024 * 1024


# ---- PNG, written by hand ----

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w, h, color_type=0, bit_depth=8, row=None, extra=b"", level=9):
    """A PNG whose every row is `row` (default: zeros). color_type 0 = grey, 2 = RGB."""
    channels = {0: 1, 2: 3}[color_type]
    stride = w * channels * bit_depth // 8
    row = row if row is not None else bytes(stride)
    z = zlib.compressobj(level)
    parts = []
    line = b"\0" + row
    for _ in range(h):
        parts.append(z.compress(line))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def iccp_bomb(inflated):
    """An 8x8 PNG whose ICC profile chunk inflates to `inflated` zero bytes."""
    z = zlib.compressobj(9)
    block = bytes(MIB)
    data = b"".join(z.compress(block) for _ in range(inflated // MIB)) + z.flush()
    return png(8, 8, extra=chunk(b"iCCP", b"bomb\0\0" + data))


def noise_png(w, h):
    """A PNG of random bytes, stored uncompressed: its size is about 3 x w x h."""
    rows = [b"\0" + os.urandom(w * 3) for _ in range(h)]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 0)) + chunk(b"IEND", b"")


# ---- the stack ----

def status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Stack:
    def __init__(self, bin_dir, model, port):
        self.dir = tempfile.mkdtemp(prefix="hostile-")
        self.port = port
        self.procs = {}
        log = lambda name: open(os.path.join(self.dir, name + ".log"), "w")
        for name in ("secure", "public"):
            self.procs[name] = subprocess.Popen(
                [os.path.join(bin_dir, "enclave"), "--listen", f"unix:{self.dir}/{name}.sock", "--model", model],
                stdout=subprocess.DEVNULL, stderr=log(name))
        self.procs["parent"] = subprocess.Popen(
            [os.path.join(bin_dir, "parent"), "--listen", f"127.0.0.1:{port}",
             "--secure", f"unix:{self.dir}/secure.sock", "--public", f"unix:{self.dir}/public.sock"],
            stdout=subprocess.DEVNULL, stderr=log("parent"))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if http(port, "GET", "/ready", b"", {})[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("the stack never became ready; logs in " + self.dir)

    def hwm(self, name):
        return status(self.procs[name].pid, "VmHWM:")

    def alive(self, name):
        return self.procs[name].poll() is None

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def http(port, method, path, body, headers, timeout=120):
    """One request on its own connection; returns (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    try:
        s.sendall(head.encode() + body)
    except OSError:
        pass  # refused before the body was read: the answer is still there
    data = b""
    while True:
        try:
            got = s.recv(65536)
        except OSError:
            break
        if not got:
            break
        data += got
    s.close()
    if not data:
        return 0, "connection closed without an answer"
    line, _, rest = data.partition(b"\r\n")
    return int(line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


def answer(status_code, text):
    try:
        j = json.loads(text)
    except ValueError:
        return f"{status_code} {text[:60]}"
    if "error" in j:
        return f"{status_code} {j.get('code', '')}: {j['error'][:90]}"
    return f"{status_code} class_ids {j.get('class_ids')}"


# ---- the cases ----

def send_image(stack, data, mime="image/png"):
    t = time.time()
    code, text = http(stack.port, "POST", "/predict-secure/", data, {"Content-Type": mime})
    return answer(code, text), time.time() - t


def case_single(data):
    return lambda stack: send_image(stack, data)


def case_in_flight(size):
    """Eight uploads of one noise PNG of about `size` bytes at once (the parent's pool)."""
    side = int((size / 3) ** 0.5)
    data = noise_png(side, side)

    def run(stack):
        results = [None] * 8
        def one(i):
            results[i] = send_image(stack, data)[0]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        t = time.time()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        counts = {}
        for r in results:
            counts[r.split(":")[0]] = counts.get(r.split(":")[0], 0) + 1
        return f"{len(data) / MIB:.1f} MiB each: " + ", ".join(f"{n} x {k}" for k, n in counts.items()), time.time() - t
    return run


def case_trickle(stack):
    """A frame header, then one byte every 2 s, straight to the model server."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(stack.dir, "secure.sock"))
    s.settimeout(0.05)
    header = b"NE\x01\x05" + struct.pack("<I", 1000) + struct.pack("<Q", 1)
    t = time.time()
    s.sendall(header)
    while time.time() - t < 60:
        time.sleep(2)
        try:
            s.sendall(b"\0")
            if s.recv(64) == b"":
                break
        except socket.timeout:
            continue
        except OSError:
            break
    return "closed by the server", time.time() - t


def case_thin_batch_then_legit(stack):
    """64 thin PNGs (1 x 1000) in one JSON request, and an ordinary photo 2 s later."""
    import base64
    thin = base64.b64encode(png(1, 1000)).decode()
    body = json.dumps({"images": [thin] * 64}).encode()
    out = {}

    def hostile():
        t = time.time()
        code, text = http(stack.port, "POST", "/predict-secure/", body, {"Content-Type": "application/json"})
        out["hostile"] = (answer(code, text), time.time() - t)
    th = threading.Thread(target=hostile)
    th.start()
    time.sleep(2)
    photo = png(640, 480, color_type=2, row=bytes(range(256)) * 7 + bytes(128))
    legit = send_image(stack, photo)
    th.join()
    return (f"batch of 64 ({len(body)} B): {out['hostile'][0]} in {out['hostile'][1]:.1f} s; "
            f"photo sent 2 s later: {legit[0]} in {legit[1]:.2f} s"), out["hostile"][1]


def case_fail_first(stack):
    """A broken PNG, then 63 costly ones (12 MP each), in one JSON request."""
    import base64
    broken = png(64, 64)[:-40]
    costly = png(4000, 3000, color_type=2)
    images = [base64.b64encode(broken).decode()] + [base64.b64encode(costly).decode()] * 63
    body = json.dumps({"images": images}).encode()
    t = time.time()
    code, text = http(stack.port, "POST", "/predict-secure/", body, {"Content-Type": "application/json"})
    took = time.time() - t
    t = time.time()
    after = send_image(stack, png(640, 480, color_type=2))
    return f"{answer(code, text)}; a photo right after: {after[0]} in {time.time() - t:.2f} s", took


CASES = {
    "thin": ("1x12000 grey PNG", lambda: case_single(png(1, 12000))),
    "wide": ("12000x1 grey PNG", lambda: case_single(png(12000, 1))),
    "huge": ("12000x12000 grey PNG, all black", lambda: case_single(png(12000, 12000))),
    "deep": ("9000x9000 16-bit grey PNG", lambda: case_single(png(9000, 9000, bit_depth=16))),
    "rgb": ("8000x8000 RGB PNG", lambda: case_single(png(8000, 8000, color_type=2))),
    "icc": ("8x8 PNG, ICC profile inflating to 400 MiB", lambda: case_single(iccp_bomb(400 * MIB))),
    "inflight": ("8 concurrent uploads of the largest body", None),
    "trickle": ("frame header, then 1 byte / 2 s (model server socket)", lambda: case_trickle),
    "thinbatch": ("64 x 1x1000 PNG in JSON, then a photo", lambda: case_thin_batch_then_legit),
    "failfirst": ("a broken PNG, then 63 12 MP PNGs, in JSON", lambda: case_fail_first),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--model", default="models/efficientnet-lite0")
    ap.add_argument("--port", type=int, default=18199)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--body-limit", type=int, default=16 * MIB,
                    help="the parent's body limit, for the in-flight case (16 MiB now, 50 MiB before issue 16)")
    args = ap.parse_args()
    print(f"binaries {args.bin}, model {args.model}")
    print(f"{'case':58} {'answer':70} {'time':>7} {'secure HWM':>11} {'parent HWM':>11}")
    for name in args.cases.split(","):
        title, make = CASES[name]
        run = case_in_flight(args.body_limit - 64 * 1024) if name == "inflight" else make()
        stack = Stack(args.bin, args.model, args.port)
        try:
            base = stack.hwm("secure")
            result, took = run(stack)
            alive = "" if stack.alive("secure") else " (the secure model server DIED)"
            print(f"{title:58} {result[:70]:70} {took:6.1f}s {stack.hwm('secure') / MIB:8.0f} MiB"
                  f" {stack.hwm('parent') / MIB:8.0f} MiB{alive}   (secure at start {base / MIB:.0f} MiB)")
            if len(result) > 70:
                print(f"    {result}")
        finally:
            stack.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
