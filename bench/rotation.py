"""Key rotation throughput (issue 20 item 1): `keys rotate --reencrypt` against `keys seal` in the same run.

    .venv/bin/python bench/rotation.py [--nodes 10000] [--batch 500]

One embedded PostgreSQL; a 10,000-message thread seeded plain (bench/fixtures.seed_tree, ~200-byte contents, by
COPY). The baseline is `threadline keys seal` sealing it (read plain rows, seal, write, in keyset batches: the
same walk over every place); then `threadline keys rotate --reencrypt` to a new master key re-seals it all (the
same walk, each value opened with the old data key and sealed with the new). Both through the CLI, wall time of
the command (start-up included), values per second from the command's own report. Ratio = rotate / seal.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time

import httpx

from fixtures import Database, Server, create_tenant, seed_tree, start_conversation


def run(dsn: str, env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    environment = {**os.environ, "DATABASE_URL": dsn, "THREADLINE_KEY_CACHE_SECONDS": "0", **env}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "threadline.cli", "keys", *args],
        env=environment,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    old, new = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    database = Database()
    dsn = database.start()
    try:
        caller = create_tenant(dsn)
        server = Server(dsn, env={"THREADLINE_ENRICHMENT_WORKERS": "0"})
        try:
            with httpx.Client(base_url=server.url, headers=caller.headers, timeout=120) as client:
                _, root = start_conversation(client)
        finally:
            server.stop()
        seed_tree(dsn, caller, root, args.nodes)
        batch = ["--batch", str(args.batch)]
        seal_s, sealed = run(dsn, {"THREADLINE_MASTER_KEY": old}, "seal", *batch)
        rotate_s, rotated = run(
            dsn,
            {"THREADLINE_MASTER_KEY": new, "THREADLINE_MASTER_KEYS_PREVIOUS": old},
            "rotate",
            "--reencrypt",
            *batch,
        )
        sealed_n, resealed_n = int(sealed["rowsSealed"]), int(rotated["rowsResealed"])  # type: ignore[call-overload]
        load = os.getloadavg()
        print(
            f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
        )
        print(f"sealed by keys seal: {sealed['sealed']}")
        print(f"re-sealed by keys rotate --reencrypt: {rotated['resealed']}")
        print(f"{'command':<28} {'values':>8} {'seconds':>8} {'values/s':>9}")
        print(f"{'keys seal (baseline)':<28} {sealed_n:>8} {seal_s:>8.2f} {sealed_n / seal_s:>9,.0f}")
        print(
            f"{'keys rotate --reencrypt':<28} {resealed_n:>8} {rotate_s:>8.2f} {resealed_n / rotate_s:>9,.0f}"
        )
        print(f"ratio rotate / seal (seconds): {rotate_s / seal_s:.2f}x")
    finally:
        database.stop()


if __name__ == "__main__":
    main()
