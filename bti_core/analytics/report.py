"""The Risk Queries report: the selection in plain sentences, and the same numbers as CSV,
HTML and PDF. Every format is built from one `Report`, computed once from the filtered book,
so the page, the text and the files cannot disagree."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bti_core.analytics.book import COLUMNS
from bti_core.analytics.filters import BookFilter
from bti_core.analytics.views import BookViews, ClaimsSummary, Totals, book_views

# the book's columns a person reads (buckets and claim bookkeeping left out)
EXPORT_COLUMNS = [
    c
    for c in COLUMNS
    if c
    not in (
        "leverage_bucket",
        "duration_bucket",
        "entry_price",
        "claim",
        "claim_opened",
        "decided",
        "referred",
        "hours_to_decision",
        "realised_loss",
    )
]


def _bti(x: object) -> str:
    return f"{float(x):,.2f} BTI"  # type: ignore[arg-type]


def _pct(x: float | None) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.1%}"


@dataclass(frozen=True)
class Report:
    title: str
    described: str  # the filter in words
    generated: pd.Timestamp
    totals: Totals
    by_symbol: pd.DataFrame
    by_side: pd.DataFrame
    by_leverage: pd.DataFrame
    riskiest: pd.DataFrame
    claims: ClaimsSummary
    selection: pd.DataFrame = field(repr=False)  # the filtered book
    forecast_note: str = ""

    @property
    def rows(self) -> pd.DataFrame:
        """The filtered policies, `EXPORT_COLUMNS` (built when a file is asked for)."""
        if self.selection.empty:
            return pd.DataFrame(columns=EXPORT_COLUMNS)
        return self.selection[EXPORT_COLUMNS].reset_index(drop=True)

    def sentences(self) -> list[str]:
        """The summary in plain sentences (the text report, the PDF's first section)."""
        t = self.totals
        if t.policies == 0:
            return [f"No policies match ({self.described})."]
        out = [
            f"Selection: {self.described}.",
            f"{t.policies:,} polic{'y' if t.policies == 1 else 'ies'} from {t.traders:,} "
            f"trader{'s' if t.traders != 1 else ''}; "
            f"{t.open_policies:,} open with {_bti(t.open_cover)} of cover.",
            f"Premiums collected {_bti(t.premiums)}; expected loss (probability × payout) "
            f"{_bti(t.expected_loss)}, of which {_bti(t.open_expected_loss)} on open policies; "
            f"realised loss (claims paid) {_bti(t.realised_loss)}, a loss ratio of "
            f"{_pct(t.loss_ratio)}.",
        ]
        top = self.by_symbol[self.by_symbol["open_cover"] > 0].head(3)
        if len(top):
            parts = [f"{r.symbol} {_bti(r.open_cover)}" for r in top.itertuples()]
            out.append("Largest open exposures: " + ", ".join(parts) + ".")
        if len(self.riskiest):
            parts = [
                f"{r.side} {r.leverage_bucket} for {r.duration_bucket} "
                f"({r.policies} polic{'y' if r.policies == 1 else 'ies'}, "
                f"expected loss {_bti(r.expected_loss)})"
                for r in self.riskiest.itertuples()
            ]
            out.append("Riskiest open cells: " + "; ".join(parts) + ".")
        c = self.claims
        n_claims = int(c.by_state["claims"].sum()) if len(c.by_state) else 0
        if n_claims:
            med = c.median_hours_to_decision
            out.append(
                f"{n_claims:,} claims: {c.automatic:,} decided automatically, {c.referred:,} "
                f"referred to an underwriter, {c.undecided:,} undecided; median time to a "
                f"decision {'–' if med is None else f'{med:.1f} h'}; paid {_bti(c.paid)}."
            )
        else:
            out.append("No claims.")
        if self.forecast_note:
            out.append(self.forecast_note)
        return out

    def text(self) -> str:
        return (
            "\n".join(
                [
                    self.title,
                    f"Generated {self.generated:%Y-%m-%d %H:%M} UTC",
                    "",
                    *self.sentences(),
                ]
            )
            + "\n"
        )

    def csv(self) -> bytes:
        return self.rows.to_csv(index=False).encode()

    def html(self) -> str:
        def table(df: pd.DataFrame) -> str:
            shown = df.assign(
                **{c: [cell_text(c, v) for v in df[c]] for c in df.columns if c.endswith("ratio")}
            )
            return shown.to_html(
                index=False, float_format=lambda v: f"{v:,.2f}", na_rep="–", border=0
            )

        paras = "".join(f"<p>{html.escape(s)}</p>" for s in self.sentences())
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}"
            "th{border-bottom:1px solid #999}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>"
            f"<p><small>Generated {self.generated:%Y-%m-%d %H:%M} UTC</small></p>{paras}"
            f"<h2>By symbol</h2>{table(self.by_symbol)}"
            f"<h2>By side</h2>{table(self.by_side)}"
            f"<h2>By leverage</h2>{table(self.by_leverage)}"
            f"<h2>Claims by state</h2>{table(self.claims.by_state)}"
            f"<h2>Policies ({len(self.rows):,})</h2>{table(self.rows.head(1000))}"
            "</body></html>"
        )

    def pdf(self) -> bytes:
        """A PDF with the sentences, a bar chart of open cover by symbol and by leverage
        (drawn with fpdf2's own shapes: no browser needed) and the tables."""
        from fpdf import FPDF

        pdf = FPDF(orientation="P", unit="mm", format="A4")
        pdf.set_auto_page_break(auto=True, margin=15)
        pdf.add_page()
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(0, 10, pdf_safe(self.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 9)
        pdf.cell(
            0, 6, f"Generated {self.generated:%Y-%m-%d %H:%M} UTC", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_font("helvetica", "", 10)
        for s in self.sentences():
            pdf.multi_cell(0, 5, pdf_safe(s), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        for title, df, key in (
            ("Open cover by symbol (BTI)", self.by_symbol, "symbol"),
            ("Open cover by leverage (BTI)", self.by_leverage, "leverage_bucket"),
        ):
            _bar_chart(pdf, title, [str(v) for v in df[key]], [float(v) for v in df["open_cover"]])
        for title, df in (
            ("By symbol", self.by_symbol),
            ("By side", self.by_side),
            ("By leverage", self.by_leverage),
            ("Claims by state", self.claims.by_state),
        ):
            _table(pdf, title, df)
        out = pdf.output()
        return bytes(out)


def cell_text(column: str, v: object) -> str:
    """A table cell as the report prints it: a ratio as a percentage (0.35 → 35.0 %), other
    numbers with two decimals and separators, "–" for none."""
    if isinstance(v, float | int) and not isinstance(v, bool):
        if pd.isna(v):
            return "–"
        return (
            f"{v:.1%}"
            if column.endswith("ratio")
            else f"{v:,.2f}"
            if isinstance(v, float)
            else f"{v:,}"
        )
    return "–" if v is None else str(v)


def pdf_safe(s: str) -> str:
    """fpdf2's core fonts are Latin-1: spell out what they cannot draw."""
    for a, b in (("×", "x"), ("–", "-"), ("−", "-"), ("≤", "<="), ("·", "*"), ("’", "'")):
        s = s.replace(a, b)
    return s.encode("latin-1", "replace").decode("latin-1")


def _bar_chart(pdf: object, title: str, labels: list[str], values: list[float]) -> None:
    from fpdf import FPDF

    assert isinstance(pdf, FPDF)
    pdf.ln(2)
    pdf.set_font("helvetica", "B", 11)
    pdf.cell(0, 7, pdf_safe(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 8)
    top = max(values, default=0.0)
    width = 120.0
    for label, v in zip(labels, values, strict=True):
        y = pdf.get_y()
        pdf.cell(30, 5, pdf_safe(label))
        pdf.set_fill_color(31, 119, 180)
        w = width * v / top if top > 0 else 0.0
        if w > 0:
            pdf.rect(pdf.l_margin + 30, y + 1, w, 3.5, style="F")
        pdf.set_xy(pdf.l_margin + 32 + width, y)
        pdf.cell(30, 5, f"{v:,.2f}", new_x="LMARGIN", new_y="NEXT")


def _table(pdf: object, title: str, df: pd.DataFrame) -> None:
    from fpdf import FPDF

    assert isinstance(pdf, FPDF)
    pdf.ln(3)
    pdf.set_font("helvetica", "B", 11)
    pdf.cell(0, 7, pdf_safe(title), new_x="LMARGIN", new_y="NEXT")
    if df.empty:
        pdf.set_font("helvetica", "", 9)
        pdf.cell(0, 5, "none", new_x="LMARGIN", new_y="NEXT")
        return
    from fpdf.fonts import FontFace

    pdf.set_font("helvetica", "", 8)
    cols = list(df.columns)
    w = (pdf.w - pdf.l_margin - pdf.r_margin) / len(cols)
    # headings on a pale fill, cells on none (the bar chart's blue once filled the headings)
    heading = FontFace(emphasis="BOLD", fill_color=(232, 238, 246))
    with pdf.table(
        col_widths=tuple([w] * len(cols)),
        text_align="RIGHT",
        headings_style=heading,
        cell_fill_mode="NONE",
    ) as t:
        head = t.row()
        for c in cols:
            head.cell(pdf_safe(c.replace("_", " ")))
        for rec in df.itertuples(index=False):
            r = t.row()
            for c, v in zip(cols, rec, strict=True):
                r.cell(pdf_safe(cell_text(c, v)))


# the views a report prints (the page draws the others: the risk index and the loss ratio)
_FROM_VIEWS = ("totals", "by_symbol", "by_side", "by_leverage", "riskiest", "claims")


def build_report(
    book: pd.DataFrame,
    flt: BookFilter,
    *,
    title: str = "BTI risk report",
    now: pd.Timestamp | None = None,
    forecast_note: str = "",
    views: BookViews | None = None,
) -> Report:
    """The report of ``book`` (already filtered by ``flt``; ``views``: its `book_views`, when
    the caller has them already)."""
    v = views if views is not None else book_views(book)
    return Report(
        title=title,
        described=flt.describe(),
        generated=now if now is not None else pd.Timestamp.now("UTC"),
        selection=book,
        forecast_note=forecast_note,
        **{name: getattr(v, name) for name in _FROM_VIEWS},
    )


def forecast_note(forecasts_dir: Path, symbols: list[str], horizon: int = 168) -> str:
    """What the cached forecasts say of ``symbols`` over ``horizon`` hours, in one sentence:
    the 80 % band of the mark price and the forecast volatility against today's."""
    from bti_core.risk import forecast_store

    parts = []
    for sym in symbols:
        price = forecast_store.cached(forecasts_dir, sym, "price")
        vol = forecast_store.cached(forecasts_dir, sym, "vol")
        if price is None or horizon not in price.horizons:
            continue
        row = price.frame().set_index("horizon").loc[horizon]
        lo, hi = row["lo80"] / price.last - 1, row["hi80"] / price.last - 1
        text = f"{sym} between {lo:+.1%} and {hi:+.1%} (80 %)"
        if vol is not None and horizon in vol.horizons:
            med = float(vol.frame()["median"].to_numpy()[list(vol.horizons).index(horizon)])
            text += f", volatility {med:.0%} a year against {vol.last:.0%} over the last day"
        parts.append(text.replace("-", "−"))
    if not parts:
        return ""
    return f"The forecasts over the next {horizon // 24} days: " + "; ".join(parts) + "."
