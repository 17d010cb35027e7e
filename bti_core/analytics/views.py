"""The Risk Queries views: each a pure function of the filtered book (plus the current mark price
and the pool's reserves where it needs them), so the page, the CSV, the PDF and the text report
give the same numbers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bti_core.analytics.book import DURATION_BUCKETS, LEVERAGE_BUCKETS, OPEN
from bti_core.db.statuses import PolicyStatus


@dataclass(frozen=True)
class Totals:
    policies: int
    open_policies: int
    open_cover: float  # payout of open policies: what the pool would pay if all were hit
    premiums: float  # premiums collected (declined purchases collected none)
    expected_loss: float  # Σ probability × payout over the policies that were sold
    open_expected_loss: float
    realised_loss: float  # claims paid
    loss_ratio: float | None  # realised / premiums
    claims: int
    traders: int


def _sold(book: pd.DataFrame) -> pd.Series:
    return book["status"] != PolicyStatus.DECLINED.value


def totals(book: pd.DataFrame) -> Totals:
    if book.empty:
        return Totals(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, None, 0, 0)
    sold = _sold(book)
    open_ = book["status"].isin(OPEN)
    prem = float(book.loc[sold, "premium"].sum())
    real = float(book["realised_loss"].sum())
    return Totals(
        policies=len(book),
        open_policies=int(open_.sum()),
        open_cover=float(book.loc[open_, "payout"].sum()),
        premiums=prem,
        expected_loss=float(book.loc[sold, "expected_loss"].sum()),
        open_expected_loss=float(book.loc[open_, "expected_loss"].sum()),
        realised_loss=real,
        loss_ratio=real / prem if prem > 0 else None,
        claims=int(book["claim"].notna().sum()),
        traders=int(book["trader"].nunique()),
    )


def exposure(book: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of ``by`` (symbol, side, leverage_bucket, …): policies, open cover, premiums,
    expected and realised loss, and the loss ratio; largest open cover first."""
    cols = ["policies", "open_cover", "premiums", "expected_loss", "realised_loss", "loss_ratio"]
    if book.empty:
        return pd.DataFrame(columns=[by, *cols])
    sold = _sold(book)
    open_ = book["status"].isin(OPEN)
    g = pd.DataFrame(
        {
            by: book[by],
            "policies": 1,
            "open_cover": np.where(open_, book["payout"], 0.0),
            "premiums": np.where(sold, book["premium"], 0.0),
            "expected_loss": np.where(sold, book["expected_loss"], 0.0),
            "realised_loss": book["realised_loss"],
        }
    ).groupby(by, sort=False, observed=True)
    out = g.sum().reset_index()
    out["loss_ratio"] = np.where(
        out["premiums"] > 0,
        out["realised_loss"] / out["premiums"].where(out["premiums"] > 0),
        np.nan,
    )
    order = {
        "leverage_bucket": [b[0] for b in LEVERAGE_BUCKETS],
        "duration_bucket": [b[0] for b in DURATION_BUCKETS],
    }.get(by)
    if order is not None:
        out["_o"] = out[by].map({v: i for i, v in enumerate(order)})
        return out.sort_values("_o").drop(columns="_o").reset_index(drop=True)
    return out.sort_values(["open_cover", "premiums"], ascending=False).reset_index(drop=True)


def risk_index_distribution(book: pd.DataFrame, width: int = 10) -> pd.DataFrame:
    """Policies and payout per risk-index band of ``width`` points (0–100)."""
    edges = np.arange(0, 100 + width, width)
    labels = [f"{a}–{b}" for a, b in itertools.pairwise(edges)]
    if book.empty:
        return pd.DataFrame({"band": labels, "policies": 0, "payout": 0.0})
    idx = np.clip(np.floor(book["risk_index"].to_numpy() / width).astype(int), 0, len(labels) - 1)
    n = np.bincount(idx, minlength=len(labels))
    pay = np.bincount(idx, weights=book["payout"].to_numpy(), minlength=len(labels))
    return pd.DataFrame({"band": labels, "policies": n, "payout": pay})


def loss_ratio_over_time(book: pd.DataFrame, freq: str = "MS") -> pd.DataFrame:
    """Per purchase period (a month by default): premiums, claims paid on the policies bought
    then, the period's loss ratio and the cumulative one."""
    cols = ["period", "premiums", "realised_loss", "loss_ratio", "cumulative_loss_ratio"]
    sold = book[_sold(book)] if not book.empty else book
    if sold.empty:
        return pd.DataFrame(columns=cols)
    unit = {"MS": "M", "W": "W", "D": "D"}.get(freq)
    if unit is None:
        raise ValueError(f"freq must be MS, W or D; got {freq!r}")
    # numpy's month (or week, day) of each purchase: a cast, not a Period per row
    period = (
        sold["start"]
        .dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .to_numpy()
        .astype(f"datetime64[{unit}]")
    )
    g = (
        pd.DataFrame(
            {
                "period": period.astype("datetime64[ns]"),
                "premiums": sold["premium"].to_numpy(),
                "realised_loss": sold["realised_loss"].to_numpy(),
            }
        )
        .groupby("period")
        .sum()
        .reset_index()
    )
    g["loss_ratio"] = g["realised_loss"] / g["premiums"].where(g["premiums"] > 0)
    g["cumulative_loss_ratio"] = g["realised_loss"].cumsum() / g["premiums"].cumsum().where(
        g["premiums"].cumsum() > 0
    )
    return g[cols]


def liquidation_map(
    book: pd.DataFrame, symbol: str, mark: float, *, span: float = 0.5, levels: int = 121
) -> pd.DataFrame:
    """At each price level from ``mark·(1 − span)`` to ``mark·(1 + span)``: the payout that
    would be claimed if the mark price went there — longs whose liquidation price is at or above
    a level below the mark, shorts whose liquidation price is at or below a level above it —
    over the open policies on ``symbol``. Columns: price, move (from the mark), long, short,
    claimed (the side the move hits), policies (how many)."""
    prices = mark * np.linspace(1 - span, 1 + span, levels)
    o = book[(book["symbol"] == symbol) & book["status"].isin(OPEN)]
    long_ = o[o["side"] == "long"]
    short = o[o["side"] == "short"]
    # longs: claimed at level x if LP ≥ x (x below the mark); cumulative from the top down
    llp = np.sort(long_["liquidation_price"].to_numpy())
    lpay = long_["payout"].to_numpy()[np.argsort(long_["liquidation_price"].to_numpy())]
    lcum = np.concatenate([[0.0], np.cumsum(lpay[::-1])])[::-1]  # lcum[i] = Σ pay[i:]
    li = np.searchsorted(llp, prices, side="left")
    long_claim = np.where(prices <= mark, lcum[li], 0.0)
    long_n = np.where(prices <= mark, len(llp) - li, 0)
    slp_order = np.argsort(short["liquidation_price"].to_numpy())
    slp = short["liquidation_price"].to_numpy()[slp_order]
    spay = short["payout"].to_numpy()[slp_order]
    scum = np.concatenate([[0.0], np.cumsum(spay)])  # scum[i] = Σ pay[:i]
    si = np.searchsorted(slp, prices, side="right")
    short_claim = np.where(prices >= mark, scum[si], 0.0)
    short_n = np.where(prices >= mark, si, 0)
    return pd.DataFrame(
        {
            "price": prices,
            "move": prices / mark - 1.0,
            "long": long_claim,
            "short": short_claim,
            "claimed": long_claim + short_claim,
            "policies": long_n + short_n,
        }
    )


@dataclass(frozen=True)
class StressResult:
    symbol: str
    move: float
    hours: int
    price: float
    claims: int
    payout: float
    reserves_before: float | None
    reserves_after: float | None
    locked_after: float | None
    free_after: float | None
    traders: int

    @property
    def covered(self) -> bool | None:
        """Whether the pool's reserves pay every claim (None: reserves unknown)."""
        return None if self.reserves_after is None else self.reserves_after >= 0


def stress(
    book: pd.DataFrame,
    symbol: str,
    move: float,
    mark: float,
    *,
    hours: int = 24,
    now: pd.Timestamp | None = None,
    reserves: float | None = None,
    locked: float | None = None,
) -> StressResult:
    """The claims if ``symbol``'s mark price moved by ``move`` (−0.2 = −20 %) within ``hours``:
    every open policy on the side the move hits, whose liquidation price the move reaches,
    and whose window is open at ``now`` (a policy ending sooner is hit if the move comes first:
    counted, the cautious reading). Paying a claim takes its payout from the pool's reserves and
    releases the same cover (coverage on-chain is the payout), so free reserves are unchanged
    and what falls is the reserves and the locked cover."""
    price = mark * (1 + move)
    o = book[(book["symbol"] == symbol) & book["status"].isin(OPEN)]
    if now is not None:
        o = o[o["end"] > now]
    if move < 0:
        hit = o[(o["side"] == "long") & (o["liquidation_price"] >= price)]
    elif move > 0:
        hit = o[(o["side"] == "short") & (o["liquidation_price"] <= price)]
    else:
        hit = o.iloc[0:0]
    pay = float(hit["payout"].sum())
    r_after = None if reserves is None else reserves - pay
    l_after = None if locked is None else locked - pay
    free = None if r_after is None or l_after is None else r_after - l_after
    return StressResult(
        symbol=symbol,
        move=move,
        hours=hours,
        price=price,
        claims=len(hit),
        payout=pay,
        reserves_before=reserves,
        reserves_after=r_after,
        locked_after=l_after,
        free_after=free,
        traders=int(hit["trader"].nunique()),
    )


@dataclass(frozen=True)
class ClaimsSummary:
    by_state: pd.DataFrame  # state, claims, claimed (payout terms), paid
    automatic: int  # decided by the rules
    referred: int  # sent to an underwriter
    undecided: int
    median_hours_to_decision: float | None
    p90_hours_to_decision: float | None
    paid: float
    premiums: float


def claims_summary(book: pd.DataFrame) -> ClaimsSummary:
    c = book[book["claim"].notna()] if not book.empty else book
    prem = float(book.loc[_sold(book), "premium"].sum()) if not book.empty else 0.0
    if c.empty:
        empty = pd.DataFrame(columns=["state", "claims", "claimed", "paid"])
        return ClaimsSummary(empty, 0, 0, 0, None, None, 0.0, prem)
    by = (
        pd.DataFrame(
            {
                "state": c["claim_state"],
                "claims": 1,
                "claimed": c["payout"],
                "paid": c["amount_paid"],
            }
        )
        .groupby("state", observed=True)
        .sum()
        .reset_index()
        .sort_values("claims", ascending=False)
        .reset_index(drop=True)
    )
    decided = c["decided"].notna()
    h = c.loc[decided, "hours_to_decision"]
    return ClaimsSummary(
        by_state=by,
        automatic=int((decided & ~c["referred"]).sum()),
        referred=int(c["referred"].sum()),
        undecided=int((~decided).sum()),
        median_hours_to_decision=float(h.median()) if len(h) else None,
        p90_hours_to_decision=float(h.quantile(0.9)) if len(h) else None,
        paid=float(c["amount_paid"].sum()),
        premiums=prem,
    )


def riskiest_cells(book: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The side × leverage × duration cells of the open book with the largest expected loss."""
    o = book[book["status"].isin(OPEN)] if not book.empty else book
    cols = ["side", "leverage_bucket", "duration_bucket", "policies", "payout", "expected_loss"]
    if o.empty:
        return pd.DataFrame(columns=cols)
    g = (
        o.assign(policies=1)
        .groupby(["side", "leverage_bucket", "duration_bucket"], observed=True)[
            ["policies", "payout", "expected_loss"]
        ]
        .sum()
        .reset_index()
    )
    return g.sort_values("expected_loss", ascending=False).head(n).reset_index(drop=True)[cols]


@dataclass(frozen=True)
class BookViews:
    """Every view of one selection, computed once per filter change (the page, the report and
    the benchmark all take them from here)."""

    totals: Totals
    by_symbol: pd.DataFrame
    by_side: pd.DataFrame
    by_leverage: pd.DataFrame
    risk_index: pd.DataFrame
    loss_ratio: pd.DataFrame
    claims: ClaimsSummary
    riskiest: pd.DataFrame


def book_views(sel: pd.DataFrame) -> BookViews:
    return BookViews(
        totals=totals(sel),
        by_symbol=exposure(sel, "symbol"),
        by_side=exposure(sel, "side"),
        by_leverage=exposure(sel, "leverage_bucket"),
        risk_index=risk_index_distribution(sel),
        loss_ratio=loss_ratio_over_time(sel),
        claims=claims_summary(sel),
        riskiest=riskiest_cells(sel),
    )
