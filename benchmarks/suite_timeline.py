"""Where the test suite's time goes: reads the file `BTI_TEST_TIMELINE=FILE make test` wrote
(tests/conftest.py) and prints, per worker, its modules in the order it ran them with their
wall time, when it went idle, and the modules that ran last.

Run: `BTI_TEST_TIMELINE=/tmp/timeline make test; .venv/bin/python benchmarks/suite_timeline.py
/tmp/timeline`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path


def main(path: str) -> None:
    rows = []
    for line in Path(path).read_text().splitlines():
        worker, start, end, nodeid = line.split("\t")
        rows.append((worker, float(start), float(end), nodeid.split("::")[0]))
    t0 = min(r[1] for r in rows)
    last = max(r[2] for r in rows)
    print(f"{len(rows)} tests, {last - t0:.0f} s from the first test's start to the last's end")
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for worker, start, end, module in rows:
        s = spans[worker].setdefault(module, [start, end])
        s[0], s[1] = min(s[0], start), max(s[1], end)
    for worker in sorted(spans):
        mods = sorted(spans[worker].items(), key=lambda kv: kv[1][0])
        done = max(v[1] for _, v in mods)
        print(f"\n{worker}: idle from {done - t0:.0f} s")
        for module, (start, end) in mods:
            if end - start >= 10:
                print(f"  {start - t0:6.0f} s  {end - start:5.0f} s  {module}")
    print("\nthe last modules to finish:")
    ends = sorted(
        (
            (end, worker, module, start)
            for worker, m in spans.items()
            for module, (start, end) in m.items()
        ),
        reverse=True,
    )
    for end, worker, module, start in ends[:8]:
        print(f"  {worker} {start - t0:6.0f} → {end - t0:6.0f} s  {module}")


if __name__ == "__main__":
    main(sys.argv[1])
