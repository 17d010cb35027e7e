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

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sqlalchemy import Float, String, case, cast, func, select, type_coerce
from sqlalchemy.engine import Engine
from sqlmodel import col

from bti_core.db.models import Claim, ClaimAudit, Policy, PolicyEvent
from bti_core.errors import BTIError
from bti_core.market.warehouse import Warehouse
from bti_core.timeutil import to_utc

# label, lower bound (exclusive, except the first), upper bound (inclusive)
LEVERAGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("≤5×", 0.0, 5.0),
    ("5–10×", 5.0, 10.0),
    ("10–20×", 10.0, 20.0),
    ("20–50×", 20.0, 50.0),
    ("50×+", 50.0, float("inf")),
)
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
STATUSES = ("pending", "active", "expired", "claimed", "paid", "declined")
OPEN = ("pending", "active")
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


class FilterError(BTIError, ValueError):
    """A filter value that is not allowed (the message lists what is)."""


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


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(dict.fromkeys(v.strip() for v in str(value).split(",") if v.strip()))


# the dates a filter may name: the page's date pickers offer the same span (a far date in a link
# used to crash the page's date input)
EARLIEST = pd.Timestamp("2010-01-01", tz="UTC")
LATEST = pd.Timestamp("2099-12-31", tz="UTC")


def _choose(name: str, value: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = _split(value)
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise FilterError(
            f"{name}: {', '.join(repr(b) for b in bad)} is not allowed; "
            f"choose from {', '.join(allowed)}"
        )
    return chosen


def _time(name: str, value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        t = None
    if t is None or pd.isna(t):
        raise FilterError(f"{name}: {value!r} is not a date; write it as 2024-06-30")
    t = to_utc(t)
    if not EARLIEST <= t <= LATEST:
        raise FilterError(
            f"{name}: {t:%Y-%m-%d} is outside the dates a book can hold "
            f"({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})"
        )
    return t


# each choice of a filter: its field, the book's column it filters, and its name in words
CHOICES: dict[str, tuple[str, str]] = {
    "symbols": ("symbol", "symbol"),
    "sides": ("side", "side"),
    "order_types": ("order_type", "order type"),
    "margin_modes": ("margin_mode", "margin"),
    "leverage": ("leverage_bucket", "leverage"),
    "duration": ("duration_bucket", "duration"),
    "trends": ("trend", "trend at purchase"),
    "vol_regimes": ("vol_regime", "volatility at purchase"),
    "statuses": ("status", "status"),
    "traders": ("trader", "trader"),
}


@dataclass(frozen=True)
class BookFilter:
    """What a Risk Queries view shows; an empty choice means all. Kept in the page's URL
    (`to_params` / `from_params`), so a link reproduces the view."""

    range: str = "all"
    start: pd.Timestamp | None = None  # custom range, purchase time (UTC), inclusive
    end: pd.Timestamp | None = None  # custom range: up to the end of this day
    symbols: tuple[str, ...] = ()
    sides: tuple[str, ...] = ()
    order_types: tuple[str, ...] = ()
    margin_modes: tuple[str, ...] = ()
    leverage: tuple[str, ...] = ()
    duration: tuple[str, ...] = ()
    trends: tuple[str, ...] = ()
    vol_regimes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    traders: tuple[str, ...] = ()
    # URL key of each field
    PARAMS: ClassVar[dict[str, str]] = {
        "range": "range",
        "start": "from",
        "end": "to",
        "symbols": "symbol",
        "sides": "side",
        "order_types": "type",
        "margin_modes": "margin",
        "leverage": "lev",
        "duration": "dur",
        "trends": "trend",
        "vol_regimes": "vol",
        "statuses": "status",
        "traders": "trader",
    }

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> BookFilter:
        """Parse a URL's query parameters; any value that is not allowed raises `FilterError`
        naming the parameter and what it allows. Unknown parameters are ignored (other
        pages' keys share the URL)."""
        get = params.get
        rng = get("range") or "all"
        if rng not in RANGES:
            raise FilterError(f"range: {rng!r} is not allowed; choose from {', '.join(RANGES)}")
        start, end = _time("from", get("from")), _time("to", get("to"))
        if start is not None and end is not None and start > end:
            raise FilterError(f"from ({start:%Y-%m-%d}) is after to ({end:%Y-%m-%d})")
        symbols = tuple(s.upper() for s in _split(get("symbol")))
        for s in symbols:
            if not s.replace("-", "").replace("_", "").isalnum() or len(s) > 40:
                raise FilterError(f"symbol: {s!r} is not a symbol such as BTCUSDT")
        traders = _split(get("trader"))
        for t in traders:
            if len(t) > 80:
                raise FilterError(f"trader: a username has at most 80 characters; got {len(t)}")
        return cls(
            range=rng,
            start=start,
            end=end,
            symbols=symbols,
            sides=_choose("side", get("side"), SIDES),
            order_types=_choose("type", get("type"), ORDER_TYPES),
            margin_modes=_choose("margin", get("margin"), MARGIN_MODES),
            leverage=_choose("lev", get("lev"), tuple(b[0] for b in LEVERAGE_BUCKETS)),
            duration=_choose("dur", get("dur"), tuple(b[0] for b in DURATION_BUCKETS)),
            trends=_choose("trend", get("trend"), TRENDS),
            vol_regimes=_choose("vol", get("vol"), VOL_REGIMES),
            statuses=_choose("status", get("status"), STATUSES),
            traders=traders,
        )

    def to_params(self) -> dict[str, str]:
        """The URL's query parameters for this filter (defaults left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            key = self.PARAMS[f.name]
            if f.name == "range":
                if v != "all":
                    out[key] = v
            elif isinstance(v, tuple):
                if v:
                    out[key] = ",".join(v)
            elif v is not None:
                out[key] = f"{v:%Y-%m-%d}"
        return out

    def for_user(self, username: str, underwriter: bool) -> BookFilter:
        """An underwriter sees the whole book (or the traders they chose); a trader only their
        own, whatever the URL says."""
        return self if underwriter else replace(self, traders=(username,))

    def window(self, now: pd.Timestamp) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The purchase-time window ``[lo, hi)`` this filter's range stands for."""
        days = RANGES[self.range]
        if self.range == "custom":
            hi = None if self.end is None else self.end.normalize() + pd.Timedelta(days=1)
            return self.start, hi
        if days is None:
            return None, None
        return now - pd.Timedelta(days=days), None

    def apply(self, book: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
        """The rows of ``book`` this filter keeps."""
        if book.empty:
            return book
        keep = np.ones(len(book), dtype=bool)
        lo, hi = self.window(now)
        if lo is not None:
            keep &= (book["start"] >= lo).to_numpy()
        if hi is not None:
            keep &= (book["start"] < hi).to_numpy()
        for name, (column, _label) in CHOICES.items():
            chosen = getattr(self, name)
            if chosen:
                keep &= book[column].isin(chosen).to_numpy()
        return book[keep]

    def describe(self) -> str:
        """The filter in words, for the report's first line."""
        parts = []
        if self.range == "custom":
            a = "the start" if self.start is None else f"{self.start:%Y-%m-%d}"
            b = "now" if self.end is None else f"{self.end:%Y-%m-%d}"
            parts.append(f"bought from {a} to {b}")
        elif self.range != "all":
            parts.append(
                f"bought in the last {self.range.replace('d', ' days').replace('1y', 'year')}"
            )
        for name, (_column, label) in CHOICES.items():
            chosen = getattr(self, name)
            if chosen:
                parts.append(f"{label} {' or '.join(chosen)}")
        return "; ".join(parts) if parts else "the whole book"


# ------------------------------------------------------------------ views


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
    return book["status"] != "declined"


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
