"""Premium from the liquidation probability, the payout terms and the pool's utilisation.

    premium = payout × p⁺ × (1 + λ₀ + κ·u/(1 − u)) + fee

- payout: what a liquidation pays, ``min(coverage, max(0, share × lost margin − deductible))``;
- p⁺: the upper end of the Wilson score interval (Wilson 1927) of the Monte Carlo probability
  at ``z`` standard errors, so Monte Carlo noise is charged to the insurer's favour, never the
  trader's; it rises with p, so the premium keeps rising with leverage and duration;
- u: the pool's utilisation after this policy (locked cover / capacity); the loading
  ``min(λ_max, λ₀ + κ·u/(1 − u))`` rises with it and is capped at ``λ_max``, so a premium is
  never more than ``(1 + λ_max)`` times the expected loss; cover that would fill the pool
  beyond underwriting's utilisation limit is declined, not priced (`underwriting.Limits`);
- fee: a flat policy fee.

Money is `Decimal`, rounded up to the cent (the premium never rounds against the pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

CENT = Decimal("0.01")


@dataclass(frozen=True)
class PricingConfig:
    base_loading: float = 0.20  # λ₀
    utilisation_slope: float = 0.50  # κ
    max_loading: float = 2.00  # λ_max: reached at u ≈ 0.78 with the defaults
    fee: Decimal = Decimal("1.00")
    confidence_z: float = 1.0
    min_probability: float = 1e-4  # no cover is sold below this price of risk


@dataclass(frozen=True)
class Premium:
    payout: Decimal  # paid if liquidated
    probability: float  # model estimate
    probability_charged: float  # p⁺
    expected_loss: Decimal  # payout × p⁺
    loading: Decimal  # expected_loss × (λ₀ + κ·u/(1−u))
    fee: Decimal
    total: Decimal
    utilisation: float  # after this policy

    @classmethod
    def of_json(cls, d: dict[str, Any]) -> Premium:
        """A premium as a quote stores it (every field as a string)."""
        return cls(
            payout=Decimal(d["payout"]),
            probability=float(d["probability"]),
            probability_charged=float(d["probability_charged"]),
            expected_loss=Decimal(d["expected_loss"]),
            loading=Decimal(d["loading"]),
            fee=Decimal(d["fee"]),
            total=Decimal(d["total"]),
            utilisation=float(d["utilisation"]),
        )


def wilson_upper(p: float, n: int, z: float) -> float:
    """Upper bound of the Wilson score interval for a proportion ``p`` out of ``n`` draws."""
    if n <= 0:
        return 1.0
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, max(p, (centre + half) / denom))  # never below p, even by a rounding


def utilisation_loading(utilisation: float, config: PricingConfig) -> float:
    """``min(λ_max, λ₀ + κ·u/(1 − u))`` for a utilisation ``u`` in [0, 1]."""
    if not 0 <= utilisation <= 1:
        raise ValueError(f"utilisation must be in [0, 1]; got {utilisation}")
    if utilisation >= 1:
        return config.max_loading
    raw = config.base_loading + config.utilisation_slope * utilisation / (1 - utilisation)
    return min(config.max_loading, raw)


def price(
    *,
    payout: Decimal,
    probability: float,
    n_paths: int,
    utilisation: float,
    config: PricingConfig | None = None,
) -> Premium:
    """The premium of one policy."""
    config = config or PricingConfig()
    if not 0 <= probability <= 1 or math.isnan(probability):
        raise ValueError(f"probability must be in [0, 1]; got {probability}")
    p_up = max(config.min_probability, wilson_upper(probability, n_paths, config.confidence_z))
    expected = (payout * Decimal(repr(p_up))).quantize(CENT, rounding=ROUND_UP)
    loading = (expected * Decimal(repr(utilisation_loading(utilisation, config)))).quantize(
        CENT, rounding=ROUND_UP
    )
    total = expected + loading + config.fee
    return Premium(payout, probability, p_up, expected, loading, config.fee, total, utilisation)


def wilson_upper_array(p: npt.ArrayLike, n: int, z: float) -> npt.NDArray[np.float64]:
    """`wilson_upper` over arrays (for re-pricing a whole book)."""
    pa = np.asarray(p, dtype=float)
    denom = 1 + z * z / n
    centre = pa + z * z / (2 * n)
    half = z * np.sqrt(pa * (1 - pa) / n + z * z / (4 * n * n))
    return np.minimum(1.0, np.maximum(pa, (centre + half) / denom))


def reprice(
    *,
    payout: npt.ArrayLike,
    probability: npt.ArrayLike,
    n_paths: int,
    utilisation: float,
    config: PricingConfig | None = None,
) -> npt.NDArray[np.float64]:
    """Premiums of many open policies in float, for risk monitoring of the book (the premium a
    trader pays is always computed by `price`, in Decimal)."""
    config = config or PricingConfig()
    p_up = np.maximum(
        config.min_probability, wilson_upper_array(probability, n_paths, config.confidence_z)
    )
    load = utilisation_loading(utilisation, config)
    return np.asarray(payout, dtype=float) * p_up * (1 + load) + float(config.fee)
