"""A backtest's results for people and files: the cell table with its verdicts, the book by
year and the one-line verdict (`format_report`, what `bti backtest` prints), and the results as
plain JSON (`json_payload`, `write_json`: NaN and infinity become null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bti_core.risk.backtest import CALIBRATED, INTERVAL_DRAWS, MIN_COUNTED_RATE, BacktestResult


def format_report(res: BacktestResult) -> str:
    c = res.cells.copy()
    c["verdict"] = np.where(~c["counted"], "-", np.where(c["calibrated"], "ok", "MISS"))
    judged = res.prob
    refs = [n for n in ("engine", "baseline") if n != judged]
    names = [judged, *refs]
    short = {"engine": "eng", "baseline": "base", "ml": "ml", "blend": "blend"}
    slash = "/".join(short[n][0] if n != "blend" else "bl" for n in names)
    w = 9 * len(names) + 2
    lines = [
        f"{'side':<6}{'lev':>4}{'hours':>6}{'n':>7}{'realised':>10}{judged:>9}"
        f"{'real/' + short[judged]:>11}{'90% interval':>14}{'':>6}"
        + "".join(f"{ref:>9}{'real/' + short[ref]:>10}" for ref in refs)
        + f"{'brier ' + slash:>{w}}{'logloss ' + slash:>{w}}{'AUC ' + slash:>{6 * len(names) + 3}}"
    ]
    for r in c.to_dict(orient="records"):
        interval = f"{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}"
        row = (
            f"{r['side']:<6}{r['leverage']:>4}{r['horizon']:>6}{r['n']:>7}{r['realised']:>10.4f}"
            f"{r[f'{judged}_mean']:>9.4f}{r['ratio']:>11.2f}"
            f"{interval:>14}{r['verdict']:>6}"
        )
        for ref in refs:
            real_ref = r["realised"] / max(r[f"{ref}_mean"], 1e-12)
            row += f"{r[f'{ref}_mean']:>9.4f}{real_ref:>10.2f}"
        for metric, fmt in (("brier", ".5f"), ("logloss", ".5f")):
            row += f"{'/'.join(format(r[f'{n}_{metric}'], fmt) for n in names):>{w}}"
        row += f"{'/'.join(format(r[f'{n}_auc'], '.3f') for n in names):>{6 * len(names) + 3}}"
        lines.append(row)
    p = res.pooled
    lines.append(
        f"pooled: n={int(p['n'])} realised={p['realised']:.4f} "
        + " ".join(f"{n}={p[f'{n}_mean']:.4f}" for n in names)
        + " AUC within cell (mean) "
        + " ".join(f"{n}={p[f'{n}_auc_within_cell']:.3f}" for n in names)
    )
    if res.model:
        lines.append(f"{judged}: {res.model}")
    lines.append("book by year (premium p⁺·(1 + loading) per margin insured):")
    for y in res.by_year.itertuples():
        lines.append(
            f"  {y.year}: {y.policies} policies, premiums {y.premiums:,.1f}, "
            f"payouts {y.payouts:,.0f}, loss ratio {y.loss_ratio:.2f}"
        )
    lines.append(f"pool's worst drawdown: {res.worst_drawdown:,.1f} margins")
    lines.append(
        f"ok: real/{short[judged]} in [{CALIBRATED[0]}, {CALIBRATED[1]}]; cells realised under "
        f"{MIN_COUNTED_RATE:.1%} are not counted (-); the 90% interval resamples symbol × month "
        f"blocks ({INTERVAL_DRAWS:,} draws)"
    )
    lines.extend(f"skipped: {note}" for note in res.skipped)
    lines.append(res.summary_line())
    return "\n".join(lines)


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def json_payload(res: BacktestResult) -> dict[str, Any]:
    """``res.to_json()`` as plain JSON values (no NaN: they become null)."""
    payload: dict[str, Any] = _finite(json.loads(json.dumps(res.to_json(), default=str)))
    return payload


def write_json(res: BacktestResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(json_payload(res), indent=2, allow_nan=False))
