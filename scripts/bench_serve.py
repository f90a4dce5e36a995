#!/usr/bin/env python3
"""Load benchmark of the face service: requests/s and p50/p99 latency for verify, identify and enroll
at 1, 4 and 16 concurrent clients, against the library's own in-process throughput on the same
photos, measured in the same run (the service's ceiling).

A ``kerascnn serve`` process (no auth, loopback) serves a new gallery of ``--people`` ORL people
(three photos each, enrolled in process first); a bounded async client (httpx, at most C requests
in flight) sends ``--requests`` requests per operation and level, held-back photos of those people
(photo 10) for verify and identify, one new name per request for enroll. The in-process ceiling
runs :class:`kerascnn.face.faces.Faces` on the same photos: one call at a time, and with
``--threads`` threads calling one shared instance (no micro-batching: that is the service's).

Goal (issue 18): at 16 clients, at least 80% of the in-process throughput, and p99 under 4x p50.

Usage:
    python3 scripts/bench_serve.py [--data ../shared/data/orl] [--model M.keras] [--detector haar] \\
        [--people 20] [--requests 64] [--clients 1 4 16] [--batch-wait-ms 5] [--json out.json]

Without ``--model`` the default face model is used (slow on small CPUs: try a ``.keras`` model).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    values = np.asarray(latencies) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


async def load(url: str, make_request, count: int, clients: int) -> dict:
    """Send ``count`` requests, at most ``clients`` in flight; requests/s, p50, p99 and failures."""
    import httpx

    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        async def one(i: int) -> None:
            nonlocal failures
            async with gate:
                method, path, files, data = make_request(i)
                start = time.perf_counter()
                response = await client.request(method, path, files=files, data=data)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    return {"rps": count / wall, "p50_ms": p50, "p99_ms": p99, "failures": failures}


def in_process(call, count: int, threads: int) -> float:
    """Calls per second of ``call(i)`` for ``i < count`` on ``threads`` threads."""
    start = time.perf_counter()
    if threads == 1:
        for i in range(count):
            call(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(call, range(count)))
    return count / (time.perf_counter() - start)


def start_server(gallery: Path, args) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "kerascnn", "serve", "--gallery", str(gallery), "--port",
               str(port), "--insecure-no-auth", "--batch-wait-ms", str(args.batch_wait_ms)]
    command += ["--model", args.model] if args.model else []
    command += ["--detector", args.detector] if args.detector else []
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "orl"), help="ORL folder (s1..s40)")
    parser.add_argument("--model", help="face model (default: the shipped one)")
    parser.add_argument("--detector", default="haar", help="face detector (default haar: ORL faces fill the image)")
    parser.add_argument("--people", type=int, default=20, help="people enrolled before the load (default 20)")
    parser.add_argument("--requests", type=int, default=64, help="requests per operation and level (default 64)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--threads", type=int, default=16, help="threads of the threaded in-process run")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the server's micro-batch wait")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from kerascnn.face.faces import Faces

    data = Path(args.data)
    people = [f"s{k}" for k in range(1, args.people + 1)]
    probes = [(data / p / "10.pgm").read_bytes() for p in people]
    extra = [(data / f"s{k}" / f"{i}.pgm").read_bytes() for k in range(1, 41) for i in (4, 5, 6, 7, 8, 9)]
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    gallery = work / "served.db"
    figures: dict = {"in_process": {}, "service": {}}

    names = itertools.count()
    with Faces(work / "library.db", model=args.model, detector=args.detector) as faces:
        for p in people:
            faces.enroll(p, [data / p / f"{i}.pgm" for i in (1, 2, 3)])
        calls = {
            "verify": lambda i: faces.verify(people[i % len(people)], probes[i % len(probes)]),
            "identify": lambda i: faces.identify(probes[i % len(probes)]),
            "enroll": lambda i: faces.enroll(f"lib{next(names)}", [extra[i % len(extra)]]),  # new people
        }
        faces.identify(probes[0])  # warm up (model trace)
        for op, call in calls.items():
            figures["in_process"][op] = {"sequential": in_process(call, args.requests, 1),
                                         f"{args.threads}_threads": in_process(call, args.requests, args.threads)}
        # the served gallery: the same people, enrolled the same way
        with Faces(gallery, pipeline=faces.pipeline) as served:
            for p in people:
                served.enroll(p, [data / p / f"{i}.pgm" for i in (1, 2, 3)])

    server, url = start_server(gallery, args)
    def request_maker(op: str, clients: int):
        """``i -> (method, path, files, form)`` of the ``i``-th request of ``op`` at ``clients``."""
        if op == "verify":
            return lambda i: ("POST", "/v1/verify", {"photo": ("p.pgm", probes[i % len(probes)])},
                              {"name": people[i % len(people)]})
        if op == "identify":
            return lambda i: ("POST", "/v1/identify", {"photo": ("p.pgm", probes[i % len(probes)])}, {})
        return lambda i: ("POST", f"/v1/people/c{clients}_{i}/faces", {"photo": ("p.pgm", extra[i % len(extra)])}, {})

    try:
        asyncio.run(load(url, request_maker("identify", 1), 4, 1))  # warm up
        for op in ("verify", "identify", "enroll"):
            for clients in args.clients:
                figures["service"].setdefault(op, {})[clients] = asyncio.run(
                    load(url, request_maker(op, clients), args.requests, clients))
    finally:
        server.terminate()
        server.wait(30)

    print(f"{'operation':9} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
          f"{'vs in-process':>13} {'failures':>8}")
    for op, levels in figures["service"].items():
        ceiling = max(figures["in_process"][op].values())
        for clients, f in levels.items():
            print(f"{op:9} {clients:7d} {f['rps']:8.1f} {f['p50_ms']:8.1f} {f['p99_ms']:8.1f} "
                  f"{f['p99_ms'] / f['p50_ms']:7.2f} {f['rps'] / ceiling:12.0%} {f['failures']:8d}")
    for op, runs in figures["in_process"].items():
        print(f"in process {op}: " + ", ".join(f"{name} {rps:.1f}/s" for name, rps in runs.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
