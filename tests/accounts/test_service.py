"""Linking, following and removing exchange accounts: read-only keys only, secrets encrypted at
rest, one exchange account for one trader, every change of a position recorded."""

from __future__ import annotations

import multiprocessing as mp
import stat
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.db.engine import make_engine
from bti_core.db.models import ExchangeAccount
from bti_core.db.types import utcnow
from bti_core.errors import AccountError, DemoOnlyError
from tests.accounts.conftest import allow_demo


def rows(engine: Engine) -> list[ExchangeAccount]:
    with Session(engine) as s:
        return list(s.exec(select(ExchangeAccount)).all())


def test_a_read_only_key_is_linked_and_its_secret_is_only_stored_encrypted(
    accounts: AccountsService, exchange: DemoExchange, db_url: str, tmp_path: Path
) -> None:
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", "0.5", 50_000, 20)
    key, secret = exchange.add_key(uid)
    linked = accounts.link("ada", "demo", key, secret, label="main")
    assert (linked.label, linked.key_hint, linked.status, linked.demo) == (
        "main",
        key[-4:],
        "linked",
        True,
    )
    assert key not in repr(linked) and secret not in repr(linked) + repr(accounts)
    [pos] = accounts.positions("ada")
    assert (pos.symbol, pos.side, pos.size, pos.leverage) == ("BTCUSDT", "long", Decimal("0.5"), 20)
    [change] = accounts.changes(pos.id)  # type: ignore[arg-type]
    assert change.change == "opened"
    database = Path(db_url.removeprefix("sqlite:///")).read_bytes()
    assert key.encode() not in database and secret.encode() not in database
    key_file = tmp_path / "keys" / "accounts.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    [row] = rows(accounts.db)
    with pytest.raises(InvalidToken):  # the database alone decrypts nothing
        Fernet(Fernet.generate_key()).decrypt(row.secret_cipher.encode())
    assert accounts.vault.decrypt(row.secret_cipher) == secret
    assert accounts.accounts("bob") == [] and accounts.positions("bob") == []


@pytest.mark.parametrize(
    ("rights", "says"),
    [
        ({"enableFutures": True}, "can also trade;"),
        ({"enableWithdrawals": True}, "can also withdraw;"),
        ({"permitsUniversalTransfer": True}, "can also transfer funds"),
        ({"enableSpotAndMarginTrading": True, "enableWithdrawals": True}, "trade and withdraw"),
        ({"enableReading": False}, "cannot read"),
    ],
)
def test_a_key_that_can_do_more_than_read_is_refused_and_nothing_is_stored(
    accounts: AccountsService, exchange: DemoExchange, rights: dict[str, bool], says: str
) -> None:
    uid = exchange.add_account()
    key, secret = exchange.add_key(uid, **rights)
    with pytest.raises(AccountError, match=says):
        accounts.link("ada", "demo", key, secret)
    assert rows(accounts.db) == []


@pytest.mark.parametrize(
    ("exchange_id", "key", "secret", "label", "says"),
    [
        ("ftx", "a" * 64, "b" * 64, "", "unknown exchange 'ftx'"),
        ("demo", "short", "b" * 64, "", "API key must be 16–128"),
        ("demo", "a" * 64, "b" * 200, "", "secret must be 16–128"),
        ("demo", "a" * 64, "b' OR 1=1 --" * 3, "", "secret must be"),
        ("demo", "a" * 64, "b" * 64, "<script>", "a label is at most 40"),
    ],
)
def test_bad_values_are_refused_before_the_exchange_is_called(
    accounts: AccountsService,
    exchange: DemoExchange,
    exchange_id: str,
    key: str,
    secret: str,
    label: str,
    says: str,
) -> None:
    with pytest.raises(AccountError, match=says):
        accounts.link("ada", exchange_id, key, secret, label=label)
    assert exchange.requests == [] and rows(accounts.db) == []
    with pytest.raises(AccountError, match="no user 'eve'"):
        accounts.link("eve", "demo", "a" * 64, "b" * 64)


def test_the_demo_exchange_is_refused_off_the_local_chain(
    engine: Engine, exchange: DemoExchange, tmp_path: Path
) -> None:
    def not_local(what: str) -> None:
        raise DemoOnlyError(f"{what} is a demo: refused on chain 1")

    service = AccountsService(
        engine, Vault(tmp_path / "k"), demo_url=exchange.url, require_demo=not_local
    )
    with pytest.raises(DemoOnlyError, match="linking the demo exchange"):
        service.link("ada", "demo", "a" * 64, "b" * 64)
    assert exchange.requests == []


@pytest.mark.both_databases
def test_one_exchange_account_backs_one_trader(
    accounts: AccountsService, exchange: DemoExchange
) -> None:
    uid = exchange.add_account()
    first = accounts.link("ada", "demo", *exchange.add_key(uid))
    with pytest.raises(AccountError, match="linked to another BTI user"):
        accounts.link("bob", "demo", *exchange.add_key(uid))  # a second key, same account
    with pytest.raises(AccountError, match=f"linked already \\(account #{first.id}\\)"):
        accounts.link("ada", "demo", *exchange.add_key(uid))
    with pytest.raises(AccountError, match="no linked account"):
        accounts.remove("bob", first.id)  # not bob's: reads as absent
    accounts.remove("ada", first.id)
    [gone] = rows(accounts.db)
    assert (gone.key_cipher, gone.secret_cipher, gone.linked_uid) == ("", "", None)
    assert accounts.accounts("ada") == []
    assert accounts.link("bob", "demo", *exchange.add_key(uid)).username == "bob"
    with pytest.raises(AccountError, match="no linked account"):
        accounts.sync(first.id)


def _link_in_a_process(
    url: str, db_url: str, key_file: str, key: str, secret: str, q: mp.Queue
) -> None:
    service = AccountsService(
        make_engine(db_url), Vault(Path(key_file)), demo_url=url, require_demo=allow_demo
    )
    try:
        q.put(("linked", service.link("ada", "demo", key, secret).id))
    except AccountError as e:
        q.put(("refused", str(e)))


@pytest.mark.both_databases
def test_processes_linking_one_account_at_once_link_it_once(
    accounts: AccountsService, exchange: DemoExchange, db_url: str, tmp_path: Path
) -> None:
    uid = exchange.add_account()
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_link_in_a_process,
            args=(
                exchange.url,
                db_url,
                str(tmp_path / "keys" / "accounts.key"),
                *exchange.add_key(uid),
                q,
            ),
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(r[0] for r in results) == ["linked", "refused", "refused"]
    [row] = [r for r in rows(accounts.db) if r.linked_uid is not None]
    assert accounts.vault.decrypt(row.key_cipher) in exchange.keys  # one key file, shared


def test_following_records_every_change_and_ignores_a_late_answer(
    accounts: AccountsService, exchange: DemoExchange
) -> None:
    uid = exchange.add_account(100_000)
    exchange.open_position(uid, "BTCUSDT", "long", 1, 50_000, 10, at_ms=1_000)
    account = accounts.link("ada", "demo", *exchange.add_key(uid))
    t = utcnow()

    def step(**values: object) -> list[str]:
        nonlocal t
        t += timedelta(minutes=1)
        if values:
            exchange.change(uid, "BTCUSDT", "long", **values)
        return [c for _, _, c in accounts.sync(account.id, now=t).changes]

    assert step() == []
    assert step(size=2) == ["grown"]
    assert step(margin=2_000) == ["margin"]  # margin withdrawn: liquidation comes nearer
    assert step(leverage=50) == ["leverage"]
    assert step(size=1) == ["reduced"]
    exchange.close(uid, "BTCUSDT", "long")
    assert step() == ["closed"]
    exchange.open_position(uid, "BTCUSDT", "long", 3, 51_000, 5)
    assert step() == ["reopened"]
    [pos] = accounts.positions("ada")
    history = [c.change for c in accounts.changes(pos.id)]  # type: ignore[arg-type]
    assert history == ["opened", "grown", "margin", "leverage", "reduced", "closed", "reopened"]
    margin = accounts.changes(pos.id)[2]  # type: ignore[arg-type]
    assert (margin.before["margin"], margin.after["margin"]) == ("10000", "2000")
    exchange.change(uid, "BTCUSDT", "long", size=9, updated_ms=0)  # an answer from before
    exchange.accounts[uid].positions[("BTCUSDT", "long")].updated_ms = 5
    assert step() == []
    assert accounts.positions("ada")[0].size == Decimal(3)


def test_a_revoked_key_and_an_exchange_away_are_states_not_crashes(
    accounts: AccountsService, exchange: DemoExchange
) -> None:
    uid = exchange.add_account()
    exchange.open_position(uid, "ETHUSDT", "short", 2, 3_000, 5)
    key, secret = exchange.add_key(uid)
    account = accounts.link("ada", "demo", key, secret)
    exchange.down = True
    report = accounts.sync(account.id)
    assert report.status == "linked" and "did not answer" in (report.error or "")
    exchange.down = False
    exchange.revoke_key(key)
    report = accounts.sync(account.id)
    assert report.status == "refused" and "-2015" in (report.error or "")
    [view] = accounts.accounts("ada")
    assert view.status == "refused" and "refused the key" in (view.last_error or "")
    assert len(accounts.positions("ada")) == 1  # kept as last seen, not closed
    assert accounts.due(0) == [account.id]


def test_rotating_the_encryption_key_keeps_every_secret_and_retires_the_old_key(
    accounts: AccountsService, exchange: DemoExchange, tmp_path: Path
) -> None:
    uid = exchange.add_account()
    key, secret = exchange.add_key(uid)
    account = accounts.link("ada", "demo", key, secret)
    key_file = tmp_path / "keys" / "accounts.key"
    old = key_file.read_text().split()
    assert accounts.rotate_key() == 1
    new = key_file.read_text().split()
    assert len(old) == len(new) == 1 and old != new
    [row] = rows(accounts.db)
    with pytest.raises(InvalidToken):
        Fernet(old[0].encode()).decrypt(row.secret_cipher.encode())
    # another process's vault, loaded before the rotation, reads the new tokens
    assert Vault(key_file).decrypt(row.secret_cipher) == secret
    assert accounts.sync(account.id).status == "linked"
