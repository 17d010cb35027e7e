"""Buy Insurance and My Policies under AppTest: quote, explanation, purchase, listing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from bti_core.db.engine import make_engine
from bti_core.db.models import QuoteRecord
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]
PAID = ("Premium (BTI)", "Pays if liquidated (BTI)")


def _page(name: str, user: str = "trader", password: str = "trader-demo") -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120)
    return sign_in(at, user, password)


def test_pages_ask_for_sign_in_and_refuse_a_wrong_password(filled: Path) -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert "Demo accounts" in at.caption[0].value
    assert not at.metric  # nothing of the page before sign-in
    sign_in(at, "trader", "wrong-password")
    assert "Wrong username or password" in at.error[0].value


def test_quote_then_buy_then_listed(filled: Path) -> None:
    at = _page("buy_insurance.py")
    assert "Describe the order" in at.info[0].value
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert {"Liquidation price", "P(liquidation)", "Risk index", "Premium (BTI)"} <= set(labels)
    assert len(at.get("plotly_chart")) == 2  # the factor breakdown and the what-if curve
    factors, curve = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    # the factors' colours have a legend; the what-if gives the premium as a share of the cover
    legend = [t["name"] for t in factors["data"] if t.get("x")]
    assert set(legend) <= {"its weight", "low: under ⅓ of its weight", "middling", "high: over ⅔"}
    assert legend[0] == "its weight" and len(legend) >= 2
    assert factors["layout"].get("showlegend") is not False
    shown = {m.label: float(str(m.value).replace(",", "")) for m in at.metric if m.label in PAID}
    rate = shown["Premium (BTI)"] / shown["Pays if liquidated (BTI)"]
    assert curve["layout"]["annotations"][0]["text"] == f"{rate:.1%} of the cover"
    p_liq = next(m for m in at.metric if m.label == "P(liquidation)")
    assert p_liq.proto.delta.startswith("± ") and p_liq.proto.direction == p_liq.proto.NONE
    # plain words for the trader on why BTI's chance differs from the textbook's; the model's
    # technical line one click away
    said = " ".join(c.value for c in at.caption)
    assert "the textbook figure" in said and "GJR" not in said.split("Model:")[0]
    assert [e.label for e in at.expander] == ["How the probability is computed"]
    model = next(c.value for c in at.expander[0].caption)
    assert model.startswith("Model: GJR-GARCH-t") and "a year" in model and "trend" in model
    assert not at.error
    # an empty wallet: a clear error, nothing bought
    at.button(key="buy_go").click().run()
    assert not at.exception
    assert "holds 0.00 BTI" in at.error[0].value and "faucet" in at.error[0].value
    assert {m.label: m.value for m in at.metric}["BTI balance"] == "0.00"
    at.button(key="faucet").click().run()
    assert {m.label: m.value for m in at.metric}["BTI balance"] == "1,000.00"
    at.button(key="buy_quote").click().run()
    at.button(key="buy_go").click().run()
    assert not at.exception, at.exception
    assert not at.error
    assert "is active until" in at.success[0].value
    assert "/chain_explorer?q=0x" in at.success[0].value  # the premium's transaction
    balance = float(str({m.label: m.value for m in at.metric}["BTI balance"]).replace(",", ""))
    assert balance < 1000

    mine = _page("my_policies.py")
    assert {m.label: m.value for m in mine.metric}["Active policies"] == "1"
    assert len(mine.dataframe) == 1
    assert mine.dataframe[0].value["purchase_tx"].iloc[0].startswith("/chain_explorer?q=0x")
    log = " ".join(md.value for md in mine.markdown)
    assert "Premium of " in log and " BTI collected" in log and "Cover active until" in log
    assert "premium_collected" not in log and "{'" not in log and "['" not in log  # no raw keys
    assert "on-chain policy [#1](/chain_explorer?q=policy%201)" in log
    table = mine.dataframe[0]
    shown = table.proto.column_order  # what is visible without a sideways scroll
    assert list(shown)[:4] == ["policy", "symbol", "position", "status"]
    assert {"end", "probability_at_purchase", "chain_policy", "purchase_tx"} <= set(shown)

    # the trader extends the cover, then cancels it; each is priced first and logged
    assert "Change policy #1: extend, raise or cancel" in [e.label for e in mine.expander]
    mine.button(key="chg_price_1").click().run()
    assert not mine.exception and not mine.error, (mine.exception, [e.value for e in mine.error])
    figures = {m.label: m.value for m in mine.metric}
    assert float(figures["You pay"].split()[0].replace(",", "")) > 0
    assert figures["You get back"] == "0.00 BTI"
    mine.button(key="chg_confirm_1").click().run()
    assert not mine.exception, mine.exception
    assert "Policy #1: Cover extended." in mine.success[0].value
    assert "Cover extended until" in " ".join(md.value for md in mine.markdown)
    # consents to renew it automatically, then withdraws the consent; each is logged
    assert "Renew automatically" in [e.label for e in mine.expander]
    mine.number_input(key="rn_times_1").set_value(2)
    mine.button(key="rn_go_1").click().run()
    assert not mine.exception, mine.exception
    assert "Policy #1 renews automatically: 2×" in mine.success[0].value
    assert "Renew automatically: on" in [e.label for e in mine.expander]
    assert "Automatic renewal agreed: 2 times, at most" in " ".join(
        md.value for md in mine.markdown
    )
    mine.button(key="rn_stop_1").click().run()
    assert "automatic renewal stopped" in mine.success[0].value
    assert "Automatic renewal withdrawn by you" in " ".join(md.value for md in mine.markdown)
    mine.segmented_control(key="chg_kind_1").set_value("cancel").run()
    mine.button(key="chg_price_1").click().run()
    back = {m.label: m.value for m in mine.metric}["You get back"]
    assert back != "0.00 BTI"
    mine.button(key="chg_confirm_1").click().run()
    assert f"Cover cancelled; {back} refunded" in mine.success[0].value
    log = " ".join(md.value for md in mine.markdown)
    assert f"Cancelled by you: {back} of unused premium refunded" in log
    assert mine.dataframe[0].value["status"].iloc[0] == "cancelled"
    # a cover that ended is renewed on the Buy page, with the same order and cover
    renew = next(b for b in mine.get("link_button") if "Renew" in b.proto.label)
    assert renew.proto.url.startswith("/buy_insurance?symbol=BTCUSDT&side=long&order_type=limit")


def test_bad_cover_shows_the_reason_and_buys_nothing(filled: Path) -> None:
    at = _page("buy_insurance.py")
    cover = _coverage(at)
    assert cover.max == cover.value  # the form offers no more than the margin
    at.number_input(key="buy_ded").set_value(cover.value + 1).run()
    at.button(key="buy_quote").click().run()
    assert not at.exception
    reasons = " ".join(e.value for e in at.error)
    assert "a liquidation would pay 0.00 USDT" in reasons
    assert at.button(key="buy_go").disabled
    mine = _page("my_policies.py")
    assert "No policies yet" in mine.info[0].value


def _coverage(at: AppTest):  # type: ignore[no-untyped-def]
    return next(n for n in at.number_input if n.label == "Coverage (USDT)")


def _quoted_subject(at: AppTest) -> str:
    return next(h.value for h in at.subheader if h.value.startswith("Quote for"))


def test_switching_symbol_quotes_at_that_symbols_mark(filled: Path) -> None:
    """Before, ETHUSDT was quoted at BTCUSDT's entry price (the disabled entry widget kept
    its value) and came out insurable for a pittance."""
    at = _page("buy_insurance.py")
    btc = next(md.value for md in at.markdown if md.value.startswith("Entry:"))
    at.selectbox(key="buy_symbol").set_value("ETHUSDT").run()
    eth = next(md.value for md in at.markdown if md.value.startswith("Entry:"))
    assert btc != eth and "ETHUSDT's mark price" in eth
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    assert "ETHUSDT" in _quoted_subject(at)
    q = at.session_state["quote"][1]
    mark = q.record.spot
    assert abs(q.order.entry_price / mark - 1) < Decimal("0.001")
    assert "market_entry" not in [c.name for c in q.failed]


def test_a_quote_is_shown_only_for_the_inputs_it_was_made_from(filled: Path) -> None:
    """Before, after moving leverage from 20× to 5× the 20× quote and its buy button stayed."""
    at = _page("buy_insurance.py")
    at.button(key="buy_quote").click().run()
    assert "20×" in _quoted_subject(at) and at.button(key="buy_go")
    at.slider(key="buy_lev").set_value(5).run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "buy_go"]
    assert not [h for h in at.subheader if h.value.startswith("Quote for")]
    assert "The form changed" in at.info[0].value
    for change in (
        lambda a: a.radio(key="buy_side").set_value("short"),
        lambda a: a.number_input(key="buy_qty_BTCUSDT").set_value(0.2),
        lambda a: a.select_slider(key="buy_dur").set_value("7 days"),
        lambda a: a.selectbox(key="buy_symbol").set_value("ETHUSDT"),
    ):
        at.button(key="buy_quote").click().run()
        assert [b for b in at.button if b.key == "buy_go"]
        change(at).run()
        assert not [b for b in at.button if b.key == "buy_go"], change


def test_coverage_follows_the_margin_and_leverage_stops_where_underwriting_does(
    filled: Path,
) -> None:
    at = _page("buy_insurance.py")

    def margin() -> float:
        cap = next(c.value for c in at.caption if c.value.startswith("Notional"))
        return float(cap.split("margin ")[1].split(" USDT")[0].replace(",", ""))

    assert _coverage(at).value == margin()
    at.slider(key="buy_lev").set_value(5).run()  # the margin grows four times
    assert _coverage(at).value == margin()
    _coverage(at).set_value(round(margin() / 10, 2)).run()
    typed = _coverage(at).value
    at.slider(key="buy_lev").set_value(10).run()
    assert _coverage(at).value == typed  # a typed amount that fits stays
    at.slider(key="buy_lev").set_value(100).run()
    assert _coverage(at).value == margin() < typed  # shrinks to fit
    lev = at.slider(key="buy_lev")
    assert lev.max == 100 and "BTI insures up to 100×" in (lev.help or "")
    assert any("Leverage 2–100×: BTI insures up to 100×" in c.value for c in at.caption)


def test_zero_quantity_is_refused(filled: Path) -> None:
    at = _page("buy_insurance.py")
    at.number_input(key="buy_qty_BTCUSDT").set_value(0.0).run()
    at.button(key="buy_quote").click().run()
    assert not at.exception
    assert "quantity must be positive" in at.error[0].value


def test_an_order_too_large_for_leverage_is_refused_not_a_traceback(filled: Path) -> None:
    """Before, about 9,000 BTC made the leverage slider's min equal its max and the page
    raised StreamlitAPIException."""
    at = _page("buy_insurance.py")
    at.number_input(key="buy_qty_BTCUSDT").set_value(20_000.0).run()
    assert not at.exception, at.exception
    assert "largest bracket" in at.error[0].value and "Lower the quantity" in at.error[0].value
    at.number_input(key="buy_qty_BTCUSDT").set_value(0.1).run()
    assert not at.exception and at.slider(key="buy_lev").max == 100  # BTI's own cap, not 125


def test_each_symbol_starts_at_its_own_size_and_a_too_small_order_says_the_smallest(
    filled: Path,
) -> None:
    """One default size (0.1) for every symbol made a cheap coin's order too small to insure,
    refused with "premium not below payout" and nothing else."""
    at = _page("buy_insurance.py")
    btc = at.number_input(key="buy_qty_BTCUSDT").value
    at.selectbox(key="buy_symbol").set_value("ETHUSDT").run()
    eth = at.number_input(key="buy_qty_ETHUSDT").value
    assert btc < eth  # about the same notional: more of the cheaper coin
    at.selectbox(key="buy_symbol").set_value("BTCUSDT").run()
    at.number_input(key="buy_qty_BTCUSDT").set_value(0.0002).run()
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    said = " ".join(e.value for e in at.error)
    assert "costs more than it could pay; the smallest BTCUSDT order BTI can insure at 20×" in said
    assert "USDT notional): below it the 1.00 BTI policy fee" in said


def test_the_faucets_confirmation_survives_the_rerun(filled: Path) -> None:
    """ "1,000 BTI sent" was drawn, then wiped by the rerun that shows the new balance."""
    at = _page("buy_insurance.py")
    at.button(key="faucet").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "1,000 BTI sent to your wallet."
    assert at.toast[0].value == "1,000 BTI sent to your wallet."
    assert {m.label: m.value for m in at.sidebar.metric}["BTI balance"] == "1,000.00"


def _reloaded(at: AppTest) -> AppTest:
    """The page opened again at the URL ``at`` shows (a reload: a new session, signed in)."""
    again = AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120)
    for k, v in at.query_params.items():
        again.query_params[k] = v[0] if isinstance(v, list) else v
    return sign_in(again)


def _form(at: AppTest) -> dict[str, object]:
    return {
        **{r.label: r.value for r in at.radio},
        **{n.label: n.value for n in at.number_input},
        **{s.label: s.value for s in at.slider},
        **{s.label: s.value for s in at.select_slider},
        **{s.label: s.value for s in at.selectbox},
    }


def test_a_reload_keeps_the_form_and_a_quote_that_can_still_be_bought(filled: Path) -> None:
    at = _page("buy_insurance.py")
    at.selectbox(key="buy_symbol").select("ETHUSDT").run()
    at.radio(key="buy_side").set_value("short").run()
    at.radio(key="buy_type").set_value("limit").run()
    at.radio(key="buy_mode").set_value("cross").run()
    at.number_input(key="buy_qty_ETHUSDT").set_value(1.25).run()
    at.slider(key="buy_lev").set_value(15).run()
    at.number_input(key="buy_wallet").set_value(400.0).run()
    _coverage(at).set_value(123.45).run()
    at.select_slider(key="buy_dur").set_value("7 days").run()
    at.slider(key="buy_share").set_value(80).run()
    at.number_input(key="buy_ded").set_value(2.5).run()
    assert not at.exception, at.exception
    form = _form(at)
    assert dict(at.query_params)["qty"] in ("1.25", ["1.25"])
    at.button(key="buy_quote").click().run()
    assert not at.exception and not at.error, at.error
    premium = {m.label: m.value for m in at.metric}["Premium (BTI)"]
    quote_id = dict(at.query_params)["quote"]

    again = _reloaded(at)
    assert not at.exception, at.exception
    assert _form(again) == form
    assert _quoted_subject(again) == "Quote for a short 15× ETHUSDT order"
    assert {m.label: m.value for m in again.metric}["Premium (BTI)"] == premium
    assert again.button(key="buy_go").label == f"Buy cover for {premium} BTI"
    # a change to the reloaded form still clears the quote, and the link forgets it
    again.number_input(key="buy_ded").set_value(3.0).run()
    assert "The form changed since the last quote" in again.info[0].value
    assert "quote" not in dict(again.query_params)

    # bought, the quote is not offered again by its old link
    at.button(key="faucet").click().run()
    at.button(key="buy_go").click().run()
    assert "is active until" in at.success[0].value and "quote" not in dict(at.query_params)
    old = _reloaded(again)
    old.query_params["quote"] = quote_id
    old = _reloaded(old)
    said = " ".join(i.value for i in old.info)
    assert f"quote {quote_id[:8]} was bought: it is policy #1" in said
    assert not any(m.label == "Premium (BTI)" for m in old.metric)


def test_a_link_someone_typed_shows_what_it_understood_and_says_what_it_did_not(
    filled: Path,
) -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120)
    link = {
        "symbol": "ETHUSDT",
        "qty": "abc",
        "leverage": "7",
        "share": "37",
        "duration": "5",
        "side": "sideways",
        "quote": "../../etc/passwd",
    }
    for k, v in link.items():
        at.query_params[k] = v
    at = sign_in(at)
    assert not at.exception, at.exception
    warned = at.warning[0].value
    for part in (
        "qty 'abc': a number from 0 to 1e+12",
        "share '37': 10 to 100 in steps of 5",
        "duration '5': hours, one of 6, 24, 72, 168, 336, 720",
        "side 'sideways': one of long, short",
        "quote '../../etc/passwd': a quote's id (32 hex digits)",
    ):
        assert part in warned
    # what it understood is on the form; the rest at the defaults
    assert at.selectbox(key="buy_symbol").value == "ETHUSDT"
    assert at.slider(key="buy_lev").value == 7
    assert at.radio(key="buy_side").value == "long"
    assert at.slider(key="buy_share").value == 100
    assert not at.metric or "Premium (BTI)" not in [m.label for m in at.metric]
    # someone else's quote (an id of the right shape) is not shown: one message for any id
    at.radio(key="buy_side").set_value("short").run()
    at.button(key="buy_quote").click().run()
    quote_id = dict(at.query_params)["quote"]
    engine = make_engine()
    with Session(engine) as s:
        s.get_one(QuoteRecord, quote_id).user_id = "mallory"
        s.commit()
    engine.dispose()
    theirs = _reloaded(at)
    assert f"there is no quote {quote_id[:8]} of yours" in " ".join(i.value for i in theirs.info)
    assert "Premium (BTI)" not in [m.label for m in theirs.metric]
