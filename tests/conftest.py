"""Shared fixtures: an isolated data folder per test, demo markets, a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, rpc_call
from bti_core.chain.types import Deployment
from bti_core.db.engine import make_engine, migrate
from bti_core.market.ingest import Ingestor
from bti_core.market.synthetic import DemoMarket, generate_demo_markets
from bti_core.market.warehouse import Warehouse

# the claims world (`world`) the claims and stream tests share
pytest_plugins = ["tests.worlds"]

ROOT = Path(__file__).resolve().parent.parent
_PYTEST_MAIN = sys.modules.get("__main__")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """Streamlit's script runner (AppTest) installs each page as ``sys.modules["__main__"]``
    and leaves it there; a process started with ``spawn`` later in the same run re-executes
    ``__main__``'s file, so a child of a warehouse test used to run the sign-in page (and lock
    the default database). Put pytest's own back after every test (taken when this file was
    imported, before any fixture could run a page)."""
    yield
    if _PYTEST_MAIN is not None:
        sys.modules["__main__"] = _PYTEST_MAIN


@pytest.fixture(scope="session", autouse=True)
def _no_writes_to_the_users_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes into the checkout's ``./data`` (a user's warehouse, database and
    backtests; a test's `bti backtest` once landed in the Reliability tab). Every test runs with
    BTI_DATA_DIR set to a throwaway folder unless it asks for its own (``data_dir``), and the
    session fails if ``./data`` changed anyway."""
    before = _listing(ROOT / "data")
    saved = os.environ.get("BTI_DATA_DIR")
    os.environ["BTI_DATA_DIR"] = str(tmp_path_factory.mktemp("session-data"))
    yield
    if saved is None:
        os.environ.pop("BTI_DATA_DIR", None)
    else:
        os.environ["BTI_DATA_DIR"] = saved
    written = sorted(set(_listing(ROOT / "data")) - set(before))
    assert not written, f"tests wrote into the user's ./data: {written[:10]}"


def _listing(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")] if folder.exists() else []


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh BTI_DATA_DIR (warehouse + SQLite) for one test."""
    d = tmp_path / "data"
    monkeypatch.setenv("BTI_DATA_DIR", str(d))
    monkeypatch.delenv("BTI_DATABASE_URL", raising=False)
    # no background claims watcher inside the test process (the browser tests' app has one)
    monkeypatch.setenv("BTI_CLAIMS_WATCH_SECONDS", "0")
    return d


@pytest.fixture(scope="session")
def demo() -> dict[str, DemoMarket]:
    """60 days of hourly demo bars for four symbols (deterministic)."""
    return generate_demo_markets(start="2025-01-01", periods=24 * 60, seed=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    pytest.fail(f"PostgreSQL's {name} not found: `make test` installs Debian's postgresql package")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the PostgreSQL run of a test not marked ``both_databases`` (see `db_url`), and
    mark ``kafka`` every test that starts a broker (the stream tests' `broker` fixture)."""
    keep, drop = [], []
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            params.get("db_url") == "postgresql"
            and item.get_closest_marker("both_databases") is None
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _heavy_files_first(items)


def _heavy_files_first(items: list[pytest.Item]) -> None:
    """The heaviest modules run first, each whole and in its own order: `make test`'s three
    workers take modules in this order, and a two-minute module started last kept one worker
    busy while the others sat idle. Browser modules alternate with the other heavy ones (a
    broker, Spark, spawned processes), so two browsers seldom start at once on two cores; then
    the PostgreSQL ones; then the rest."""

    def files(*markers: str) -> list[Path]:
        found = [i.path for i in items if any(i.get_closest_marker(m) for m in markers)]
        return list(dict.fromkeys(found))

    browsers = files("browser")
    others = [f for f in files("spark", "kafka", "slow") if f not in browsers]
    paired = [f for pair in itertools.zip_longest(browsers, others) for f in pair if f]
    order = list(dict.fromkeys(paired + files("postgres")))
    rank = {f: n for n, f in enumerate(order)}
    items.sort(key=lambda i: rank.get(i.path, len(order)))  # stable within each module


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With ``BTI_TEST_TIMELINE=FILE``, a line per test (worker, start, end, test) appended to
    FILE: which worker ran what when, to see where the suite's time goes
    (`benchmarks/suite_timeline.py` reads it)."""
    start = time.time()
    yield
    timeline = os.environ.get("BTI_TEST_TIMELINE")
    if timeline:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(timeline, "a") as f:
            f.write(f"{worker}\t{start:.2f}\t{time.time():.2f}\t{item.nodeid}\n")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1, started for this session and stopped after.

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
    (``nobody`` where there is none).
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="bti-pg-"))
    pgdata, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            user = "nobody"
        shutil.chown(base, user)
        shutil.chown(sock, user)
        as_user = ["runuser", "-u", user, "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(initdb, "-D", str(pgdata), "-U", "bti", "-A", "trust", "--no-sync", "-E", "UTF8")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(pgdata), "-o", opts, "-l", str(base / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://bti@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, and the PostgreSQL server for a test marked ``both_databases``: one whose
    behaviour can differ between the two (locks, transactions, uniqueness under concurrent
    writers, Decimal sums, what a hash reads back). Others run on SQLite only
    (`pytest_collection_modifyitems`)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bti.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    # a fresh schema per test keeps tests independent on the one server
    import sqlalchemy as sa

    schema = f"t{time.time_ns()}"
    eng = sa.create_engine(base)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    yield f"{base}?options=-csearch_path%3D{schema}"
    eng = sa.create_engine(base)
    with eng.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on each database; disposed after the test (no open connections)."""
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def hourly(n: int, start: str = "2024-01-01", price: float = 100.0) -> pd.DataFrame:
    """A tidy frame of ``n`` hourly bars (a random walk, fixed seed) for table-driven tests."""
    import numpy as np

    rng = np.random.default_rng(0)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[price], close[:-1]])
    return pd.DataFrame(
        {
            "ts": pd.date_range(start, periods=n, freq="1h", tz="UTC").astype(
                "datetime64[us, UTC]"
            ),
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(100, 200, n),
        }
    )


# --- chain: a real anvil node on 127.0.0.1 ---------------------------------------------------


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """One anvil node for the session (state in a temporary folder), stopped afterwards."""
    node = AnvilNode(tmp_path_factory.mktemp("anvil"), port=free_port()).start()
    yield node
    node.stop(snapshot=False)


@pytest.fixture(scope="session")
def deployment(anvil: AnvilNode) -> Deployment:
    """BTI's contracts deployed once per session on its node, with 1,000,000 BTI of capital."""
    client = ChainClient(anvil.url)
    return client.deploy(Decimal(1_000_000))


@pytest.fixture
def chain(anvil: AnvilNode, deployment: Deployment) -> Iterator[ChainClient]:
    """The session's deployment as freshly deployed: the node's state is snapshotted before the
    test and reverted after it (anvil's ``evm_snapshot``/``evm_revert``, which cost about 4 ms
    where a deployment costs 0.2-0.5 s), and its clock set back to the wall clock, since a
    revert also rewinds the time to the snapshot's block."""
    snapshot = rpc_call(anvil.url, "evm_snapshot")
    rpc_call(anvil.url, "evm_setTime", [int(time.time())])
    client = ChainClient(anvil.url)
    client.use_deployment(deployment)
    yield client
    if not rpc_call(anvil.url, "evm_revert", [snapshot]):
        raise AssertionError(f"anvil could not revert to snapshot {snapshot}")


# --- data folders filled with demo markets (pages, streams) ------------------------------


@pytest.fixture(scope="session")
def demo_now() -> dict:
    """60 days of hourly demo bars up to the last full hour (for crashes replayed now)."""
    last = pd.Timestamp.now(tz="UTC").floor("1h") - pd.Timedelta("1h")
    return generate_demo_markets(
        start=last - pd.Timedelta(hours=24 * 60 - 1), periods=24 * 60, seed=3
    )


@pytest.fixture
def recent(
    data_dir: Path, demo_now: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """`filled`, with markets that reach the present."""
    return _fill(data_dir, demo_now, anvil, monkeypatch)


@pytest.fixture
def filled(data_dir: Path, demo: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Demo markets in a fresh data folder; the chain is the session's anvil node, where the
    app deploys its own contracts for this folder."""
    return _fill(data_dir, demo, anvil, monkeypatch)


def _fill(data_dir: Path, demo: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    engine = make_engine()
    migrate(engine)
    ingestor = Ingestor(Warehouse(data_dir / "warehouse"), engine)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        demo[symbol].ingest(ingestor)
    engine.dispose()
    return data_dir
