"""How fast the Python client asks a release `roster` server.

    python3 clients/python/bench.py [--roster PATH] [--keys N] [--seconds S] [--address HOST:PORT --advertiser A]

Without --address it starts `roster dev` (the release build by default:
`swift build -c release --product roster` first) on a temporary folder with
one list of N random hashes, waits for it to go live, and measures, each on
one connection from this one thread:

- Match, pipelined (`Client.match_each`, 512 calls in flight): calls/s;
- Match, one call at a time (`Client.match`): calls/s and p50/p99 latency;
- Match from asyncio (`AsyncClient.match`, 512 awaited at once): calls/s;
- MatchMany of 1,000 hashes: one at a time (`Client.match_many`), four in
  flight (`Client.match_many_stream`), and as a boolean per hash
  (`Client.membership`): keys/s.

Half the hashes asked are members; every answer is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from roster_client import AsyncClient, Client  # noqa: E402


def start_dev(roster: str, folder: pathlib.Path, keys: int):
    rng = random.Random(1)
    members = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(keys)]
    lake = folder / "lake" / "bench"
    lake.mkdir(parents=True)
    (lake / ".m.tmp").write_text("".join(m.hex() + "\n" for m in members))
    (lake / ".m.tmp").rename(lake / "members.txt")
    process = subprocess.Popen([roster, "dev", "--data", str(folder), "--match-port", "0", "--coordinator-port", "0",
                                "--metrics", "127.0.0.1:0", "--scan-interval", "0.2", "--log-level", "error"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    address = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip().startswith("match server:"):
            address = line.split()[-1]
            break
    if address is None:
        sys.exit(f"roster dev did not start: {process.wait()}")
    return process, address, members


def wait_live(address: str, advertiser: str, member: bytes) -> None:
    deadline = time.monotonic() + 300
    with Client(address, timeout=2) as probe:
        while time.monotonic() < deadline:
            try:
                if probe.match(advertiser, member).matched:
                    return
            except Exception:  # noqa: BLE001 - not live yet
                pass
            time.sleep(0.2)
    sys.exit("the list did not go live")


def probes(members, count: int, rng: random.Random):
    out, expected = [], []
    for i in range(count):
        if i % 2 == 0:
            out.append(members[rng.randrange(len(members))])
            expected.append(True)
        else:
            out.append(rng.getrandbits(128).to_bytes(16, "big"))
            expected.append(False)
    return out, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roster", default=str(HERE.parent.parent / ".build" / "release" / "roster"))
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--address")
    parser.add_argument("--advertiser", default="bench")
    args = parser.parse_args()
    rng = random.Random(7)
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.address:
            address, members = args.address, None
        else:
            process, address, members = start_dev(args.roster, pathlib.Path(tmp), args.keys)
            wait_live(address, args.advertiser, members[0])
        try:
            if members is None:
                sys.exit("--address needs a list this script made; run without it")
            asked, expected = probes(members, 100_000, rng)
            rows = []

            with Client(address) as roster:
                roster.match_each(args.advertiser, asked[:5_000], window=512)  # warm-up
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    i = calls % 90_000
                    answers = roster.match_each(args.advertiser, asked[i:i + 10_000], window=512)
                    assert answers == expected[i:i + 10_000], "wrong answers"
                    calls += 10_000
                rows.append(("Match, pipelined (match_each, 512 in flight)", calls / (time.perf_counter() - start), "calls/s"))

                latencies, start = [], time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    i = len(latencies) % 100_000
                    t0 = time.perf_counter()
                    assert roster.match(args.advertiser, asked[i]).matched == expected[i]
                    latencies.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - start
                latencies.sort()
                rows.append(("Match, one at a time (match)", len(latencies) / elapsed,
                             f"calls/s (p50 {latencies[len(latencies) // 2] * 1e6:.0f} µs, p99 {latencies[int(len(latencies) * 0.99)] * 1e6:.0f} µs)"))

                # Batches packed before the clock starts, as a caller holding
                # packed hashes would send them.
                batches = [(b"".join(asked[i:i + 1_000]), sum(expected[i:i + 1_000])) for i in range(0, 100_000, 1_000)]
                keys, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    packed, members_in_it = batches[(keys // 1_000) % len(batches)]
                    result = roster.match_many(args.advertiser, packed)
                    assert result.matched_count == members_in_it, "wrong answers"
                    keys += 1_000
                rows.append(("MatchMany 1,000, one at a time (match_many)", keys / (time.perf_counter() - start), "keys/s"))

                keys, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    for (_, members_in_it), result in zip(batches, roster.match_many_stream(args.advertiser, (b for b, _ in batches))):
                        assert result.matched_count == members_in_it, "wrong answers"
                        keys += result.count
                rows.append(("MatchMany 1,000, 4 in flight (match_many_stream)", keys / (time.perf_counter() - start), "keys/s"))

                keys, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    answers = list(roster.membership(args.advertiser, asked, batch_size=1_000, in_flight=4))
                    assert answers == expected, "wrong answers"
                    keys += len(answers)
                rows.append(("membership, a boolean per hash (4 batches in flight)", keys / (time.perf_counter() - start), "keys/s"))

            async def gathered() -> float:
                async with AsyncClient(address) as roster:
                    calls, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        i = calls % 99_000
                        answers = await asyncio.gather(*(roster.match(args.advertiser, h) for h in asked[i:i + 512]))
                        assert [a.matched for a in answers] == expected[i:i + 512], "wrong answers"
                        calls += 512
                    return calls / (time.perf_counter() - start)
            rows.append(("Match from asyncio (gather of 512)", asyncio.run(gathered()), "calls/s"))

            print(f"roster-client (Python {sys.version.split()[0]}) against {address}, {args.keys:,} keys, one connection, one thread:")
            print()
            print("| call | rate | |")
            print("| --- | ---: | --- |")
            for name, rate, unit in rows:
                print(f"| {name} | {rate:,.0f} | {unit} |")
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait()


if __name__ == "__main__":
    main()
