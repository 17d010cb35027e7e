"""A demo insured book, bought through the real service path over the demo markets' history.

`bti demo-book` (and `make run`, on a fresh install) walks the stored year in time order and,
at each purchase time ``t``: prices the quote from the market as it stood at ``t`` (the risk
engine refitted monthly on the bars closed by then), moves the local chain's clock to ``t``
(anvil's ``evm_setTime``) and buys through `InsuranceService.buy`, which pays the premium
on-chain from the trader's custodial demo wallet. Weekly, policies that ended are expired
(their cover released on-chain). At the end the clock is set back to the present and the
claims service runs once, as the worker would on catching up: every policy whose mark price
reached its liquidation price inside its window gets its claim opened, audited, decided and
— when approved automatically — paid; the demo underwriter then decides the referred ones.

Moving a chain's clock is refused anywhere but the local development chain, and the book is
made only where no policy exists yet (never mixed into someone's own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import func
from sqlmodel import select

from bti_core import files
from bti_core.db.engine import session_scope
from bti_core.db.models import Policy
from bti_core.db.statuses import PolicyStatus
from bti_core.errors import BTIError, NoDataError
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind
from bti_core.risk.engine import (
    FEATURE_WINDOW,
    RiskEngine,
    SymbolRisk,
    build_symbol_risk,
    hourly_mark,
)

if TYPE_CHECKING:
    from bti_core.services import Services

MARKER = ".demo-book.json"
LOCAL_CHAIN_ID = 31337
UNDERWRITER = "underwriter"  # the demo underwriter account decides the referred claims


class DemoBookError(BTIError, RuntimeError):
    """The demo book cannot be made here (a foreign chain, a book that exists)."""


class AsOfRiskEngine(RiskEngine):
    """The risk engine as it stood at ``as_of``: fitted on the hourly bars closed by then and
    refitted once a month of demo time (a lookup between refits, as live quotes are)."""

    def __init__(
        self, warehouse: object, start: pd.Timestamp, *, n_paths: int = 4_000, refit: str = "30D"
    ) -> None:
        super().__init__(warehouse, n_paths=n_paths)  # type: ignore[arg-type]
        # the first refit (the last bar closed by the first purchase); then every `refit`
        self.start = (start - pd.Timedelta(hours=1)).floor("1h")
        self.as_of = start
        self.refit = pd.Timedelta(refit)
        self._fits: dict[tuple[str, pd.Timestamp], SymbolRisk] = {}

    def _known(self) -> pd.Timestamp:
        return (self.as_of - pd.Timedelta(hours=1)).floor("1h")  # the last closed bar's open

    def symbol_risk(self, symbol: str) -> SymbolRisk:
        fit_at = self.start + ((self._known() - self.start) // self.refit) * self.refit
        key = (symbol, fit_at)
        if key not in self._fits:
            mark = hourly_mark(self.warehouse, symbol, end=fit_at)
            if mark.empty:
                raise NoDataError(f"{symbol}: no bars before {fit_at:%Y-%m-%d}")
            recent = mark["ts"].iloc[-1] - FEATURE_WINDOW
            try:
                bars = self.warehouse.bars(symbol, "1h", recent, fit_at)
            except NoDataError:
                bars = None
            try:
                funding = self.warehouse.query(
                    Kind.FUNDING, symbol, FUNDING_TIMEFRAME, recent, fit_at
                )
            except NoDataError:
                funding = None
            self._fits[key] = build_symbol_risk(
                symbol, mark, bars=bars, funding=funding, n_paths=self.n_paths
            )
        sr = self._fits[key]
        # priced from the fitted table, measured from the mark price at `as_of`
        return _at_spot(sr, self.spot(symbol))

    def spot(self, symbol: str) -> float:
        bars = self.warehouse.bars(
            symbol, "1h", self._known() - pd.Timedelta(hours=6), self._known(), kind=Kind.MARK
        )
        if bars.empty:
            raise NoDataError(f"{symbol}: no mark price at {self.as_of:%Y-%m-%d %H:%M}")
        return float(bars["close"].iloc[-1])


def _at_spot(sr: SymbolRisk, spot: float) -> SymbolRisk:
    import dataclasses

    return dataclasses.replace(sr, spot=spot)


@dataclass
class DemoBookReport:
    bought: int = 0
    refused: int = 0  # quotes underwriting refused (left out, as a trader would)
    traders: int = 0
    expired: int = 0
    claims: int = 0
    paid: int = 0
    decided_by_underwriter: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"demo book: {self.bought} policies from {self.traders} traders "
            f"({self.refused} quotes refused by underwriting), {self.expired} expired, "
            f"{self.claims} claims, {self.paid} paid, {self.decided_by_underwriter} decided by "
            "the demo underwriter"
            + (
                " (refused: " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) + ")"
                if self.reasons
                else ""
            )
        )


def has_policies(services: Services) -> int:
    with session_scope(services.db) as s:
        return int(s.exec(select(func.count()).select_from(Policy)).one())


def _set_chain_time(services: Services, at: datetime) -> None:
    from bti_core.chain.node import rpc_call

    rpc_call(services.chain.url, "evm_setTime", [int(at.timestamp())])
    rpc_call(services.chain.url, "evm_mine", [])


def _write_marker(services: Services, state: str, report: DemoBookReport | None = None) -> None:
    body = {"state": state, "written": pd.Timestamp.now("UTC").isoformat()}
    if report is not None:
        body["report"] = report.line()
    files.write_text(services.settings.data_dir / MARKER, json.dumps(body))


def book_state(services: Services) -> str:
    try:
        return str(json.loads((services.settings.data_dir / MARKER).read_text())["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return "absent"


def build_demo_book(
    services: Services,
    *,
    policies: int = 300,
    traders: int = 30,
    seed: int = 7,
    progress: Callable[[int, int, str], None] | None = None,
) -> DemoBookReport:
    """Buy ``policies`` policies for ``traders`` demo traders over the stored history, then
    run the claims once (module docstring). Refuses a foreign chain or an existing book."""
    from bti_core.auth import ensure_demo_users, get_user
    from bti_core.orders import Cover, MarginMode, Order, OrderType, Side
    from bti_core.policies import InsuranceService

    if not 1 <= policies <= 5_000:
        raise DemoBookError(f"policies must be from 1 to 5,000; got {policies}")
    if not 1 <= traders <= 500:
        raise DemoBookError(f"traders must be from 1 to 500; got {traders}")
    chain = services.chain
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise DemoBookError(
            f"the demo book moves the chain's clock and is made on the local development chain "
            f"only (chain id {LOCAL_CHAIN_ID}); this one is {chain.chain_id}"
        )
    n = has_policies(services)
    if n:
        raise DemoBookError(
            f"the database already holds {n} policies: a demo book is made only on an empty book"
        )
    wh = services.warehouse
    symbols = list(wh.symbols(Kind.MARK))
    if not symbols:
        raise DemoBookError("no mark prices stored: run `bti demo` first")
    spans = [wh.dataset(Kind.MARK, s, "1h") for s in symbols]
    if any(d is None or d.first is None or d.last is None for d in spans):
        raise DemoBookError("the demo book needs hourly mark prices for every symbol")
    first = max(pd.Timestamp(d.first) for d in spans if d is not None and d.first is not None)
    last = min(pd.Timestamp(d.last) for d in spans if d is not None and d.last is not None)
    lo, hi = first + pd.Timedelta(days=35), last - pd.Timedelta(hours=2)
    if hi - lo < pd.Timedelta(days=7):
        raise DemoBookError(
            f"the demo markets hold {((last - first) / pd.Timedelta(days=1)):.0f} days; "
            "the demo book needs at least 42 (35 to fit the first quotes on)"
        )
    _write_marker(services, "pending")
    rng = np.random.default_rng(seed)
    span = (hi - lo).total_seconds()
    # three in four over the history, one in four in the last two days (open now)
    recent = min(span, 2 * 86400.0)
    offsets = np.where(
        rng.random(policies) < 0.75,
        rng.uniform(0, span, policies),
        span - rng.uniform(0, recent, policies),
    )
    times = sorted((lo + pd.Timedelta(seconds=float(x))).floor("s") for x in offsets)
    names = ["trader", *[f"demo-{i:02d}" for i in range(1, traders)]]
    weights = rng.pareto(1.5, len(names)) + 1.0  # a few traders buy most of the book
    weights /= weights.sum()
    sym_w = np.array(
        [3.0 if s.startswith("BTC") else 2.0 if s.startswith("ETH") else 1.0 for s in symbols]
    )
    sym_w /= sym_w.sum()

    risk = AsOfRiskEngine(wh, lo)
    clock_at = [datetime.now().astimezone()]
    ins = InsuranceService(
        services.db,
        risk,
        limits=services.limits,
        macro=services.macro,
        chain=chain,
        wallets=services.wallets,
        clock=lambda: clock_at[0],
    )
    report = DemoBookReport()
    funded: set[str] = set()
    next_expiry = times[0] + pd.Timedelta(days=7)
    for i, t in enumerate(times):
        if progress is not None:
            progress(i, len(times), f"{t:%Y-%m-%d} buying")
        at = t.to_pydatetime()
        clock_at[0] = at
        risk.as_of = t
        _set_chain_time(services, at)
        if t >= next_expiry:
            report.expired += ins.expire_due()
            next_expiry = t + pd.Timedelta(days=7)
        trader = str(rng.choice(names, p=weights))
        if trader not in funded:
            chain.faucet(ins.wallet_of(trader).address, Decimal(20_000))
            funded.add(trader)
        symbol = str(rng.choice(symbols, p=sym_w))
        try:
            spot = risk.spot(symbol)
        except BTIError:
            report.refused += 1
            continue
        lev = int(rng.choice([2, 3, 5, 10, 10, 20, 20, 25, 50, 75], p=None))
        margin = float(np.exp(rng.normal(np.log(300), 0.8)))
        qty = Decimal(f"{margin * lev / spot:.6f}")
        entry = Decimal(f"{spot:.6f}")
        cross = rng.random() < 0.15
        order = Order(
            symbol,
            Side.LONG if rng.random() < 0.6 else Side.SHORT,
            qty,
            entry,
            Decimal(lev),
            margin_mode=MarginMode.CROSS if cross else MarginMode.ISOLATED,
            order_type=OrderType.LIMIT if rng.random() < 0.25 else OrderType.MARKET,
            wallet_balance=(qty * entry / Decimal(lev) * Decimal("1.5")) if cross else None,
        )
        hours = int(rng.choice([6, 24, 24, 48, 72, 72, 168, 336]))
        coverage = Decimal(f"{min(margin, 2_000):.2f}")
        try:
            q = ins.quote(
                user_id=trader, order=order, cover=Cover(coverage=coverage, duration_hours=hours)
            )
            if not q.insurable:
                report.refused += 1
                for c in q.failed:
                    report.reasons[c.name] = report.reasons.get(c.name, 0) + 1
                continue
            ins.buy(user_id=trader, quote_id=q.record.id)
            report.bought += 1
        except BTIError as exc:
            report.refused += 1
            key = type(exc).__name__
            report.reasons[key] = report.reasons.get(key, 0) + 1
    report.traders = len(funded)
    # back to the present: the worker's round, once, as it would run on catching up
    now = datetime.now().astimezone()
    clock_at[0] = now
    _set_chain_time(services, now)
    if progress is not None:
        progress(len(times), len(times), "claims")
    claims = services.claims
    run = claims.run()
    report.claims = len(run.opened)
    report.expired += services.insurance.expire_due()
    ensure_demo_users(services.db)
    uw = get_user(services.db, UNDERWRITER)
    if uw is not None:
        queue = claims.queue(states=["referred"])
        for k, cid in enumerate(queue["claim"].tolist() if len(queue) else []):
            deny = k % 4 == 3
            claims.decide(
                int(cid),
                uw,
                "deny" if deny else "approve",
                "demo: the exchange record does not match the order"
                if deny
                else "demo: the mark price evidence confirms the liquidation",
            )
            report.decided_by_underwriter += 1
    with session_scope(services.db) as s:
        report.paid = int(
            s.exec(
                select(func.count())
                .select_from(Policy)
                .where(Policy.status == PolicyStatus.PAID.value)
            ).one()
        )
    _write_marker(services, "complete", report)
    return report
