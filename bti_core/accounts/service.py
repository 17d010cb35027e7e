"""Linking, following and removing traders' exchange accounts.

- **Link** (`AccountsService.link`): the key must read and do nothing else (the exchange's own
  report of its rights); the account it opens must not be linked by anyone already (one
  exchange account backs one trader's cover); the positions are read once, which proves the
  key works. Only then are the key and secret stored, encrypted (`vault`).
- **Follow** (`AccountsService.sync`): the positions the exchange reports are compared with the
  stored ones and every difference is recorded (`PositionChange`: opened, grown, reduced,
  margin, leverage, closed, reopened). An answer older than what is stored is ignored; a key
  the exchange now refuses marks the account refused (its positions kept as last seen); an
  exchange that does not answer changes nothing.
- **Remove** (`AccountsService.remove`): the secrets are wiped and the exchange account freed.

Secrets never leave this module in the clear except to the exchange: not in errors, logs or
any value a caller receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bti_core.accounts.exchanges import AccountReader, connect, venue
from bti_core.accounts.types import Position
from bti_core.accounts.vault import Vault
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import AppUser, ExchangeAccount, ExchangePosition, PositionChange
from bti_core.db.statuses import AccountStatus, PositionState
from bti_core.db.types import utcnow
from bti_core.errors import (
    AccountError,
    ConfigError,
    ExchangeDownError,
    ExchangeError,
    ExchangeKeyError,
)

Connect = Callable[[str, str, str], AccountReader]
_KEY = re.compile(r"[A-Za-z0-9]{16,128}")
_LABEL = re.compile(r"[\w .\-]{0,40}")
_LOCK = "exchange-accounts"
#: what a stored position takes from the exchange's report as it is
_COPIED = (
    "symbol",
    "side",
    "size",
    "entry_price",
    "mark_price",
    "leverage",
    "margin_mode",
    "margin",
    "liquidation_price",
    "adl_quantile",
)  # serialises links, removals and key rotation (PostgreSQL)


@dataclass(frozen=True)
class LinkedAccount:
    """What a caller sees of a linked account: never its key or secret."""

    id: int
    username: str
    exchange: str
    venue: str
    label: str
    key_hint: str
    status: str
    demo: bool
    created_at: datetime
    synced_at: datetime | None
    last_error: str | None


@dataclass
class SyncReport:
    account_id: int
    status: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # symbol, side, change
    error: str | None = None


def _view(row: ExchangeAccount) -> LinkedAccount:
    assert row.id is not None
    v = venue(row.exchange)
    return LinkedAccount(
        id=row.id,
        username=row.username,
        exchange=row.exchange,
        venue=v.label,
        label=row.label or v.label,
        key_hint=row.key_hint,
        status=row.status,
        demo=v.demo,
        created_at=row.created_at,
        synced_at=row.synced_at,
        last_error=row.last_error,
    )


def _facts(p: Position | ExchangePosition) -> dict[str, Any]:
    """The figures a change is judged on, as strings (exact in JSON)."""
    return {
        "size": str(p.size),
        "entry_price": str(p.entry_price),
        "leverage": p.leverage,
        "margin_mode": p.margin_mode,
        "margin": str(p.margin),
        "liquidation_price": None if p.liquidation_price is None else str(p.liquidation_price),
    }


def _changes(old: ExchangePosition, new: Position) -> list[str]:
    out = []
    if new.size > old.size:
        out.append("grown")
    elif new.size < old.size:
        out.append("reduced")
    if new.margin != old.margin and new.size == old.size:
        out.append("margin")  # a margin added or withdrawn, not one that follows the size
    if new.leverage != old.leverage or new.margin_mode != old.margin_mode:
        out.append("leverage")
    return out


class AccountsService:
    def __init__(
        self,
        db: Engine,
        vault: Vault,
        *,
        demo_url: str | None = None,
        require_demo: Callable[[str], None] | None = None,
        connector: Connect | None = None,
    ) -> None:
        self.db = db
        self.vault = vault
        self.demo_url = demo_url
        self.require_demo = require_demo
        self._connector = connector

    def __repr__(self) -> str:
        return f"AccountsService(vault={self.vault!r})"

    def _connect(self, exchange: str, api_key: str, secret: str) -> AccountReader:
        if self._connector is not None:
            return self._connector(exchange, api_key, secret)
        return connect(exchange, api_key, secret, demo_url=self.demo_url)

    # linking

    def link(
        self,
        username: str,
        exchange: str,
        api_key: str,
        secret: str,
        *,
        label: str = "",
        now: datetime | None = None,
    ) -> LinkedAccount:
        """Link ``username``'s exchange account by a read-only key; refused, with the reason,
        for a key that can trade, withdraw or transfer, an account linked already, or a key the
        exchange refuses. Nothing is stored unless everything holds."""
        v = venue(exchange)
        if v.demo:
            if self.require_demo is None:
                raise AccountError("the demo exchange can be linked only on the local chain")
            self.require_demo("linking the demo exchange")
        api_key, secret, label = api_key.strip(), secret.strip(), label.strip()
        if not _KEY.fullmatch(api_key):
            raise AccountError(
                "the API key must be 16–128 letters and digits, as the exchange shows it"
            )
        if not _KEY.fullmatch(secret):
            raise AccountError(
                "the secret must be 16–128 letters and digits, as the exchange showed it once"
            )
        if not _LABEL.fullmatch(label):
            raise AccountError("a label is at most 40 letters, digits, spaces, . _ -")
        with session_scope(self.db) as s:
            if s.get(AppUser, username) is None:
                raise AccountError(f"no user {username!r}")

        reader = self._connect(exchange, api_key, secret)
        rights = reader.key_rights()
        if not rights.read:
            raise AccountError("the key cannot read the account: enable reading on it")
        if rights.beyond_reading:
            raise AccountError(
                f"the key can also {' and '.join(rights.beyond_reading)}; BTI links only a "
                "read-only key. Make a new key with only reading enabled (Binance: 'Enable "
                "Reading' alone), and delete this one if you do not use it"
            )
        uid = reader.account_uid()
        positions = reader.positions()
        now = now or utcnow()
        try:
            with write_scope(self.db, lock=_LOCK) as s:
                linked = s.exec(
                    select(ExchangeAccount).where(ExchangeAccount.linked_uid == f"{v.books}:{uid}")
                ).first()
                if linked is not None:
                    raise AccountError(
                        f"this {v.label} account is linked already (account #{linked.id})"
                        if linked.username == username
                        else f"this {v.label} account is linked to another BTI user: one "
                        "exchange account backs one trader's cover"
                    )
                row = ExchangeAccount(
                    username=username,
                    exchange=exchange,
                    label=label,
                    account_uid=uid,
                    linked_uid=f"{v.books}:{uid}",
                    key_hint=api_key[-4:],
                    key_cipher=self.vault.encrypt(api_key),
                    secret_cipher=self.vault.encrypt(secret),
                    status=AccountStatus.LINKED.value,
                    created_at=now,
                    synced_at=now,
                )
                s.add(row)
                s.flush()
                assert row.id is not None
                self._record(s, row.id, positions, now)
                return _view(row)
        except IntegrityError:  # another process linked the same account meanwhile
            raise AccountError(f"this {v.label} account is linked already") from None

    def accounts(self, username: str, *, removed: bool = False) -> list[LinkedAccount]:
        with session_scope(self.db) as s:
            q = select(ExchangeAccount).where(ExchangeAccount.username == username)
            if not removed:
                q = q.where(ExchangeAccount.status != AccountStatus.REMOVED.value)
            return [_view(r) for r in s.exec(q.order_by(col(ExchangeAccount.id))).all()]

    def _owned(self, s: Session, username: str, account_id: int) -> ExchangeAccount:
        row = s.get(ExchangeAccount, account_id)
        if row is None or row.username != username:  # someone else's reads as absent
            raise AccountError(f"you have no linked account #{account_id}")
        return row

    def remove(self, username: str, account_id: int, *, now: datetime | None = None) -> None:
        """Wipe the key and secret and free the exchange account; the positions' history is
        kept (it is what any cover on them was judged by)."""
        with write_scope(self.db, lock=_LOCK) as s:
            row = self._owned(s, username, account_id)
            if row.status == AccountStatus.REMOVED.value:
                return
            row.key_cipher = row.secret_cipher = ""
            row.linked_uid = None
            row.status = AccountStatus.REMOVED.value
            row.removed_at = now or utcnow()
            s.add(row)

    # following

    def positions(
        self, username: str, account_id: int | None = None, *, open_only: bool = True
    ) -> list[ExchangePosition]:
        with session_scope(self.db) as s:
            ids = [
                a.id
                for a in s.exec(
                    select(ExchangeAccount).where(ExchangeAccount.username == username)
                ).all()
                if account_id is None or a.id == account_id
            ]
            q = select(ExchangePosition).where(col(ExchangePosition.account_id).in_(ids))
            if open_only:
                q = q.where(ExchangePosition.status == PositionState.OPEN.value)
            return list(s.exec(q.order_by(col(ExchangePosition.id))).all())

    def changes(self, position_id: int) -> list[PositionChange]:
        with session_scope(self.db) as s:
            return list(
                s.exec(
                    select(PositionChange)
                    .where(PositionChange.position_id == position_id)
                    .order_by(col(PositionChange.id))
                ).all()
            )

    def reader(self, account_id: int) -> AccountReader:
        """A reader with the account's stored key (for the claims layer's forced orders)."""
        for attempt in (1, 2):
            with session_scope(self.db) as s:
                row = s.get(ExchangeAccount, account_id)
                if row is None or row.status == AccountStatus.REMOVED.value:
                    raise AccountError(f"no linked account #{account_id}")
                exchange, key, secret = row.exchange, row.key_cipher, row.secret_cipher
            try:
                return self._connect(exchange, self.vault.decrypt(key), self.vault.decrypt(secret))
            except ConfigError:
                if attempt == 2:  # a rotation re-encrypted the row since it was read: once more
                    raise
        raise AssertionError("unreachable")

    def sync(self, account_id: int, *, now: datetime | None = None) -> SyncReport:
        """Read the account's positions and record what changed."""
        now = now or utcnow()
        with session_scope(self.db) as s:
            row = s.get(ExchangeAccount, account_id)
            if row is None or row.status == AccountStatus.REMOVED.value:
                raise AccountError(f"no linked account #{account_id}")
        report = SyncReport(account_id, row.status)
        try:
            positions = self.reader(account_id).positions()
        except ExchangeKeyError as e:
            return self._failed(account_id, AccountStatus.REFUSED, str(e), report)
        except (ExchangeDownError, ExchangeError) as e:
            return self._failed(account_id, None, str(e), report)
        # one account's answers are recorded one at a time (two workers may read it at once)
        with write_scope(self.db, lock=f"exchange-account:{account_id}") as s:
            row = s.get(ExchangeAccount, account_id)
            if row is None or row.status == AccountStatus.REMOVED.value:
                return report  # removed while the exchange answered
            report.changes = self._record(s, account_id, positions, now)
            row.status = report.status = AccountStatus.LINKED.value
            row.synced_at, row.last_error = now, None
            s.add(row)
        return report

    def _failed(
        self, account_id: int, status: AccountStatus | None, error: str, report: SyncReport
    ) -> SyncReport:
        with write_scope(self.db) as s:
            row = s.get(ExchangeAccount, account_id)
            if row is not None and row.status != AccountStatus.REMOVED.value:
                row.last_error = error[:500]
                if status is not None:
                    row.status = status.value
                s.add(row)
                report.status = row.status
        report.error = error
        return report

    def sync_many(self, account_ids: Sequence[int], *, threads: int = 4) -> int:
        """`sync` of each account, ``threads`` at once (an exchange's time is waiting, and a
        crash wakes many accounts' streams together); returns how many positions changed.
        An account removed meanwhile is skipped."""

        def one(account_id: int) -> int:
            try:
                return len(self.sync(account_id).changes)
            except AccountError:
                return 0

        if len(account_ids) <= 1:
            return sum(one(a) for a in account_ids)
        with ThreadPoolExecutor(min(threads, len(account_ids))) as pool:
            return sum(pool.map(one, account_ids))

    def follow(self, every_seconds: float, *, now: datetime | None = None) -> int:
        """Sync every account not read for ``every_seconds`` (the worker's duty); returns how
        many positions changed. One account's failure is its own state, not the others'."""
        return sum(len(self.sync(i, now=now).changes) for i in self.due(every_seconds, now=now))

    def due(self, every_seconds: float, *, now: datetime | None = None) -> list[int]:
        """Linked accounts not read for ``every_seconds``, least recently read first."""
        now = now or utcnow()
        with session_scope(self.db) as s:
            rows = s.exec(
                select(ExchangeAccount)
                .where(ExchangeAccount.status != AccountStatus.REMOVED.value)
                .order_by(col(ExchangeAccount.synced_at))
            ).all()
            return [
                r.id
                for r in rows
                if r.id is not None
                and (r.synced_at is None or (now - r.synced_at).total_seconds() >= every_seconds)
            ]

    @staticmethod
    def _record(
        s: Session, account_id: int, positions: list[Position], now: datetime
    ) -> list[tuple[str, str, str]]:
        stored = {
            (r.symbol, r.side): r
            for r in s.exec(
                select(ExchangePosition).where(ExchangePosition.account_id == account_id)
            ).all()
        }
        done: list[tuple[str, str, str]] = []

        def log(row: ExchangePosition, change: str, before: dict[str, Any]) -> None:
            assert row.id is not None
            s.add(
                PositionChange(
                    position_id=row.id,
                    at=now,
                    change=change,
                    before=before,
                    after=_facts(row) if change != "closed" else {},
                )
            )
            done.append((row.symbol, row.side, change))

        for p in positions:
            row = stored.pop(p.key, None)
            if row is not None and p.updated_ms < row.exchange_ms:
                continue  # an answer older than the one stored: not the truth now
            kinds: list[str]
            before: dict[str, Any] = {}
            if row is None:
                row = ExchangePosition(
                    account_id=account_id,
                    exchange_ms=p.updated_ms,
                    status=PositionState.OPEN.value,
                    **{name: getattr(p, name) for name in _COPIED},
                )
                kinds = ["opened"]
            elif row.status == PositionState.CLOSED.value:
                before, kinds = _facts(row), ["reopened"]
            else:
                before, kinds = _facts(row), _changes(row, p)
            for name in _COPIED:
                setattr(row, name, getattr(p, name))
            row.exchange_ms, row.seen_at = p.updated_ms, now
            row.status, row.closed_at = PositionState.OPEN.value, None
            s.add(row)
            s.flush()
            for k in kinds:
                log(row, k, before)
        for row in stored.values():
            if row.status == PositionState.OPEN.value:
                before = _facts(row)
                row.status, row.closed_at, row.size = PositionState.CLOSED.value, now, Decimal(0)
                s.add(row)
                log(row, "closed", before)
        return done

    # the key that encrypts the secrets

    def rotate_key(self) -> int:
        """A new encryption key; every stored secret re-encrypted under it, then the old keys
        dropped. Returns how many accounts were re-encrypted. A process killed midway leaves
        the old keys in the file, so nothing becomes unreadable."""
        self.vault.rotate()
        with write_scope(self.db, lock=_LOCK) as s:
            rows = s.exec(select(ExchangeAccount).where(ExchangeAccount.key_cipher != "")).all()
            for r in rows:
                r.key_cipher = self.vault.reencrypt(r.key_cipher)
                r.secret_cipher = self.vault.reencrypt(r.secret_cipher)
                s.add(r)
        self.vault.retire()
        return len(rows)
