"""The CLI's options, fuzzed through Typer's runner in this process (a subprocess per case would
cost a second of imports each).

Property: a run either succeeds (exit 0) or exits 1 or 2 with a message that says what was
wrong ("error:" from BTI, or Click's "Invalid value"/"Missing"/"No such option"); it never ends
in a traceback, and a refused run leaves the warehouse and the database as they were."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bti_core.cli import app
from tests.fuzz.conftest import cases, tally, tree_hash

WORDS = ("error:", "Invalid value", "Missing", "No such option", "Usage:", "Got unexpected")


@dataclass
class Home:
    data: Path
    inbox: Path
    counter: itertools.count[int]

    def state(self) -> str:
        return tree_hash(self.data / "warehouse", self.data / "bti.db")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A data folder with a week of BTCUSDT (normalised CSV imported through the CLI)."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    h = Home(root / "data", root / "in", itertools.count())
    h.inbox.mkdir()
    now = pd.Timestamp.now("UTC").floor("1h")
    ts = pd.date_range(now - pd.Timedelta(days=7), now - pd.Timedelta(hours=1), freq="1h")
    csv = h.inbox / "BTCUSDT_1h_ohlcv.csv"
    pd.DataFrame(
        {
            "timestamp_utc": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 5.0,
        }
    ).to_csv(csv, index=False)
    out = run(h, ["ingest", str(csv)])
    assert out.exit_code == 0, out.output
    return h


def run(h: Home, args: list[str]):  # type: ignore[no-untyped-def]
    env = {"BTI_DATA_DIR": str(h.data), "BTI_DATABASE_URL": "", "BTI_CLAIMS_WATCH_SECONDS": "0"}
    return CliRunner().invoke(app, args, env=env, catch_exceptions=True)


def check(h: Home, entry: str, args: list[str]) -> None:
    before = h.state()
    out = run(h, args)
    if out.exception is not None and not isinstance(out.exception, SystemExit):
        raise AssertionError(
            f"bti {' '.join(args)!r} raised {out.exception!r}\n{out.output}"
        ) from out.exception
    if out.exit_code == 0:
        tally(entry, "accepted")
        return
    assert out.exit_code in (1, 2), (args, out.exit_code, out.output)
    assert any(w in out.output for w in WORDS), f"bti {args}: no message in {out.output!r}"
    assert "Traceback" not in out.output
    assert h.state() == before, f"a refused `bti {' '.join(args)}` changed stored data"
    tally(entry, "refused")


option_text = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "-1",
            "0",
            "1e9",
            "nan",
            "1,5",
            "--help",
            "-",
            "'",
            "\\x00",
            "BTCUSDT",
            "1h",
            "mark",
        ]
    ),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
        max_size=12,
    ),
)


def opt(name: str, valid: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """An option left out, given a valid value, or given anything."""
    return st.one_of(
        st.just([]), valid.map(lambda v: [name, v]), option_text.map(lambda v: [name, v])
    )


@cases(160)
@given(
    what=st.sampled_from(["csv", "csv", "csv", "missing", "folder", "odd-name"]),
    symbol=opt("--symbol", st.sampled_from(["BTCUSDT", "ETH/USDT:USDT"])),
    kind=opt("--kind", st.sampled_from(["ohlcv", "mark", "funding"])),
    timeframe=opt("--timeframe", st.sampled_from(["1h", "4h", "1m"])),
    extra=st.one_of(
        st.just([]),
        st.sampled_from([["--since", "2024-01-01"], ["--bogus"], ["--exchange", "nowhere"]]),
    ),
)
def test_ingest_options(
    home: Home,
    what: str,
    symbol: list[str],
    kind: list[str],
    timeframe: list[str],
    extra: list[str],
) -> None:
    src = home.inbox / "BTCUSDT_1h_ohlcv.csv"
    path = {
        "csv": str(src),
        "missing": str(home.inbox / "nope.csv"),
        "folder": str(home.inbox),
        "odd-name": str(src.with_name(f"x{next(home.counter)}.csv")),
    }[what]
    if what == "odd-name":
        Path(path).write_bytes(src.read_bytes())
    check(home, "CLI: bti ingest", ["ingest", path, *symbol, *kind, *timeframe, *extra])


@cases(120)
@given(
    days=opt("--days", st.integers(2, 3).map(str)),
    timeframe=opt("--timeframe", st.sampled_from(["1h", "4h", "1d"])),
    end=opt(
        "--end", st.sampled_from(["2024-06-30", "2024-06-30T12:00Z", "2099-01-01", "1969-12-31"])
    ),
    seed=opt("--seed", st.integers(0, 5).map(str)),
    if_missing=st.sampled_from([[], ["--if-missing"]]),
)
def test_demo_options(
    home: Home,
    days: list[str],
    timeframe: list[str],
    end: list[str],
    seed: list[str],
    if_missing: list[str],
) -> None:
    if not days:
        days = ["--days", "2"]  # the default (a year) takes seconds a case
    if days[1].strip().isdigit() and int(days[1]) > 3:
        days = ["--days", "3"]
    check(home, "CLI: bti demo", ["demo", "--quiet", *days, *timeframe, *end, *seed, *if_missing])


@cases(100)
@given(
    symbol=st.one_of(st.sampled_from(["BTCUSDT", "ETHUSDT"]), option_text),
    out=st.one_of(
        st.sampled_from(["x.parquet", "x.csv", "x.csv.gz", "x.txt", "sub/x.csv"]), option_text
    ),
    kind=opt("--kind", st.sampled_from(["ohlcv", "mark", "funding"])),
    timeframe=opt("--timeframe", st.sampled_from(["1h", "4h"])),
)
def test_export_options(
    home: Home, symbol: str, out: str, kind: list[str], timeframe: list[str]
) -> None:
    target = home.inbox.parent / "out" / str(next(home.counter)) / out.replace("\x00", "")
    check(home, "CLI: bti data export", ["data", "export", symbol, str(target), *kind, *timeframe])


@cases(120)
@given(
    username=st.one_of(st.from_regex(r"\A[a-z][a-z0-9_.-]{1,12}\Z"), option_text),
    role=opt("--role", st.sampled_from(["trader", "underwriter"])),
    name=opt("--name", st.text(max_size=20)),
    password=st.one_of(
        st.text(min_size=8, max_size=20), option_text, st.text(min_size=60, max_size=90)
    ),
)
def test_users_add_options(
    home: Home, username: str, role: list[str], name: list[str], password: str
) -> None:
    check(
        home, "CLI: bti users add", ["users", "add", username, *role, *name, "--password", password]
    )
