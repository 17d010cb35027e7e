"""Training, the model card and the registry of learned risk models.

`train` evaluates the candidates (`models.evaluate`), selects one (`models.select`), refits it on
every row and writes three files under the models folder: the model in skops's format (a
declared set of types, no pickle: a file cannot run code when it is loaded), its card as JSON
and the same card as a readable HTML page. The database's ``model`` table lists them.

A model is loaded only if every type in its file is scikit-learn's or NumPy's and its features
are the ones this version of BTI computes; otherwise `ModelMismatchError` says what differs.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bti_core import files
from bti_core.errors import BTIError
from bti_core.risk.evaluation import REFERENCES, evaluate, format_reports, select
from bti_core.risk.features import ALL_COLUMNS
from bti_core.risk.models import (
    META_COLUMNS,
    SETTINGS,
    Candidate,
    CellCalibrator,
    Progress,
    RiskModel,
    all_candidates,
    cell_of,
    fit_model,
)
from bti_core.risk.predictor import RowPredictor

CARD_VERSION = 1
TRUSTED_PREFIXES = ("sklearn.", "numpy.")


class ModelMismatchError(BTIError, ValueError):
    """A stored model that this version of BTI cannot use as it is."""


def data_hash(frame: pd.DataFrame) -> str:
    """SHA-256 over the training rows (meta columns and features, row by row)."""
    cols = [c for c in (*META_COLUMNS, *ALL_COLUMNS) if c in frame.columns]
    rows = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    return hashlib.sha256(rows.tobytes()).hexdigest()


def _importances(model: RiskModel, frame: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    """Permutation importance (Breiman 2001) on up to 20,000 of the latest rows: how much the
    log loss rises when one feature's column is shuffled."""
    from bti_core.risk.metrics import log_loss

    rows = frame.tail(20_000)
    y = rows["liquidated"].to_numpy(dtype=float)
    base = log_loss(model.predict(rows), y)
    rng = np.random.default_rng(seed)
    out = []
    for col in model.features:
        shuffled = rows.copy()
        shuffled[col] = rng.permutation(shuffled[col].to_numpy())
        out.append({"feature": col, "logloss_rise": log_loss(model.predict(shuffled), y) - base})
    return sorted(out, key=lambda d: -d["logloss_rise"])


@dataclass
class Trained:
    model: RiskModel
    card: dict[str, Any]
    table: str  # the comparison printed by `bti train`


def train(
    frame: pd.DataFrame,
    *,
    candidates: Sequence[Candidate] | None = None,
    n_folds: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
    source: str = "",
) -> Trained:
    """Evaluate, select, refit the selected candidate on every row, and write its card."""
    cands = list(candidates or all_candidates())
    if frame["liquidated"].nunique() < 2:
        raise ValueError(
            "the training rows hold no liquidation (or nothing else): nothing to learn"
        )
    reports = evaluate(frame, cands, n_folds=n_folds, seed=seed, progress=progress)
    sel = select(reports)
    model = fit_model(frame, Candidate.parse(sel.best), seed=seed)
    created = datetime.now(UTC).replace(microsecond=0)
    digest = data_hash(frame)
    ts = pd.DatetimeIndex(frame["ts"])
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "id": f"{sel.best}-{created:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        "created": created.isoformat(),
        "model": sel.best,
        "uses_model": sel.uses_model,
        "reason": sel.reason,
        "features": list(model.features),
        "settings": SETTINGS[model.candidate.kind],  # the classifier's, as it was fitted
        "data": {
            "source": source,
            "symbols": sorted(frame["symbol"].unique().tolist()),
            "start": ts.min().isoformat(),
            "end": ts.max().isoformat(),
            "rows": len(frame),
            "sha256": digest,
        },
        "validation": {
            "scheme": f"purged walk-forward, {n_folds} folds, embargo = the longest horizon; "
            "calibration per cell, cross-fitted over thirds of each training set; "
            "selection by log loss on the later half of the folds",
            "reports": {k: r.to_json() for k, r in reports.items()},
        },
        "calibration": {
            "methods": {str(c): m for c, m in model.calibrator.methods().items()},
            "cells": reports[sel.best].cells.to_dict(orient="records"),
        },
        "importances": _importances(model, frame, seed),
    }
    return Trained(model, card, format_reports(reports))


# ---------------------------------------------------------------------------------------------
# files


def save(trained: Trained, folder: Path) -> Path:
    """Write ``<id>.skops``, ``<id>.json`` and ``<id>.html`` under ``folder``; returns the
    model file. The card is written last, so a listed card always has its model beside it."""
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    m = trained.model
    payload = {
        "candidate": m.candidate.name,
        "features": list(m.features),
        "pipeline": m.pipeline,
        "maps": {str(c): [method, est] for c, (method, est) in m.calibrator.maps.items()},
        "pooled": {str(s): est for s, est in m.calibrator.pooled.items()},
        "seed": m.seed,
    }
    base = folder / trained.card["id"]
    files.write_bytes(base.with_suffix(".skops"), sio.dumps(payload))
    files.write_bytes(base.with_suffix(".html"), card_html(trained.card).encode())
    files.write_bytes(
        base.with_suffix(".json"), json.dumps(trained.card, indent=1, default=_json).encode()
    )
    return base.with_suffix(".skops")


def _json(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None
    raise TypeError(f"not JSON: {type(x).__name__}")


def load(path: Path) -> RiskModel:
    """A stored model, refused with `ModelMismatchError` if its file holds a type outside
    scikit-learn and NumPy or its features are not the ones BTI computes now."""
    import skops.io as sio

    if not path.is_file():
        raise ModelMismatchError(f"no model file {path}")
    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise ModelMismatchError(
            f"{path.name} holds types BTI does not load ({', '.join(foreign)}); a model file may "
            "hold only scikit-learn and NumPy objects"
        )
    payload = sio.load(path, trusted=untrusted)
    cand = Candidate.parse(str(payload["candidate"]))
    stored = tuple(payload["features"])
    if stored != cand.features:
        gone = [f for f in stored if f not in cand.features]
        new = [f for f in cand.features if f not in stored]
        raise ModelMismatchError(
            f"{path.name} was trained on other features than BTI computes now"
            + (f"; no longer computed: {', '.join(gone)}" if gone else "")
            + (f"; new: {', '.join(new)}" if new else "")
            + ("; same names in another order" if not gone and not new else "")
            + ". Train it again with `bti train --data DIR`."
        )
    cal = CellCalibrator(
        maps={int(c): (str(v[0]), v[1]) for c, v in payload["maps"].items()},
        pooled={int(s): est for s, est in payload["pooled"].items()},
    )
    return RiskModel(cand, payload["pipeline"], cal, int(payload["seed"]))


# ---------------------------------------------------------------------------------------------
# the card as HTML


def _table(rows: list[dict[str, Any]], cols: Sequence[str], fmt: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                text = format(v, fmt.get(c, ".4f")) if np.isfinite(v) else "–"
            else:
                text = "–" if v is None else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def card_html(card: dict[str, Any]) -> str:
    """A page a person reads: what the model is, what it was trained on, how it scored beside
    the engine, how each cell is calibrated, which features it leans on."""
    reports = card["validation"]["reports"]
    compare = []
    for name, r in reports.items():
        loso = [s["logloss"] for s in r["leave_one_symbol_out"].values()]
        loyo = [s["logloss"] for s in r["leave_one_year_out"].values()]
        compare.append(
            {
                "candidate": name + (" (selected)" if name == card["model"] else ""),
                "brier": r["later"]["brier"],
                "log loss": r["later"]["logloss"],
                "AUC within cell": r["later"]["auc_within_cell"],
                "calibrated cells": f"{int(r['later']['calibrated_cells'])}"
                f"/{int(r['later']['counted_cells'])}",
                "LOSO log loss": float(np.mean(loso)) if loso else float("nan"),
                "LOYO log loss": float(np.mean(loyo)) if loyo else float("nan"),
                "fit seconds": r["train_seconds"],
            }
        )
    d = card["data"]
    cells = card["calibration"]["cells"]
    methods = card["calibration"]["methods"]
    for c in cells:
        code = int(cell_of([c["side"]], [c["leverage"]], [c["horizon"]])[0])
        c["map"] = methods.get(str(code), "pooled Platt")
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>Model card {html.escape(card['id'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;"
        "color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#f3f3f3}</style>",
        f"<h1>Model card: {html.escape(card['model'])}</h1>",
        f"<p><b>{html.escape(card['id'])}</b>, trained {html.escape(card['created'])}.</p>",
        f"<p><b>Decision:</b> {html.escape(card['reason'])}.</p>",
        "<h2>Data</h2>",
        f"<p>{d['rows']:,} rows (start hour × side × leverage × horizon) of "
        f"{html.escape(', '.join(d['symbols']))} from {html.escape(d['start'][:10])} to "
        f"{html.escape(d['end'][:10])}; SHA-256 {html.escape(d['sha256'])}"
        + (f"; from {html.escape(d['source'])}" if d["source"] else "")
        + ".</p>",
        "<h2>Validation</h2>",
        f"<p>{html.escape(card['validation']['scheme'])}. Pooled over the later folds; LOSO "
        "and LOYO are the means over each symbol and each year left out.</p>",
        _table(
            compare,
            [
                "candidate",
                "brier",
                "log loss",
                "AUC within cell",
                "calibrated cells",
                "LOSO log loss",
                "LOYO log loss",
                "fit seconds",
            ],
            {"brier": ".5f", "log loss": ".5f", "AUC within cell": ".3f", "fit seconds": ".1f"},
        ),
        "<h2>Calibration per cell (later folds)</h2>",
        _table(
            cells,
            ["side", "leverage", "horizon", "n", "realised", "predicted", "ratio", "auc", "map"],
            {"realised": ".4f", "predicted": ".4f", "ratio": ".2f", "auc": ".3f"},
        ),
        "<h2>Features, by permutation importance</h2>",
        _table(card["importances"], ["feature", "logloss_rise"], {"logloss_rise": ".5f"}),
        "<h2>References</h2><p>"
        + ", ".join(html.escape(r) for r in REFERENCES)
        + ": the Monte Carlo engine and the GBM baseline on the same rows.</p>",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# the database's list


def register(engine: Any, trained: Trained, path: Path) -> str:
    """Add the model to the ``model`` table (its files are already written)."""
    from bti_core.db.engine import write_scope
    from bti_core.db.models import RiskModelRecord

    c = trained.card
    reports = c["validation"]["reports"]
    metrics = {k: reports[k]["later"] for k in (c["model"], *REFERENCES)}
    rec = RiskModelRecord(
        id=c["id"],
        created_at=datetime.fromisoformat(c["created"]),
        candidate=c["model"],
        uses_model=bool(c["uses_model"]),
        reason=c["reason"][:1000],
        data_sha256=c["data"]["sha256"],
        data_start=datetime.fromisoformat(c["data"]["start"]),
        data_end=datetime.fromisoformat(c["data"]["end"]),
        symbols=c["data"]["symbols"],
        features=c["features"],
        metrics=json.loads(json.dumps(metrics, default=_json)),
        path=str(path),
    )
    with write_scope(engine) as session:
        session.add(rec)
    return rec.id


def list_models(engine: Any) -> list[Any]:
    """Every registered model, newest first."""
    from sqlmodel import Session, col, select

    from bti_core.db.models import RiskModelRecord

    with Session(engine) as session:
        rows = session.exec(
            select(RiskModelRecord).order_by(col(RiskModelRecord.created_at).desc())
        )
        return list(rows)


@dataclass(frozen=True)
class LiveModel:
    """The model quotes consult: its id, whether it may price cover, and why."""

    id: str
    model: RiskModel
    uses_model: bool
    reason: str

    @cached_property
    def row(self) -> RowPredictor:
        """The one-order predictor quotes call (`RowPredictor`)."""
        return RowPredictor(self.model)


def load_latest(engine: Any) -> tuple[LiveModel | None, str]:
    """The newest registered model whose file loads, and a note on what was passed over (a
    model whose features no longer match is skipped, not used). ``(None, note)`` if none."""
    notes = []
    for rec in list_models(engine):
        try:
            model = load(Path(rec.path))
        except ModelMismatchError as exc:
            notes.append(f"{rec.id} not used: {exc}")
            continue
        inner = model.pipeline.named_steps["model"]
        if hasattr(inner, "n_jobs"):
            inner.n_jobs = 1  # one row at a time: threads cost more than they save
        live = LiveModel(rec.id, model, bool(rec.uses_model), rec.reason)
        live.row  # noqa: B018 - compiled now, not in the first quote
        return live, "; ".join(notes)
    return None, "; ".join(notes) or "no learned model is registered (`bti train --data DIR`)"


def get_model(engine: Any, model_id: str) -> Any:
    """The registered model ``model_id``, or a `ModelMismatchError` listing the known ones."""
    from sqlmodel import Session

    from bti_core.db.models import RiskModelRecord

    with Session(engine) as session:
        rec = session.get(RiskModelRecord, model_id)
    if rec is None:
        known = [m.id for m in list_models(engine)]
        raise ModelMismatchError(
            f"no model {model_id!r}; "
            + (f"registered: {', '.join(known[:10])}" if known else "none is registered yet")
            + " (`bti models list`)"
        )
    return rec
