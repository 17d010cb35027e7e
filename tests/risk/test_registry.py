"""The model card, the skops round trip, the registry and the `bti train` / `bti models`
commands; stored models whose features or types are not BTI's are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.db.engine import make_engine, migrate
from bti_core.risk.models import Candidate, build_training_set
from bti_core.risk.registry import (
    ModelMismatchError,
    data_hash,
    get_model,
    list_models,
    load,
    register,
    save,
    train,
)


@pytest.fixture(scope="module")
def trained(training: pd.DataFrame):
    return train(
        training,
        # two quick candidates: what is tested is the card and the registry, not the models
        # (`test_models` fits every kind)
        candidates=[Candidate("logistic", True), Candidate("logistic", False)],
        n_folds=3,
        source="demo folder",
    )


@pytest.mark.slow
def test_the_card_says_what_the_model_is_and_how_it_scored(trained, training) -> None:
    card = trained.card
    assert card["model"] in ("logistic+engine", "logistic")
    assert card["data"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert card["data"]["rows"] == len(training)
    assert card["data"]["sha256"] == data_hash(training)
    assert card["data"]["start"] == training["ts"].min().isoformat()
    assert set(card["validation"]["reports"]) == {
        "engine",
        "baseline",
        "logistic+engine",
        "logistic",
    }
    for rep in card["validation"]["reports"].values():  # the candidates and the references
        assert 0 < rep["later"]["brier"] < 0.25 and 0 < rep["later"]["logloss"] < 0.7
        assert 0.5 < rep["later"]["auc_within_cell"] <= 1
        assert len(rep["cells"]) == 2 * 3 * 2
        assert len(rep["folds"]) == 3
        assert set(rep["leave_one_symbol_out"]) == {"BTCUSDT", "ETHUSDT"}
        assert set(rep["leave_one_year_out"]) == {"2022", "2023"}
    assert {i["feature"] for i in card["importances"]} == set(card["features"])
    assert len(card["calibration"]["cells"]) == 2 * 3 * 2
    assert set(card["calibration"]["methods"].values()) <= {"isotonic", "platt"}
    assert ("the premium uses it" in card["reason"]) == card["uses_model"]
    page = _html(trained)
    assert page.count("<table>") == 3  # validation, calibration per cell, features
    assert f"<td>{card['model']} (selected)</td>" in page
    assert card["data"]["sha256"] in page


def _html(trained) -> str:
    from bti_core.risk.registry import card_html

    return card_html(trained.card)


def test_skops_round_trip_predicts_the_same(trained, training, tmp_path: Path) -> None:
    path = save(trained, tmp_path)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".html", ".json", ".skops"]
    again = load(path)
    np.testing.assert_array_equal(again.predict(training), trained.model.predict(training))
    assert json.loads(path.with_suffix(".json").read_text())["id"] == trained.card["id"]


def test_a_model_on_other_features_is_refused(trained, tmp_path: Path) -> None:
    path = save(trained, tmp_path)
    payload = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    payload["features"] = [*payload["features"][1:], "open_interest"]
    sio.dump(payload, path)
    with pytest.raises(
        ModelMismatchError,
        match=r"other features than BTI computes now; no longer computed: open_interest; "
        r"new: side_sign\. Train it again",
    ):
        load(path)


def test_a_model_file_holding_other_types_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    sio.dump({"candidate": "logistic", "x": Path("/etc/passwd")}, path)
    with pytest.raises(ModelMismatchError, match=r"holds types BTI does not load.*pathlib"):
        load(path)
    with pytest.raises(ModelMismatchError, match="no model file"):
        load(tmp_path / "missing.skops")


def test_registry_lists_and_finds_models(trained, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bti.db'}")
    migrate(engine)
    assert list_models(engine) == []
    with pytest.raises(ModelMismatchError, match="none is registered yet"):
        get_model(engine, "nope")
    path = save(trained, tmp_path / "models")
    model_id = register(engine, trained, path)
    rec = get_model(engine, model_id)
    assert rec.candidate == trained.card["model"] and rec.path == str(path)
    assert set(rec.metrics) == {trained.card["model"], "engine", "baseline"}
    with pytest.raises(ModelMismatchError, match=re.escape(f"registered: {model_id}")):
        get_model(engine, "nope")


def test_too_little_history_is_a_clear_error(model_folder: Path, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.mkdir()
    for f in model_folder.iterdir():
        df = pd.read_csv(f)
        df.head(24 * 40).to_csv(short / f.name, index=False)
    with pytest.raises(ValueError, match=r"not enough history to train on.*90 days"):
        build_training_set(short)


@pytest.mark.slow
def test_cli_trains_lists_and_shows(model_folder: Path, tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0 and "no model is registered yet" in out.output
    out = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(model_folder),
            "--candidates",
            "logistic+engine",
            "--folds",
            "2",
            "--stride",
            "24",
            "--paths",
            "1000",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "logistic+engine" in out.output and "Monte Carlo engine's" in out.output
    model_id = re.search(r"model (\S+) written to", out.output)[1]  # type: ignore[index]
    assert (data_dir / "models" / f"{model_id}.html").is_file()
    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0 and model_id[:20] in out.output
    out = runner.invoke(app, ["models", "show", model_id])
    assert out.exit_code == 0 and "sha256" in out.output and "Later folds" in out.output
    out = runner.invoke(app, ["models", "show", "nope"])
    assert out.exit_code == 2 and "no model 'nope'" in out.output
    out = runner.invoke(app, ["train", "--data", str(model_folder), "--candidates", "gbm"])
    assert out.exit_code == 2 and "unknown model 'gbm'" in out.output
    out = runner.invoke(app, ["train", "--data", str(tmp_path / "nowhere")])
    assert out.exit_code == 2 and "error" in out.output


def test_a_quote_shows_the_learned_probability_and_prices_with_it_only_if_it_won(
    trained, tmp_path: Path, demo
) -> None:
    """The registered model is consulted on every quote: its probability is stored and shown
    beside the engine's; the premium uses it only when its validation beat the engine."""
    import dataclasses
    from decimal import Decimal

    from bti_core.market.ingest import Ingestor
    from bti_core.market.warehouse import Warehouse
    from bti_core.orders import Cover, Order
    from bti_core.policies import InsuranceService
    from bti_core.risk.engine import RiskEngine
    from bti_core.risk.registry import load_latest

    db = make_engine(f"sqlite:///{tmp_path / 'bti.db'}")
    migrate(db)
    none, why = load_latest(db)
    assert none is None and "bti train" in why
    register(db, trained, save(trained, tmp_path / "models"))
    live, _ = load_latest(db)
    assert live is not None and live.id == trained.card["id"]
    wh = Warehouse(tmp_path / "wh")
    ing = Ingestor(wh, None)
    m = demo["BTCUSDT"]
    m.ingest(ing)
    risk = RiskEngine(wh, n_paths=4_000)
    spot = Decimal(str(round(risk.spot("BTCUSDT"), 2)))
    order = Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(20))
    cover = Cover("40", 72)

    plain = InsuranceService(db, risk).quote(user_id="ana", order=order, cover=cover)
    assert plain.record.ml_probability is None and plain.learned == ""

    for uses in (False, True):
        svc = InsuranceService(db, risk, learned=dataclasses.replace(live, uses_model=uses))
        q = svc.quote(user_id="ana", order=order, cover=cover)
        r = q.record
        assert r.model_id == live.id and r.ml_probability is not None
        assert 0 < r.ml_probability < 1
        priced = r.ml_probability if uses else r.probability
        assert q.premium.probability == pytest.approx(priced)
        assert (live.id + (" prices this premium" if uses else ", shown for comparison")) in (
            q.learned
        )
    assert (
        plain.premium.total
        == InsuranceService(db, risk, learned=dataclasses.replace(live, uses_model=False))
        .quote(user_id="ana", order=order, cover=cover)
        .premium.total
    )
