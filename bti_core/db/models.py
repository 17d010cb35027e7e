"""SQLModel tables. Each table has a migration under ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from bti_core.db.types import Money, UTCDateTime, utcnow


class IngestRunBase(SQLModel):
    source: str = Field(max_length=500, description="file path, exchange id or 'demo seed=N'")
    symbol: str = Field(max_length=40, index=True)
    kind: str = Field(max_length=16)
    timeframe: str = Field(max_length=8)
    rows_in: int = Field(ge=0)
    rows_stored: int = Field(ge=0, description="rows kept by cleaning")
    rows_added: int = Field(ge=0, description="times not stored before")
    rows_updated: int = Field(ge=0, description="stored times whose values changed")
    rows_total: int = Field(ge=0, description="rows in the warehouse file after the run")
    first_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IngestRun(IngestRunBase, table=True):
    """One import of one file or download into the warehouse, with its cleaning report."""

    __tablename__ = "ingest_run"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class QuoteRecord(SQLModel, table=True):
    """A priced offer of cover; it can be bought once before it expires."""

    __tablename__ = "quote"

    id: str = Field(primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    user_id: str = Field(max_length=80, index=True)
    symbol: str = Field(max_length=40)
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    liquidation_price: Decimal = Field(sa_type=Money)
    spot: Decimal = Field(sa_type=Money)
    probability: float
    probability_se: float
    baseline_probability: float
    # the learned model consulted (`bti train`), if any, and its probability
    ml_probability: float | None = Field(default=None)
    model_id: str | None = Field(default=None, max_length=120)
    risk_index: float
    risk_breakdown: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    payout: Decimal = Field(sa_type=Money)
    premium: Decimal = Field(sa_type=Money)
    premium_breakdown: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    checks: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )


class Policy(SQLModel, table=True):
    """An insured order: pending → active → expired / claimed (or declined at purchase)."""

    __tablename__ = "policy"
    # the concentration caps' one read (`repository.open_cover_summary`) from the index alone:
    # open policies by symbol and side with the figures it sums (a quote's largest read)
    __table_args__ = (
        Index(
            "ix_policy_open_cover",
            "status",
            "symbol",
            "side",
            "leverage",
            "liquidation_price",
            "coverage",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    quote_id: str = Field(foreign_key="quote.id", unique=True, max_length=32)
    user_id: str = Field(max_length=80, index=True)
    symbol: str = Field(max_length=40, index=True)
    side: str = Field(max_length=8)
    quantity: Decimal = Field(sa_type=Money)
    entry_price: Decimal = Field(sa_type=Money)
    leverage: Decimal = Field(sa_type=Money)
    margin_mode: str = Field(max_length=10)
    order_type: str = Field(max_length=10)
    margin: Decimal = Field(sa_type=Money)
    liquidation_price: Decimal = Field(sa_type=Money)
    coverage: Decimal = Field(sa_type=Money)
    share: Decimal = Field(sa_type=Money)
    deductible: Decimal = Field(sa_type=Money)
    payout: Decimal = Field(sa_type=Money, description="paid if liquidated in the window")
    premium: Decimal = Field(sa_type=Money)
    probability: float
    risk_index: float
    start_at: datetime = Field(sa_type=UTCDateTime)
    end_at: datetime = Field(sa_type=UTCDateTime, index=True)
    status: str = Field(max_length=12, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # on-chain purchase: the trader's wallet, keccak of the terms (unique on-chain too), the
    # pool's policy id and the purchase tx; pay_deadline is the signed quote's deadline, after
    # which an unsent payment can never land (reconciliation declines it then)
    wallet: str | None = Field(default=None, max_length=42)
    terms_hash: str | None = Field(default=None, max_length=66, unique=True)
    chain_policy_id: int | None = Field(default=None, index=True)
    tx_hash: str | None = Field(default=None, max_length=66)
    pay_deadline: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # a purchase from the trader's own wallet: their EIP-2612 permit ({"signature", "deadline"}),
    # kept so a relay a crash interrupted can be sent again; None for custodial demo wallets
    permit: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    # the linked exchange position insured (`ExchangePosition`), None for a described order
    position_id: int | None = Field(default=None, index=True)
    # what the cover pays for (`statuses.Peril`): liquidation, or auto-deleveraging (linked only)
    peril: str = Field(default="liquidation", max_length=12)
    # the cover continued on the rest of a partly liquidated position (`claims.parts`): a
    # liquidation counts from here, not from the purchase (the part before it was paid)
    claims_from: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def liquidations_from(self) -> datetime:
        """Where the window a liquidation must fall in starts: the purchase, or for a
        continued cover the moment after the part already paid."""
        return self.claims_from or self.start_at


class PolicyChange(SQLModel, table=True):
    """A change to an active policy as priced and shown to its holder (`policies.changes`):
    extend its window, raise its cover, or cancel it. Confirmed, it is sent on-chain once
    (``InsurancePool.amendPolicy``, signed on ``from_terms``) and then applied to the policy;
    a crash between is settled by the pool's ``PolicyAmended`` event for ``terms_hash``."""

    __tablename__ = "policy_change"

    id: str = Field(primary_key=True, max_length=32)
    policy_id: int = Field(foreign_key="policy.id", index=True)
    user_id: str = Field(max_length=80, index=True)
    kind: str = Field(max_length=8)  # extend | raise | cancel
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)  # confirm before; the chain's deadline
    from_terms: str = Field(max_length=66)
    terms_hash: str = Field(max_length=66, unique=True)
    coverage: Decimal = Field(sa_type=Money)  # the cover as typed after the change (0: cancel)
    payout: Decimal = Field(sa_type=Money)  # what it pays after the change (0: cancel)
    end_at: datetime = Field(sa_type=UTCDateTime)
    new_premium: Decimal = Field(sa_type=Money)  # today's price of the changed cover
    credit: Decimal = Field(sa_type=Money)  # the unused premium of the cover as it was
    charge: Decimal = Field(sa_type=Money)
    refund: Decimal = Field(sa_type=Money)
    quote_id: str | None = Field(default=None, max_length=32)  # the pricing quote
    checks: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    state: str = Field(max_length=8, index=True)
    tx_hash: str | None = Field(default=None, max_length=66)
    reason: str | None = Field(default=None, max_length=500)


class Renewal(SQLModel, table=True):
    """A trader's standing consent to renew a cover automatically when it ends, at today's
    quote up to ``max_premium``, ``times_left`` more times (`policies.renewals`). It moves to
    each new cover; ``quote_id`` is the renewal being bought (set once: a renewal is bought
    once whatever process or crash)."""

    __tablename__ = "renewal"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=80, index=True)
    policy_id: int = Field(foreign_key="policy.id", index=True)  # the cover it renews next
    first_policy_id: int = Field(foreign_key="policy.id")  # the cover it was given on
    max_premium: Decimal = Field(sa_type=Money)
    times_left: int
    state: str = Field(max_length=10, index=True)
    quote_id: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PolicyEvent(SQLModel, table=True):
    """The lifecycle log: one row per thing that happened to a policy (append only)."""

    __tablename__ = "policy_event"

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(foreign_key="policy.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    event: str = Field(max_length=24)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Claim(SQLModel, table=True):
    """A claim on a policy (one per policy: a policy pays at most once)."""

    __tablename__ = "claim"

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(foreign_key="policy.id", unique=True)
    user_id: str = Field(max_length=80, index=True)
    source: str = Field(max_length=16, description="market_scan or trader")
    state: str = Field(max_length=12, index=True)
    appealed: bool = False
    opened_at: datetime = Field(sa_type=UTCDateTime)
    trigger_at: datetime = Field(sa_type=UTCDateTime)
    trigger_price: Decimal = Field(sa_type=Money, description="mark price that reached LP")
    liquidation_price: Decimal = Field(sa_type=Money)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    checks: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    amount_claimed: Decimal = Field(sa_type=Money, description="the policy's payout terms")
    amount_approved: Decimal | None = Field(default=None, sa_type=Money)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    decided_by: str | None = Field(default=None, max_length=80)
    decision_reason: str | None = Field(default=None, max_length=2000)
    claim_ref: str = Field(max_length=66, description="keccak of the claim id, sent on-chain")
    payout_tx: str | None = Field(default=None, max_length=66)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # the process sending this claim's payment (host:pid:token) and until when; another
    # process takes a `paying` claim over only when the lease ran out or its owner died
    lease_owner: str | None = Field(default=None, max_length=120)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # the reserve booked for this claim in the pool (`claims.reserves`): None once released
    reserved: Decimal | None = Field(default=None, sa_type=Money)


class HeldTrigger(SQLModel, table=True):
    """A liquidation a stream saw that no evidence has confirmed yet: held, not a claim, so it
    uses up nothing (`bti_core.claims.proof`). Re-checked each worker round: stored bars that
    prove the liquidation open its claim (``confirmed``); stored bars of its minute that show
    the mark never got there refute it (``refuted``: a forged or glitched tick); a hold no
    evidence settles lapses a day after the policy's window (``lapsed``)."""

    __tablename__ = "held_trigger"
    __table_args__ = (UniqueConstraint("policy_id", "stream", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(index=True)
    symbol: str = Field(max_length=40)
    stream: str = Field(max_length=120)
    at: datetime = Field(sa_type=UTCDateTime, description="the tick that reached the level")
    price: Decimal = Field(sa_type=Money)
    reason: str = Field(max_length=300)
    state: str = Field(max_length=12, index=True)  # held | confirmed | refuted | lapsed
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claim_id: int | None = Field(default=None)


class ClaimAudit(SQLModel, table=True):
    """Append-only, hash-chained log of every claim transition (see bti_core.claims.ledger)."""

    __tablename__ = "claim_audit"

    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claim.id", index=True)
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str = Field(max_length=80)
    event: str = Field(max_length=24)
    from_state: str | None = Field(default=None, max_length=12)
    to_state: str = Field(max_length=12)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class ClaimAuditHead(SQLModel, table=True):
    """The chain's head: one row, updated with every append (its row lock serialises appends
    on PostgreSQL; a truncated tail no longer matches it)."""

    __tablename__ = "claim_audit_head"

    id: int = Field(default=1, primary_key=True)
    last_id: int = 0
    last_hash: str = Field(default="0" * 64, max_length=64)


class AppUser(SQLModel, table=True):
    """A person who signs in: a trader or an underwriter (bcrypt password hash)."""

    __tablename__ = "app_user"

    username: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=80)
    email: str = Field(max_length=120)
    role: str = Field(max_length=12, description="trader or underwriter")
    password_hash: str = Field(max_length=80)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # a demo account (`ensure_demo_users`): its password is published, so it signs in only on
    # the local development chain
    demo: bool = False


class SignInAttempt(SQLModel, table=True):
    """One sign-in attempt, right or wrong: what the guessing limits count (`auth`). The
    username as typed and the client's address hashed; purged after a day."""

    __tablename__ = "sign_in_attempt"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=80, index=True)
    client: str = Field(max_length=32, index=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    ok: bool


class SessionTicket(SQLModel, table=True):
    """A one-time ticket, good for a minute, that the browser trades at ``/bti/session`` for
    its session cookie: the cookie is then set by the server (HttpOnly), never by a page
    script. ``token_hash`` names the session the sign-in opened for its tab, which the trade
    replaces by the cookie's own."""

    __tablename__ = "session_ticket"

    ticket_hash: str = Field(primary_key=True, max_length=64)
    username: str = Field(max_length=40)
    token_hash: str = Field(max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebSession(SQLModel, table=True):
    """A signed-in dashboard session: the browser holds a random token in a cookie, the
    database only its SHA-256 (a leaked table signs nobody in)."""

    __tablename__ = "web_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    username: str = Field(foreign_key="app_user.username", index=True, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RiskModelRecord(SQLModel, table=True):
    """A trained liquidation-probability model: its files (model, card) and what its card says
    of it, so a quote can name it and the pages can list it without opening the files."""

    __tablename__ = "model"

    id: str = Field(primary_key=True, max_length=120)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    candidate: str = Field(max_length=40, description="e.g. logistic+engine")
    uses_model: bool = Field(description="whether its validation beat the Monte Carlo engine")
    reason: str = Field(max_length=1000)
    data_sha256: str = Field(max_length=64)
    data_start: datetime = Field(sa_type=UTCDateTime)
    data_end: datetime = Field(sa_type=UTCDateTime)
    symbols: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    path: str = Field(max_length=1000, description="the .skops file; the card beside it")


class Alert(SQLModel, table=True):
    """An alert of the real-time pipeline: on a trader's policy (``user_id`` its trader) or
    global (``user_id`` None, for underwriters). ``key`` makes writing it idempotent: a batch
    processed again after a restart adds nothing."""

    __tablename__ = "alert"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    symbol: str = Field(max_length=40, index=True)
    kind: str = Field(max_length=24)
    policy_id: int | None = Field(default=None, index=True)
    user_id: str | None = Field(default=None, max_length=80, index=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    price: float
    value: float
    message: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # before per-user acknowledgements (`AlertSeen`): the first acknowledgement, kept as it was
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=80)


class AlertSeen(SQLModel, table=True):
    """An alert marked seen by one user: each reader's own ("mark as seen" by an underwriter
    leaves the trader's copy unseen)."""

    __tablename__ = "alert_seen"

    alert_id: int = Field(primary_key=True)
    user_id: str = Field(primary_key=True, max_length=80)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertSubscription(SQLModel, table=True):
    """What alerts a user wants delivered to a webhook: ``scope`` "mine" (the alerts on their
    policies) or "all" (an underwriter's: every alert, the global ones included), filtered by
    kind and symbol (empty: any). Alerts raised before it was made are not delivered."""

    __tablename__ = "alert_subscription"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=80, index=True)
    scope: str = Field(max_length=8)
    kinds: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    symbols: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    webhook_url: str = Field(max_length=500)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertDelivery(SQLModel, table=True):
    """One alert to one subscription's webhook: leased by the worker that sends it (so two
    workers do not both send), then sent, or retried until it fails for good."""

    __tablename__ = "alert_delivery"
    __table_args__ = (UniqueConstraint("alert_id", "subscription_id"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(index=True)
    subscription_id: int = Field(index=True)
    status: str = Field(max_length=12)  # sending | retry | sent | failed
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)


class StreamCheckpoint(SQLModel, table=True):
    """Where a stream is: its source offset and every symbol's scoring state, written in the
    same transaction as the alerts of the ticks up to that offset."""

    __tablename__ = "stream_checkpoint"

    name: str = Field(primary_key=True, max_length=120)
    offset: int = Field(sa_type=BigInteger)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ExchangeAccount(SQLModel, table=True):
    """A trader's exchange account, linked with a read-only API key. The key and its secret are
    stored only as `bti_core.accounts.vault` tokens and wiped when the account is removed.
    ``linked_uid`` (exchange and the exchange's account id) is unique while linked, so one
    exchange account backs one BTI user's cover, not two."""

    __tablename__ = "exchange_account"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=40, index=True)
    exchange: str = Field(max_length=20)
    label: str = Field(max_length=40)
    account_uid: str = Field(max_length=40)
    linked_uid: str | None = Field(default=None, max_length=64, unique=True)
    key_hint: str = Field(max_length=8, description="the key's last four characters")
    key_cipher: str = Field(default="", max_length=1000)
    secret_cipher: str = Field(default="", max_length=1000)
    status: str = Field(max_length=12)  # AccountStatus
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    synced_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)


class ExchangePosition(SQLModel, table=True):
    """The last the exchange said of one position of a linked account (one row per symbol and
    side; a position closed and opened again reuses its row, its history in `PositionChange`)."""

    __tablename__ = "exchange_position"
    __table_args__ = (UniqueConstraint("account_id", "symbol", "side"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    symbol: str = Field(max_length=40)
    side: str = Field(max_length=5)
    size: Decimal = Field(sa_type=Money)
    entry_price: Decimal = Field(sa_type=Money)
    mark_price: Decimal = Field(sa_type=Money)
    leverage: int
    margin_mode: str = Field(max_length=8)
    margin: Decimal = Field(sa_type=Money)
    liquidation_price: Decimal | None = Field(default=None, sa_type=Money)
    adl_quantile: int | None = Field(default=None)
    exchange_ms: int = Field(sa_type=BigInteger, description="the exchange's updateTime")
    status: str = Field(max_length=8)  # PositionState
    seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PositionChange(SQLModel, table=True):
    """One change the exchange reported of a linked position: opened, grown, reduced, margin
    or leverage changed, closed, reopened — what cover on it must follow."""

    __tablename__ = "position_change"

    id: int | None = Field(default=None, primary_key=True)
    position_id: int = Field(index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    change: str = Field(max_length=12)
    before: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    after: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
