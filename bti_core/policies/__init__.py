"""Policies: quoting, purchase, expiry, listing and the lifecycle (see `service`)."""

from bti_core.db.statuses import PolicyStatus
from bti_core.policies.lifecycle import transition
from bti_core.policies.purchase import Permit, ReconcileReport
from bti_core.policies.quoting import QuoteError, QuoteView
from bti_core.policies.service import InsuranceService
from bti_core.underwriting import UnderwritingError

__all__ = [
    "InsuranceService",
    "Permit",
    "PolicyStatus",
    "QuoteError",
    "QuoteView",
    "ReconcileReport",
    "UnderwritingError",
    "transition",
]
