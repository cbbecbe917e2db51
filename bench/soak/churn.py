#!/usr/bin/env python3
"""Connection churn soak: does a server give memory back after hostile clients leave?

Starts `roster match-server` (or a coordinator) from each binary given, then
against each, side by side in one run:
  1. CYCLES connect+close cycles (every other one sends the preface first);
  2. PARTIAL connections that send a frame header announcing the frame limit
     (4 MiB), part of its body, and close;
and reports the server's resident memory (VmRSS) before, after each phase,
and after a short rest. A server that keeps per-connection state after the
connection closes grows by CYCLES x that state and PARTIAL x the body sent.

    python3 bench/soak/churn.py [--cycles 100000] [--partial 1000] [--body 1048576] BIN [BIN ...]

BIN is a `roster` executable (e.g. .build/release/roster); give two to compare
builds. Everything runs on 127.0.0.1 with a port the OS chooses, and stops
by itself.
"""
import argparse, os, re, shutil, signal, socket, struct, subprocess, sys, tempfile, time

PREFACE = b"ROST\x00\x01\x00\x00"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, service, data):
    if service == "match":
        args = [binary, "match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"]
        if "--scrub-rate" in subprocess.run([binary, "match-server", "--help"], capture_output=True, text=True).stdout:
            args += ["--scrub-rate", "0"]  # builds from before the scrub have none
        pattern = r"match server listening on [\d.]+:(\d+)"
    else:
        args = [binary, "coordinator", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0", "--scan-interval", "0"]
        pattern = r"coordinator listening on [\d.]+:(\d+)"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(pattern, line or "")
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"{binary} did not start")


def churn(port, cycles):
    for i in range(cycles):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            s.sendall(PREFACE)
        s.close()


def partial(port, count, body, limit):
    header = struct.pack(">IBBI", limit, 0x01, 0, 1)
    chunk = b"\xab" * body
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREFACE + header + chunk)
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--partial", type=int, default=1000)
    ap.add_argument("--body", type=int, default=1 << 20)
    ap.add_argument("--service", choices=["match", "coordinator"], default="match")
    ap.add_argument("--rest", type=float, default=3)
    a = ap.parse_args()
    print(f"{a.service}: {a.cycles} connect/close cycles, then {a.partial} partial frames of {a.body} bytes (announcing 4 MiB)")
    print(f"{'binary':40} {'start':>8} {'churn':>8} {'partial':>8} {'rested':>8} {'growth':>8}  (MiB RSS)")
    for binary in a.binaries:
        data = tempfile.mkdtemp(prefix="roster-soak-")
        proc, port = start(binary, a.service, data)
        try:
            churn(port, 1000)  # warm up: pools, first allocations
            time.sleep(0.5)
            r0 = rss_kib(proc.pid)
            t = time.time()
            churn(port, a.cycles)
            time.sleep(a.rest)
            r1 = rss_kib(proc.pid)
            partial(port, a.partial, a.body, 4 << 20)
            time.sleep(a.rest)
            r2 = rss_kib(proc.pid)
            time.sleep(a.rest)
            r3 = rss_kib(proc.pid)
            el = time.time() - t
            alive = proc.poll() is None
            print(f"{binary[-40:]:40} {r0/1024:8.1f} {r1/1024:8.1f} {r2/1024:8.1f} {r3/1024:8.1f} {(r3-r0)/1024:+8.1f}"
                  f"  ({el:.0f} s{'' if alive else ', SERVER DIED'})")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
