"""The insured book as one frame, the filters every Risk Queries view obeys, and the views.

`load_book` reads every policy with its claim (one query, never a write) and adds what the
filters need that is not stored: the leverage and duration buckets, and the market's trend and
volatility regime at purchase, read from the warehouse's hourly mark prices *before* the
purchase hour (a bar counts once it has closed).

- **Trend** at purchase: the slope of the 24-hour simple moving average over the previous day,
  ``SMA24(t) / SMA24(t − 24 h) − 1``: *up* above +1 %, *down* below −1 %, else *sideways*.
- **Volatility regime**: the 24-hour realised volatility (standard deviation of hourly log
  returns) against its own median over the previous 90 days: *low* under 0.8×, *high* over
  1.25×, else *normal*.

Every view is a pure function of the filtered frame (plus the current mark price and the
pool's reserves where it needs them), so the page, the CSV, the PDF and the text report, which
all call the same functions on the same filter, give the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Float, String, case, cast, func, select, type_coerce
from sqlalchemy.engine import Engine
from sqlmodel import col

from bti_core.db.models import Claim, ClaimAudit, Policy, PolicyEvent
from bti_core.db.statuses import OPEN_STATUSES, PolicyStatus
from bti_core.errors import BTIError
from bti_core.market.warehouse import Warehouse
from bti_core.underwriting import LEVERAGE_BUCKETS as LEVERAGE_BUCKETS  # underwriting's bands

DURATION_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("≤1 day", 0.0, 24.0),
    ("1–3 days", 24.0, 72.0),
    ("3–7 days", 72.0, 168.0),
    ("over 7 days", 168.0, float("inf")),
)
RANGES = {"7d": 7, "30d": 30, "90d": 90, "1y": 365, "all": None, "custom": None}
SIDES = ("long", "short")
ORDER_TYPES = ("market", "limit")
MARGIN_MODES = ("isolated", "cross")
TRENDS = ("up", "down", "sideways")
VOL_REGIMES = ("low", "normal", "high")
_S = PolicyStatus
# in the order pages list them
STATUSES = tuple(
    s.value for s in (_S.PENDING, _S.ACTIVE, _S.EXPIRED, _S.CLAIMED, _S.PAID, _S.DECLINED)
)
OPEN = OPEN_STATUSES
TREND_BAND = 0.01
VOL_LOW, VOL_HIGH = 0.8, 1.25
DECISIONS = (
    "auto_approve",
    "auto_deny",
    "underwriter_approve",
    "underwriter_deny",
    "underwriter_adjust",
)
PAID_STATES = ("paid",)

COLUMNS = [
    "policy",
    "trader",
    "symbol",
    "side",
    "order_type",
    "margin_mode",
    "leverage",
    "leverage_bucket",
    "duration_hours",
    "duration_bucket",
    "entry_price",
    "liquidation_price",
    "coverage",
    "payout",
    "premium",
    "probability",
    "expected_loss",
    "risk_index",
    "status",
    "start",
    "end",
    "trend",
    "vol_regime",
    "claim",
    "claim_state",
    "claim_opened",
    "decided",
    "referred",
    "hours_to_decision",
    "amount_paid",
    "realised_loss",
]


def _bucket(values: pd.Series, buckets: tuple[tuple[str, float, float], ...]) -> pd.Series:
    edges = [b[1] for b in buckets] + [buckets[-1][2]]
    labels = [b[0] for b in buckets]
    out = pd.cut(values, bins=edges, labels=labels, right=True, include_lowest=True)
    return out.astype(str)


# ------------------------------------------------------------------ loading


def book_version(db: Engine) -> tuple[Any, ...]:
    """A cheap fingerprint of the book: it changes whenever a policy or claim is written
    (the pages reload the frame only then)."""
    with db.connect() as conn:
        p = conn.execute(
            select(func.count(col(Policy.id)), func.max(Policy.id), func.max(Policy.status))
        ).one()
        c = conn.execute(select(func.count(col(Claim.id)), func.max(Claim.updated_at))).one()
        a = conn.execute(select(func.max(ClaimAudit.id))).one()
        # a status change leaves count and max id alone: the log of policy events does not
        e = conn.execute(select(func.max(PolicyEvent.id))).one()
    return (*p, *c, *a, *e)


def _policy_frame(db: Engine) -> pd.DataFrame:
    pc, cc = Policy.__table__.c, Claim.__table__.c  # type: ignore[attr-defined]

    # money as floats and times as the driver's raw values, converted by pandas a column at a
    # time: the tables' exact types (a Decimal, an aware datetime per cell) cost a second per
    # 100,000 policies, and every view works in floats
    def money(c: Any, name: str | None = None) -> Any:
        return cast(c, Float).label(name or c.name)

    def when(c: Any, name: str) -> Any:
        return type_coerce(c, String).label(name)

    stmt = (
        select(
            pc.id.label("policy"),
            pc.user_id.label("trader"),
            pc.symbol,
            pc.side,
            pc.order_type,
            pc.margin_mode,
            money(pc.leverage),
            money(pc.entry_price),
            money(pc.liquidation_price),
            money(pc.coverage),
            money(pc.payout),
            money(pc.premium),
            pc.probability,
            pc.risk_index,
            pc.status,
            when(pc.start_at, "start"),
            when(pc.end_at, "end"),
            cc.id.label("claim"),
            cc.state.label("claim_state"),
            when(cc.opened_at, "claim_opened"),
            money(cc.amount_approved),
        )
        .select_from(Policy.__table__.outerjoin(Claim.__table__, cc.policy_id == pc.id))  # type: ignore[attr-defined]
        .order_by(pc.id)
    )
    ac = ClaimAudit.__table__.c  # type: ignore[attr-defined]
    # the first final decision (the rules' or an underwriter's), and whether it was referred
    decided = type_coerce(case((ac.event.in_(DECISIONS), ac.at), else_=None), String)
    referred = case((ac.event == "refer", 1), else_=0)
    decisions = select(
        ac.claim_id.label("claim"),
        func.min(decided).label("decided"),
        func.max(referred).label("referred"),
    ).group_by(ac.claim_id)
    with db.connect() as conn:
        rows = conn.execute(stmt).all()
        dec = conn.execute(decisions).all()
    frame = pd.DataFrame(rows, columns=list(stmt.selected_columns.keys()))
    dframe = pd.DataFrame(dec, columns=["claim", "decided", "referred"])
    if frame.empty:
        return frame
    return frame.merge(dframe, on="claim", how="left")


def _utc(s: pd.Series) -> pd.Series:
    """UTC times from the driver's values: SQLite's naive UTC text, PostgreSQL's aware
    datetimes, or times already parsed."""
    given = s.dropna()
    if len(given) and isinstance(given.iloc[0], str):
        return pd.to_datetime(s, utc=True, format="ISO8601")
    return pd.to_datetime(s, utc=True)


def market_regimes(warehouse: Warehouse, symbol: str) -> pd.DataFrame:
    """Per hourly mark bar of ``symbol``: its close time, the trend and the volatility regime
    known at that time (module docstring), for `load_book`'s as-of join."""
    from bti_core.market.schema import Kind

    try:
        bars = warehouse.bars(symbol, "1h", kind=Kind.MARK)
    except (BTIError, FileNotFoundError, ValueError):
        try:
            bars = warehouse.bars(symbol, "1h", kind=Kind.OHLCV)
        except (BTIError, FileNotFoundError, ValueError):
            return pd.DataFrame(columns=["known_at", "trend", "vol_regime"])
    if bars.empty:
        return pd.DataFrame(columns=["known_at", "trend", "vol_regime"])
    close = bars["close"].astype(float).to_numpy()
    sma = pd.Series(close).rolling(24).mean()
    slope = sma / sma.shift(24) - 1.0
    trend = np.where(slope > TREND_BAND, "up", np.where(slope < -TREND_BAND, "down", "sideways"))
    trend = np.where(slope.isna(), "sideways", trend)
    r = pd.Series(np.log(close)).diff()
    rv = r.rolling(24).std()
    med = rv.rolling(24 * 90, min_periods=24 * 7).median().shift(1)
    ratio = rv / med
    regime = np.where(ratio < VOL_LOW, "low", np.where(ratio > VOL_HIGH, "high", "normal"))
    regime = np.where(ratio.isna(), "normal", regime)
    known = _utc(bars["ts"]) + pd.Timedelta(hours=1)  # a bar is known once it has closed
    return pd.DataFrame(
        {"known_at": known.to_numpy(), "trend": trend, "vol_regime": regime}
    ).sort_values("known_at")


def load_book(db: Engine, warehouse: Warehouse | None = None) -> pd.DataFrame:
    """Every policy with its claim, buckets and market state at purchase (`COLUMNS`)."""
    raw = _policy_frame(db)
    if raw.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    f = raw
    for c in ("leverage", "entry_price", "liquidation_price", "coverage", "payout", "premium"):
        f[c] = f[c].astype(float)
    f["amount_approved"] = pd.to_numeric(f["amount_approved"], errors="coerce")
    for c in ("start", "end", "claim_opened", "decided"):
        f[c] = _utc(f[c])
    f["duration_hours"] = (f["end"] - f["start"]).dt.total_seconds() / 3600.0
    f["leverage_bucket"] = _bucket(f["leverage"], LEVERAGE_BUCKETS)
    f["duration_bucket"] = _bucket(f["duration_hours"], DURATION_BUCKETS)
    f["expected_loss"] = f["probability"] * f["payout"]
    f["referred"] = pd.to_numeric(f["referred"], errors="coerce").fillna(0).astype(bool)
    f["hours_to_decision"] = (f["decided"] - f["claim_opened"]).dt.total_seconds() / 3600.0
    paid = f["claim_state"].isin(PAID_STATES)
    f["amount_paid"] = np.where(paid, f["amount_approved"].fillna(0.0), 0.0)
    f["realised_loss"] = f["amount_paid"]
    f["claim"] = f["claim"].astype("Int64")
    f["trend"] = "sideways"
    f["vol_regime"] = "normal"
    if warehouse is not None:
        for symbol, idx in f.groupby("symbol").groups.items():
            reg = market_regimes(warehouse, str(symbol))
            if reg.empty:
                continue
            part = f.loc[idx, ["start"]].reset_index().sort_values("start")
            joined = pd.merge_asof(
                part, reg, left_on="start", right_on="known_at", direction="backward"
            ).set_index("index")
            f.loc[joined.index, "trend"] = joined["trend"].fillna("sideways")
            f.loc[joined.index, "vol_regime"] = joined["vol_regime"].fillna("normal")
    out = f[COLUMNS].reset_index(drop=True)
    # few distinct values each: categories make every filter and group-by several times faster
    for c in CATEGORIES:
        out[c] = out[c].astype("category")
    return out


CATEGORIES = (
    "trader",
    "symbol",
    "side",
    "order_type",
    "margin_mode",
    "leverage_bucket",
    "duration_bucket",
    "status",
    "trend",
    "vol_regime",
    "claim_state",
)


# ------------------------------------------------------------------ filters


# ------------------------------------------------------------------ views
