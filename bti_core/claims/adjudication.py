"""Claim adjudication (pure): the audit's checks, the amount and the automatic limit give the
decision. Nothing here reads a database or the chain."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bti_core.claims.checks import HARD, AuditCheck, Outcome, title
from bti_core.claims.state import Event


@dataclass(frozen=True)
class Decision:
    """The automatic decision on an audited claim (pure: `adjudicate`)."""

    event: Event
    reasons: list[str]
    amount: Decimal | None


def _reasons(checks: list[AuditCheck]) -> list[str]:
    return [f"{title(c.name)}: {c.reason}" for c in checks]


def adjudicate(checks: list[AuditCheck], amount: Decimal, auto_limit: Decimal) -> Decision:
    """Facts and checks and limits → decision: deny on a failed hard check; approve when every
    check passes and the amount is within the automatic limit; refer the rest, saying why."""
    hard = [c for c in checks if c.name in HARD and c.outcome is Outcome.FAIL]
    soft = [c for c in checks if c.outcome is not Outcome.PASS and c not in hard]
    if hard:
        return Decision(Event.AUTO_DENY, _reasons(hard), None)
    if not soft and amount <= auto_limit:
        return Decision(Event.AUTO_APPROVE, ["every check passed"], amount)
    why = _reasons(soft)
    if amount > auto_limit:
        why.append(f"payout {amount:,.2f} BTI is above the {auto_limit:,.2f} BTI automatic limit")
    return Decision(Event.REFER, why, None)
