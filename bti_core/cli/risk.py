"""Risk models: ``bti backtest``, ``bti train``, ``bti forecast`` and ``bti models …``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bti_core.cli.common import App, app, console, progress_bar, services_context
from bti_core.config import get_settings
from bti_core.risk.backtest import Probability
from bti_core.risk.forecasting import TargetName
from bti_core.risk.probability import Innovations, Mean, VolModel

if TYPE_CHECKING:
    from bti_core.risk.forecast import Forecast


models_app = App(
    help="Learned liquidation-probability models and their cards.", no_args_is_help=True
)


@app.command()
def backtest(
    data: Annotated[
        Path,
        typer.Option(help="Folder of SYMBOL_1h_ohlcv / SYMBOL_1h_mark files (or 1m … 30m bars)"),
    ],
    stride: Annotated[
        int, typer.Option(min=1, help="Hours between start times (1: every hour)")
    ] = 1,
    paths: Annotated[int, typer.Option(min=1000, help="Monte Carlo paths per table")] = 8_000,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON here")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a reliability diagram of the cells here (a self-contained .html)"),
    ] = None,
    window_days: Annotated[
        int | None,
        typer.Option(min=30, help="Days of history each fit uses (default: the engine's, 180)"),
    ] = None,
    model: Annotated[VolModel, typer.Option(help="Volatility model (the engine uses gjr)")] = "gjr",
    innovations: Annotated[
        Innovations,
        typer.Option(help="Shocks of the simulated paths (the engine uses fhs_state_day)"),
    ] = "fhs_state_day",
    mean: Annotated[
        Mean,
        typer.Option(
            help="Drift of the paths: the window's mean return shrunk by its t-statistic "
            "(the engine's), none, or unshrunk"
        ),
    ] = "shrunk",
    seed: Annotated[
        int, typer.Option(min=0, help="Monte Carlo seed (the same seed gives the same figures)")
    ] = 0,
    prob: Annotated[
        Probability,
        typer.Option(
            help="The probability judged: the Monte Carlo engine's, a learned model's "
            "retrained on the past at each refit, or the two blended in log-odds"
        ),
    ] = "engine",
    candidate: Annotated[
        str,
        typer.Option(help="The learned model for --prob ml|blend (see `bti train --candidates`)"),
    ] = "boosting+engine",
    train_days: Annotated[
        int,
        typer.Option(
            min=30, help="Days of known outcomes before the learned model's first fit (--prob ml)"
        ),
    ] = 180,
) -> None:
    """Walk-forward backtest of the liquidation probability against realised liquidations,
    beside the GBM baseline; ends with a one-line verdict. --window-days, --model,
    --innovations and --mean try variants of the engine (see bti_core/risk/backtest.py);
    --prob ml judges a learned model the same way."""
    from bti_core.risk.backtest import BacktestConfig, run_backtest
    from bti_core.risk.backtest_report import format_report, write_json

    if plot is not None and plot.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--plot writes HTML: give a file ending in .html, not {plot.name}")
    for out in (json_out, plot):  # say so now, not after the run
        if out is not None and not out.parent.is_dir():
            raise FileNotFoundError(f"no folder {out.parent} to write {out.name} in")
    cfg = BacktestConfig(
        stride_hours=stride,
        n_paths=paths + paths % 2,
        vol_model=model,
        innovations=innovations,
        mean=mean,
        seed=seed,
    )
    if window_days is not None:
        cfg = dataclasses.replace(cfg, fit_window_days=window_days)
    with progress_bar() as progress:
        task = progress.add_task("backtest", total=None)

        def report(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total, description=what)

        if prob == "engine":
            res = run_backtest(data, cfg, progress=report)
        else:
            from bti_core.risk.learned_backtest import learned_backtest
            from bti_core.risk.models import Candidate

            res = learned_backtest(
                data,
                cfg,
                prob=prob,
                candidate=Candidate.parse(candidate),
                min_train_days=train_days,
                seed=seed,
                progress=report,
            )
    if json_out is not None:
        write_json(res, json_out)
        console.print(f"results written to {json_out}", soft_wrap=True)
    from bti_core.analytics.surface import store_backtest
    from bti_core.risk.backtest_report import json_payload

    # every run is kept for the Risk Queries page's reliability view
    stored = store_backtest(json_payload(res), get_settings().data_dir / "backtests")
    console.print(f"stored for the Risk Queries page as {stored}", soft_wrap=True)
    if plot is not None:
        from bti_core.risk.backtest_chart import calibration_figure

        # plotly.js inlined, so the file opens without a network
        fig = calibration_figure(res.cells, title=res.summary_line(), prob=res.prob)
        fig.write_html(plot, include_plotlyjs=True)
        console.print(f"reliability diagram written to {plot}", soft_wrap=True)
    console.print(format_report(res), highlight=False, soft_wrap=True)  # ends with the verdict


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Option(help="Folder of SYMBOL_1h_ohlcv / SYMBOL_1h_mark (and funding) files"),
    ],
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated candidates (default all ten: logistic, forest, svm, "
            "boosting, mlp, each also +engine)"
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=12, help="Walk-forward folds")] = 4,
    stride: Annotated[
        int, typer.Option(min=1, max=24, help="Hours between start times in the training set")
    ] = 2,
    paths: Annotated[
        int, typer.Option(min=1000, help="Monte Carlo paths behind the engine's probability")
    ] = 8_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the paths and the models")] = 0,
) -> None:
    """Build features and labels from a data folder, compare the candidates by purged
    walk-forward validation (and leaving a symbol, then a year, out), refit the best, write
    its model (skops) and card (JSON, HTML) and register it."""
    from bti_core.risk.backtest import BacktestConfig
    from bti_core.risk.models import Candidate, build_training_set
    from bti_core.risk.registry import register, save
    from bti_core.risk.registry import train as train_models

    chosen = (
        [Candidate.parse(c.strip()) for c in candidates.split(",") if c.strip()]
        if candidates
        else None
    )
    if candidates is not None and not chosen:
        raise ValueError("--candidates is empty; give at least one, e.g. logistic+engine")
    settings = get_settings()
    cfg = BacktestConfig(stride_hours=stride, n_paths=paths + paths % 2, seed=seed)
    skipped: list[str] = []
    with progress_bar() as progress:
        task = progress.add_task("features", total=None)

        def report(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total, description=what)

        frame = build_training_set(data, cfg, progress=report, skipped=skipped)
        trained = train_models(
            frame,
            candidates=chosen,
            n_folds=folds,
            seed=seed,
            progress=report,
            source=str(data),
        )
    for note in skipped:
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
    path = save(trained, settings.data_dir / "models")
    with services_context() as svc:
        model_id = register(svc.db, trained, path)
    console.print(trained.table, highlight=False)
    console.print(trained.card["reason"], highlight=False)
    console.print(f"model {model_id} written to {path} (card: {path.with_suffix('.html')})")


@app.command("forecast")
def forecast_cmd(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Symbols to forecast (default: every stored one)")
    ] = None,
    target: Annotated[
        TargetName, typer.Option(help="The mark price, its realised volatility, or both")
    ] = "both",
    forecaster: Annotated[
        str | None,
        typer.Option(
            help="price: random_walk or prophet; vol: ewma, garch, har or prophet "
            "(default: the best of the last --evaluate)"
        ),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Backtest every forecaster on --data against the naive ones (MASE, interval "
            "coverage, CRPS per horizon) and make the best the one pages use",
        ),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of SYMBOL_1h_mark files (or 1m … 30m) for --evaluate"),
    ] = None,
    step_days: Annotated[
        int, typer.Option(min=1, help="Days between forecast origins in --evaluate")
    ] = 7,
    window_days: Annotated[
        int, typer.Option(min=31, max=730, help="Days of history each fit sees")
    ] = 90,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the evaluation as JSON here")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the forecasts' samples")] = 0,
) -> None:
    """Forecasts of the mark price and realised volatility, 1 hour to 7 days ahead, with 80 %
    and 95 % intervals (cached on disk for the pages); --evaluate judges Prophet against the
    random walk, EWMA, GARCH and HAR on a data folder."""
    from bti_core.risk import forecasting

    settings = get_settings()
    if evaluate:
        if data is None:
            raise ValueError("--evaluate needs --data FOLDER (SYMBOL_1h_mark files)")
        if forecaster is not None:
            raise ValueError("--evaluate compares every forecaster; leave out --forecaster")
        if json_out is not None and not json_out.parent.is_dir():
            raise FileNotFoundError(f"no folder {json_out.parent} to write {json_out.name} in")
        with progress_bar() as progress:
            task = progress.add_task("forecasts", total=None)

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, description=what)

            rep, path = forecasting.evaluate_folder(
                data,
                settings.forecasts_dir,
                symbols=symbols or (),
                target=target,
                window_days=window_days,
                step_days=step_days,
                seed=seed,
                progress=report,
            )
        from bti_core.risk.forecast_evaluation import format_report

        console.print(format_report(rep), highlight=False, soft_wrap=True)
        console.print(f"the pages now use the best forecasters (written to {path})")
        if json_out is not None:
            json_out.write_text(json.dumps(rep.to_json(), indent=2, default=str))
            console.print(f"results written to {json_out}", soft_wrap=True)
        return
    if data is not None:
        raise ValueError("--data is for --evaluate; forecasts read the warehouse")
    with services_context() as svc:
        for f in forecasting.refresh_stored(
            svc.warehouse,
            settings.forecasts_dir,
            symbols=symbols or (),
            target=target,
            forecaster=forecaster,
            window_days=window_days,
            seed=seed,
        ):
            _print_forecast(f)


def _print_forecast(f: Forecast) -> None:
    unit = "USDT" if f.target == "price" else "annualised"
    table = Table(
        title=f"{f.symbol} {'mark price' if f.target == 'price' else 'realised volatility'} "
        f"from {f.origin:%Y-%m-%d %H:%M} UTC by {f.forecaster} ({unit})"
    )
    for col in ("hours", "at (UTC)", "median", "80 %", "95 %"):
        table.add_column(col, justify="right")

    def fmt(x: Any) -> str:
        return f"{float(x):,.2f}" if f.target == "price" else f"{float(x):.1%}"

    for r in f.frame().itertuples():
        table.add_row(
            str(r.horizon),
            f"{r.ts:%m-%d %H:%M}",
            fmt(r.median),
            f"{fmt(r.lo80)} – {fmt(r.hi80)}",
            f"{fmt(r.lo95)} – {fmt(r.hi95)}",
        )
    console.print(table)


@models_app.command("list")
def models_list() -> None:
    """Registered models, newest first, with their later-fold scores beside the engine's."""
    from bti_core.risk.registry import list_models

    with services_context() as svc:
        rows = list_models(svc.db)
    if not rows:
        console.print("no model is registered yet: train one with `bti train --data DIR`")
        return
    table = Table(title="Models")
    table.add_column("id", no_wrap=True)  # copied into `bti models show`
    for col in ("trained", "data", "log loss", "engine's", "prices cover"):
        table.add_column(col)
    for m in rows:
        mine, eng = m.metrics.get(m.candidate, {}), m.metrics.get("engine", {})
        table.add_row(
            m.id,
            f"{m.created_at:%Y-%m-%d %H:%M}",
            f"{', '.join(m.symbols)} {m.data_start:%Y-%m}…{m.data_end:%Y-%m}",
            f"{mine.get('logloss', float('nan')):.5f}",
            f"{eng.get('logloss', float('nan')):.5f}",
            "yes" if m.uses_model else "no (the engine does)",
        )
    console.print(table)


@models_app.command("show")
def models_show(
    model_id: Annotated[str, typer.Argument(help="A model id from `bti models list`")],
) -> None:
    """A model's card: data, decision, validation table, calibration per cell, features."""
    import json

    from bti_core.risk.registry import get_model

    with services_context() as svc:
        rec = get_model(svc.db, model_id)
    card_path = Path(rec.path).with_suffix(".json")
    if not card_path.is_file():
        raise FileNotFoundError(f"the card of {model_id} is missing: no file {card_path}")
    card = json.loads(card_path.read_text())
    d = card["data"]
    console.print(f"[bold]{card['id']}[/] ({card['model']}), trained {card['created']}")
    console.print(
        f"data: {d['rows']:,} rows of {', '.join(d['symbols'])}, {d['start'][:10]} to "
        f"{d['end'][:10]}, sha256 {d['sha256']}",
        highlight=False,
    )
    console.print(f"decision: {card['reason']}", highlight=False)
    console.print(f"validation: {card['validation']['scheme']}", highlight=False)
    table = Table(title="Later folds")
    for col in ("candidate", "brier", "log loss", "AUC within cell", "calibrated cells"):
        table.add_column(col)
    for name, r in card["validation"]["reports"].items():
        later = r["later"]
        table.add_row(
            name,
            f"{later['brier']:.5f}",
            f"{later['logloss']:.5f}",
            f"{later['auc_within_cell']:.3f}",
            f"{int(later['calibrated_cells'])}/{int(later['counted_cells'])}",
        )
    console.print(table)
    top = ", ".join(f"{i['feature']} ({i['logloss_rise']:+.4f})" for i in card["importances"][:8])
    console.print(f"features that matter most (log-loss rise when shuffled): {top}")
    console.print(f"card: {Path(rec.path).with_suffix('.html')}")
