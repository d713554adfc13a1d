#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one request on each, and holds them idle.

Used by arcbench.py for matrix item 6 (memory with idle keep-alive connections).

    idlehold.py HOST PORT N PATH [--tls] [--timeout SECONDS]

Prints one line `READY opened=X failed=Y seconds=S` once every connection has either served
its request or failed, then holds the connections until its standard input closes (or a line
arrives), and exits. Bounded: opening gives up after --timeout seconds; holding ends after
ten minutes at most.
"""

import argparse
import asyncio
import resource
import ssl
import sys
import time

CONCURRENCY = 256
HOLD_LIMIT_S = 600


def raise_nofile(want: int) -> None:
    """Raises RLIMIT_NOFILE so N sockets fit (up to the hard limit, or beyond it as root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_one(host, port, path, ctx, sem, held, timeout):
    """One connection: connect (TLS handshake when ctx), one GET, read the whole response."""
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx), timeout
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return False
        try:
            req = f"GET {path} HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: idlehold\r\n\r\n"
            writer.write(req.encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            if not head.startswith(b"HTTP/1.1 200"):
                writer.close()
                return False
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError, ssl.SSLError):
            writer.close()
            return False
        held.append(writer)
        return True


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("path")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    raise_nofile(args.n + 256)

    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    sem = asyncio.Semaphore(CONCURRENCY)
    held = []
    t0 = time.monotonic()
    per_conn = min(30.0, args.timeout)
    tasks = [
        asyncio.ensure_future(open_one(args.host, args.port, args.path, ctx, sem, held, per_conn))
        for _ in range(args.n)
    ]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
    ok = sum(1 for t in done if not t.cancelled() and t.exception() is None and t.result())
    print(f"READY opened={ok} failed={args.n - ok} seconds={time.monotonic() - t0:.2f}", flush=True)

    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), HOLD_LIMIT_S)
    except asyncio.TimeoutError:
        pass
    for w in held:
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
