"""The learned risk models against the Monte Carlo engine, on a data folder.

    .venv/bin/python benchmarks/models.py ../shared/data/binance-perp-dev [--stride 2]
        [--candidates logistic,logistic+engine,...] [--folds 4] [--cache FILE.parquet]

Prints, per candidate and for the engine and the GBM baseline on the same rows:

1. every walk-forward fold's Brier score, log loss and within-cell AUC, then the later folds
   pooled (what selects), with calibrated cells, the leave-one-symbol-out and leave-one-year-out
   log losses, and the mean training time per fold;
2. prediction time per 1,000,000 rows for each candidate;
3. the issue's goals on the later folds: log loss ≥ 5 % and Brier ≥ 2 % below the engine's,
   every counted cell calibrated, within-cell AUC ≥ 0.75 for 24-hour cover at 10× and above.

The training set (the backtest's walk-forward engine at every ``--stride`` hours, ~5 minutes on
the dev data) is cached with ``--cache`` so candidates can be compared again without it.

With ``--forecasts STEP_DAYS`` it prints instead the forecasts' evaluation on the folder (an
origin every STEP_DAYS days): per target, forecaster and horizon the MASE, the 80 % and 95 %
intervals' coverage, the CRPS and its ratio to the naive reference, and the seconds per
forecast — what `bti forecast --evaluate` prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bti_core.risk.backtest import BacktestConfig
from bti_core.risk.evaluation import evaluate, format_reports, select
from bti_core.risk.features import ALL_COLUMNS
from bti_core.risk.models import Candidate, all_candidates, build_training_set, fit_model
from bti_core.risk.predictor import RowPredictor


def _progress(done: int, total: int, what: str) -> None:
    print(f"  [{done}/{total}] {what}", file=sys.stderr, flush=True)


def forecasts(folder: Path, step_days: int) -> None:
    from bti_core.market.folders import load_folder
    from bti_core.risk import forecast_evaluation as fe
    from bti_core.risk import forecast_store as fs

    t0 = time.perf_counter()
    closes = {s: fs.hourly_mark_closes(mark) for s, (_, mark) in load_folder(folder).items()}
    rep = fe.evaluate(closes, step_days=step_days, progress=_progress)
    print(fe.format_report(rep))
    print(f"\n{rep.config['origins']} origins in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--candidates", default="")
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--no-leave-out", action="store_true")
    ap.add_argument("--max-rows", type=int, default=200_000, help="rows each fit samples")
    ap.add_argument("--calibration", choices=["recent", "crossfit"], default="crossfit")
    ap.add_argument("--forecasts", type=int, metavar="STEP_DAYS", help="evaluate the forecasts")
    args = ap.parse_args()
    if args.forecasts:
        forecasts(args.data, args.forecasts)
        return
    cands = (
        [Candidate.parse(c.strip()) for c in args.candidates.split(",") if c.strip()]
        if args.candidates
        else all_candidates()
    )
    t0 = time.perf_counter()
    if args.cache and args.cache.is_file():
        frame = pd.read_parquet(args.cache)
        print(f"training set: {len(frame):,} rows from {args.cache}")
    else:
        frame = build_training_set(args.data, BacktestConfig(stride_hours=args.stride))
        print(f"training set: {len(frame):,} rows in {time.perf_counter() - t0:.0f} s")
        if args.cache:
            frame.to_parquet(args.cache)
    print(
        f"symbols {', '.join(sorted(frame['symbol'].unique()))}; "
        f"{frame['ts'].min():%Y-%m-%d} to {frame['ts'].max():%Y-%m-%d}; "
        f"liquidated {frame['liquidated'].mean():.1%} of rows"
    )
    reports: dict = {}
    for cand in cands:  # one at a time, so a long run shows its figures as they come
        got = evaluate(
            frame,
            [cand],
            n_folds=args.folds,
            leave_out=not args.no_leave_out,
            max_rows=args.max_rows,
            calibration=args.calibration,
            progress=_progress,
        )
        reports = {**got, **reports} if reports else got
        reports[cand.name] = got[cand.name]
        print(format_reports(got).splitlines()[-1], flush=True)
    reports = {k: reports[k] for k in ("engine", "baseline", *[c.name for c in cands])}

    print("\n1. walk-forward folds (brier / log loss / AUC within cell)")
    for name, r in reports.items():
        folds = "  ".join(
            f"{f['brier']:.4f}/{f['logloss']:.4f}/{f['auc_within_cell']:.3f}" for f in r.folds
        )
        print(f"  {name:<17} {folds}")
    print("\n   later folds pooled, leave-one-symbol-out and leave-one-year-out (log loss means)")
    print("\n".join("  " + line for line in format_reports(reports).splitlines()))

    print("\n2. prediction time per 1,000,000 rows")
    big = frame.sample(1_000_000, replace=True, random_state=0).reset_index(drop=True)
    for cand in cands:
        model = fit_model(frame, cand, max_rows=args.max_rows, calibration=args.calibration)
        t = time.perf_counter()
        model.predict(big)
        batch = time.perf_counter() - t
        inner = model.pipeline.named_steps["model"]
        if hasattr(inner, "n_jobs"):
            inner.n_jobs = 1  # as a quote runs it (`registry.load_latest`)
        row = RowPredictor(model)  # what a quote calls
        x = big[list(ALL_COLUMNS)].to_numpy(dtype=float)
        times = []
        for i in range(200):
            t = time.perf_counter()
            row(
                x[i],
                side=1 if big["side"].iat[i] == "long" else -1,
                leverage=float(big["leverage"].iat[i]),
                horizon=float(big["horizon"].iat[i]),
            )
            times.append(time.perf_counter() - t)
        print(
            f"  {cand.name:<17} {batch:6.2f} s per 1,000,000 rows; one row (a quote's "
            f"RowPredictor) p50 {np.median(times) * 1e3:.2f} ms"
        )

    sel = select(reports)
    best, eng = reports[sel.best], reports["engine"]
    ll = 1 - best.later["logloss"] / eng.later["logloss"]
    br = 1 - best.later["brier"] / eng.later["brier"]
    cells = best.cells
    hi24 = cells[(cells["horizon"] == 24) & (cells["leverage"] >= 10)]
    counted = cells[cells["counted"]]
    print(f"\n3. goals ({sel.best}, the selected candidate, on the later folds)")
    print(f"  log loss vs engine   {ll:+.1%}  (goal ≥ +5 %)  {'met' if ll >= 0.05 else 'MISSED'}")
    print(f"  Brier vs engine      {br:+.1%}  (goal ≥ +2 %)  {'met' if br >= 0.02 else 'MISSED'}")
    all_cal = bool(counted["calibrated"].all())
    print(
        f"  calibrated cells     {int(counted['calibrated'].sum())}/{len(counted)}  "
        f"(goal all; engine {int(eng.cells[eng.cells['counted']]['calibrated'].sum())}/"
        f"{int(eng.cells['counted'].sum())})  {'met' if all_cal else 'MISSED'}"
    )
    auc_min = float(np.nanmin(hi24["auc"])) if len(hi24) else float("nan")
    print(
        f"  AUC 24 h, ≥ 10×      min {auc_min:.3f} over {len(hi24)} cells "
        f"(goal ≥ 0.75)  {'met' if auc_min >= 0.75 else 'MISSED'}"
    )
    print(f"  decision: {sel.reason}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
