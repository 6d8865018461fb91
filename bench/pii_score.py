"""Precision and recall of the PII detectors (threadline.privacy.detectors) on bench/pii_labelled.jsonl.

A detection counts as a true positive when it has the labelled kind and overlaps the labelled span by at least
half of the longer of the two; every other detection is a false positive, every unmatched label a false
negative. Also printed: how many strings without any PII got a detection (the traps), and the detectors'
speed against a baseline measured in the same run (one pass of a simple email regex over the same texts).

Run: .venv/bin/python bench/pii_score.py [--show-errors]
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from threadline.privacy.detectors import PiiKind, detect

DATA = Path(__file__).with_name("pii_labelled.jsonl")


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    shared = min(a[1], b[1]) - max(a[0], b[0])
    return shared * 2 >= max(a[1] - a[0], b[1] - b[0])


def main() -> None:
    show = "--show-errors" in sys.argv
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    trap_hits = 0
    traps = 0
    for row in rows:
        text = row["text"]
        gold = [(g["kind"], (g["start"], g["end"])) for g in row["pii"]]
        found = [(d.kind.value, (d.start, d.end)) for d in detect(text)]
        unmatched = list(gold)
        for kind, span in found:
            match = next((g for g in unmatched if g[0] == kind and _overlap(g[1], span)), None)
            if match is None:
                fp[kind] += 1
                if show:
                    print(f"FP {kind:10} {text[span[0] : span[1]]!r} in {text!r}")
            else:
                tp[kind] += 1
                unmatched.remove(match)
        for kind, span in unmatched:
            fn[kind] += 1
            if show:
                print(f"FN {kind:10} {text[span[0] : span[1]]!r} in {text!r}")
        if not gold:
            traps += 1
            trap_hits += bool(found)
    print(
        f"{len(rows)} strings, {sum(len(r['pii']) for r in rows)} labelled spans, {traps} strings without PII"
    )
    print(f"{'kind':12} {'labels':>6} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7}")
    totals = [0, 0, 0]
    for kind in [k.value for k in PiiKind]:
        t, f, n = tp[kind], fp[kind], fn[kind]
        totals = [totals[0] + t, totals[1] + f, totals[2] + n]
        print(f"{kind:12} {t + n:6} {t:4} {f:4} {n:4} {_ratio(t, t + f):>9} {_ratio(t, t + n):>7}")
    t, f, n = totals
    print(f"{'all':12} {t + n:6} {t:4} {f:4} {n:4} {_ratio(t, t + f):>9} {_ratio(t, t + n):>7}")
    print(f"traps with a false detection: {trap_hits} of {traps}")
    _speed([row["text"] for row in rows])


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


def _speed(texts: list[str]) -> None:
    baseline = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            baseline.findall(text)
    base = (time.perf_counter() - start) / (rounds * len(texts))
    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            detect(text)
    ours = (time.perf_counter() - start) / (rounds * len(texts))
    print(
        f"detect(): {ours * 1e6:.1f} us per string; one email regex: {base * 1e6:.2f} us; ratio {ours / base:.1f}x"
    )


if __name__ == "__main__":
    main()
