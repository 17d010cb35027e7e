"""The pool-utilisation alert: global, for underwriters, checked by the worker every round.

Utilisation is what underwriting sells against: ``u = Σ coverage of active and pending
policies / pool capacity`` (`bti_core.underwriting.Limits`; sales stop at its
``max_utilisation``). The alert is raised when ``u`` reaches ``Rules.pool_level`` and re-arms
once ``u`` has fallen back under ``pool_level − REARM`` — a pool hovering at the level raises
it once, not every round. Whether it is armed is kept in the checkpoint ``pool``, read, decided
and written with the alert in one locked transaction, so workers running at once raise it
once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlmodel import col, select

from bti_core.db.engine import write_scope
from bti_core.db.models import Alert, Policy, StreamCheckpoint
from bti_core.db.statuses import OPEN_STATUSES
from bti_core.db.types import utcnow
from bti_core.stream.store import MESSAGES, alert_key
from bti_core.stream.types import DEFAULT_RULES, Event, Rules

if TYPE_CHECKING:
    from bti_core.services import Services

POOL = "POOL"  # the symbol pool alerts are filed under (no market has that name)
CHECKPOINT = "pool"
REARM = 0.05


@dataclass(frozen=True)
class PoolCheck:
    utilisation: float
    locked: float
    raised: bool  # an alert was stored by this check

    def __str__(self) -> str:
        return f"{self.utilisation:.0%} utilised" + (", alert raised" if self.raised else "")


def check_pool(services: Services, rules: Rules = DEFAULT_RULES) -> PoolCheck:
    """Read the pool's utilisation and raise its alert when it crosses ``rules.pool_level``
    (module docstring)."""
    capacity = services.limits.pool_capacity
    with write_scope(services.db, lock=f"stream:{CHECKPOINT}") as s:
        locked = s.exec(
            select(func.coalesce(func.sum(col(Policy.coverage)), 0)).where(
                col(Policy.status).in_(OPEN_STATUSES)
            )
        ).one()
        locked_d = Decimal(str(locked))
        u = float(locked_d / capacity) if capacity > 0 else 1.0
        cp = s.get(StreamCheckpoint, CHECKPOINT, with_for_update=True)
        armed = True if cp is None else bool(cp.state.get("armed", True))
        raised = False
        if armed and u >= rules.pool_level:
            at_ms = int(time.time() * 1000)
            e = Event("pool_utilisation", POOL, at_ms, float(locked_d), None, u)
            now = utcnow()
            s.add(
                Alert(
                    key=alert_key(e),
                    symbol=POOL,
                    kind=e.kind,
                    policy_id=None,
                    user_id=None,
                    at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
                    price=e.price,
                    value=u,
                    message=MESSAGES[e.kind](e),
                    created_at=now,
                )
            )
            armed, raised = False, True
        elif not armed and u < rules.pool_level - REARM:
            armed = True
        state = {"armed": armed, "utilisation": u}
        if cp is None:
            s.add(StreamCheckpoint(name=CHECKPOINT, offset=0, state=state, updated_at=utcnow()))
        else:
            cp.state, cp.updated_at = state, utcnow()
            s.add(cp)
    return PoolCheck(u, float(locked_d), raised)
