"""`load_book` on SQLite and PostgreSQL after a real crash: claims, decisions (automatic and
by an underwriter), payouts and the market state at purchase, read back as the views see
them; and the demo book bought over a demo history on its own anvil node."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from bti_core.analytics.book import book_version, load_book
from bti_core.analytics.views import claims_summary, totals
from bti_core.chain.node import AnvilNode, free_port
from tests.worlds import UNDERWRITER, World, buy, claim_of, crash


def test_the_book_after_a_crash(world: World) -> None:
    w = world
    small = buy(w, "alice", coverage="100")
    big = buy(w, "bob", coverage="140", leverage="20")
    safe = buy(w, "carol", leverage="2", coverage="50")
    w.claims.auto_limit = Decimal(120)
    v0 = book_version(w.db)
    crash(w)
    w.claims.run()
    assert book_version(w.db) != v0  # a claim changes the fingerprint the page caches on
    w.claims.decide(claim_of(w, big).id or 0, UNDERWRITER, "approve", "mark confirms it")
    book = load_book(w.db, w.wh).set_index("policy")
    assert book.loc[small.id, "claim_state"] == "paid"
    assert book.loc[small.id, "amount_paid"] == float(small.payout)
    assert not book.loc[small.id, "referred"] and book.loc[big.id, "referred"]
    assert book.loc[safe.id, "status"] == "active" and pd.isna(book.loc[safe.id, "claim"])
    assert book.loc[big.id, "hours_to_decision"] >= 0
    assert set(book["trend"]) <= {"up", "down", "sideways"}
    assert set(book["vol_regime"]) <= {"low", "normal", "high"}
    assert book.loc[big.id, "leverage_bucket"] == "10–20×"
    t = totals(book.reset_index())
    assert t.realised_loss == float(small.payout + big.payout)
    assert t.open_cover == float(safe.payout)
    c = claims_summary(book.reset_index())
    assert (c.automatic, c.referred, c.undecided) == (1, 1, 0)


@pytest.fixture
def own_anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    """The demo book moves its chain's clock: its own node, not the session's."""
    node = AnvilNode(tmp_path / "chain", port=free_port()).start()
    yield node
    node.stop(snapshot=False)


def test_the_demo_book_is_bought_through_the_service_once(
    data_dir: Path, own_anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bti_core.cli import app
    from bti_core.config import get_settings
    from bti_core.demo_book import DemoBookError, book_state, build_demo_book
    from bti_core.market.synthetic import generate_demo_markets
    from bti_core.services import build_services
    from tests.conftest import _fill

    last = pd.Timestamp.now(tz="UTC").floor("1h") - pd.Timedelta("1h")
    markets = generate_demo_markets(
        start=last - pd.Timedelta(hours=24 * 50 - 1), periods=24 * 50, seed=4
    )
    _fill(data_dir, markets, own_anvil, monkeypatch)
    # as `make run` buys it: its progress in plain lines (a bar would stay silent in a pipe)
    out = CliRunner().invoke(
        app,
        ["demo-book", "--policies", "24", "--traders", "4", "--seed", "3", "--progress-lines"],
    )
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert any(line.endswith("of 24 (100%)") for line in lines), lines
    svc = build_services(get_settings())
    try:
        book = load_book(svc.db, svc.warehouse)
        said = " ".join(out.output.split())  # the summary, however the console wrapped it
        assert len(book) >= 12 and f"demo book: {len(book)} policies from" in said, said
        assert book["trader"].nunique() <= 4
        assert book["start"].min() < last - pd.Timedelta(days=7)  # spread over the history
        stats = svc.chain.pool_stats()
        assert stats.policies == len(book)  # every one bought on-chain
        assert float(stats.premiums_in) == pytest.approx(book["premium"].sum())
        assert float(stats.claims_paid) == pytest.approx(book["amount_paid"].sum())
        assert book_state(svc) == "complete"
        # the chain's clock is back at the present
        block = svc.chain.w3.eth.get_block("latest")
        assert abs(block["timestamp"] - pd.Timestamp.now("UTC").timestamp()) < 120
        with pytest.raises(DemoBookError, match="already holds"):
            build_demo_book(svc, policies=5)
    finally:
        svc.close()


def test_the_market_state_at_purchase_reads_no_later_bar(tmp_path: Path, demo: dict) -> None:
    from bti_core.analytics.book import market_regimes
    from bti_core.market.ingest import Ingestor
    from bti_core.market.schema import Kind
    from bti_core.market.warehouse import Warehouse

    mark = demo["BTCUSDT"].mark
    cut = mark["ts"].iloc[24 * 40]  # a purchase at this bar's open (of 60 days)
    early = Warehouse(tmp_path / "early")
    Ingestor(early, None).ingest_frame(
        mark[mark["ts"] < cut], symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="t"
    )
    later = mark.copy()
    after = later["ts"] >= cut
    later.loc[after, ["open", "high", "low", "close"]] *= 0.5  # a crash from the purchase on
    full = Warehouse(tmp_path / "full")
    Ingestor(full, None).ingest_frame(
        later, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="t"
    )
    a, b = market_regimes(early, "BTCUSDT"), market_regimes(full, "BTCUSDT")
    known_a = a[a["known_at"] <= cut].iloc[-1]
    known_b = b[b["known_at"] <= cut].iloc[-1]
    assert known_a["known_at"] == known_b["known_at"] == cut  # the bar that closed at purchase
    assert (known_a["trend"], known_a["vol_regime"]) == (known_b["trend"], known_b["vol_regime"])
    # and the crash does show once its bars have closed
    assert b[b["known_at"] > cut + pd.Timedelta(hours=30)]["trend"].iloc[0] == "down"
