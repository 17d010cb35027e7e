"""Errors a user can act on.

Every error says what was wrong and what is allowed. Each subclasses `BTIError` and, where it
fits, the built-in it refines (as web3.py does with `Web3ValueError(Web3Exception, ValueError)`),
so callers may catch either.
"""

from __future__ import annotations

from pathlib import Path


class BTIError(Exception):
    """Base of every error BTI raises on purpose."""


class ConfigError(BTIError, ValueError):
    """A setting has a value BTI cannot use."""


class DataFormatError(BTIError, ValueError):
    """A market-data file is malformed: names the file, the line (a text file) or the row (a
    Parquet file or a frame), what was expected there and what was found."""

    def __init__(
        self,
        path: str | Path,
        expected: str,
        *,
        line: int | None = None,
        row: int | None = None,
        got: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.row = row
        self.expected = expected
        self.got = got
        where = self.path
        if line is not None:
            where += f", line {line}"
        elif row is not None:  # Parquet and in-memory frames have rows, not lines
            where += f", row {row}"
        detail = f"{where}: expected {expected}"
        if got is not None:
            detail += f"; got {got!r}"
        super().__init__(detail)


class UnknownSymbolError(BTIError, ValueError):
    """A symbol name that is not a USDT/USDC/USD-margined perpetual BTI can read."""


class UnknownTimeframeError(BTIError, ValueError):
    """A bar length BTI does not know."""


class NoDataError(BTIError, LookupError):
    """The warehouse holds nothing for what was asked."""


class WarehouseError(BTIError):
    """The Parquet warehouse could not be read or written."""


class ExchangeError(BTIError):
    """A live exchange download failed (network, rate limit, unknown market)."""


class ExchangeKeyError(ExchangeError, PermissionError):
    """The exchange refused an account's API key (revoked, wrong secret, IP not allowed), or the
    key can do more than read and BTI will not hold it."""


class ExchangeDownError(ExchangeError, ConnectionError):
    """The exchange did not answer in time, or asked to be called later (rate limit): nothing it
    said was used; try again."""


class AccountError(BTIError, ValueError):
    """A linked-account request BTI refuses: a bad value, an account not the caller's, a key
    linked already."""


class ChainError(BTIError):
    """A chain operation failed: node unreachable, a revert (with its decoded reason), out of
    gas, or a deployment that is missing. ``reason`` is the custom error's name when known."""

    def __init__(
        self, message: str, *, reason: str | None = None, args: dict[str, object] | None = None
    ):
        super().__init__(message)
        self.reason = reason
        self.details = args or {}


class PaymentError(BTIError, ValueError):
    """A purchase cannot be paid (e.g. the wallet holds too few BTI); nothing was written."""


class ContractRefusalError(ChainError):
    """A contract refused the call with one of its custom errors (decoded from the ABI): the
    chain answered, and the answer is no. Each custom error of the project's ABIs has its own
    subclass, named after it (`bti_core.chain.artifacts.refusal_type`)."""


class TransactionTimeoutError(ChainError):
    """A transaction was sent but not seen mined in time: it may still land (reconcile)."""


class DemoOnlyError(BTIError, PermissionError):
    """A demo (accounts, faucet, crash replay, demo markets and book) asked for on a chain
    that is not the local development chain, where it would move real money."""
