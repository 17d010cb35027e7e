"""What every exchange adapter shares: one call to an exchange through ccxt with its failure in
BTI's words (`call`), the shapes an answer must have (`rows`, `record`), and `Reader`, the base
that applies an account's own key to the thread's shared client before each call."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bti_core.errors import ExchangeDownError, ExchangeError, ExchangeKeyError

_INTERNAL = re.compile(r'"code":\s*-1001\b')
WEEK_MS = 7 * 24 * 3600 * 1000
PAGE = 100


def call(what: str, fn: Callable[[], Any]) -> Any:
    """One exchange call, its failure in BTI's words: the key refused, the exchange away, or an
    answer BTI cannot use."""
    import ccxt

    try:
        return fn()
    except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as e:
        raise ExchangeKeyError(
            f"the exchange refused the key while reading {what}: {e}. Check that the key is "
            "still enabled, its secret is right and its IP whitelist allows BTI"
        ) from None
    except (ccxt.NetworkError, ccxt.InvalidNonce) as e:
        # rate limits (DDoSProtection) and timestamps out of the window are retried later
        raise ExchangeDownError(f"the exchange did not answer {what}: {e}") from None
    except ccxt.BaseError as e:
        if _INTERNAL.search(str(e)):  # Binance -1001 "Internal error … try again"
            raise ExchangeDownError(f"the exchange did not answer {what}: {e}") from None
        raise ExchangeError(f"the exchange refused {what}: {e}") from None


def rows(answer: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        raise ExchangeError(f"the exchange's {what} is not a list of records")
    return answer


def record(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ExchangeError(f"the exchange's {what} is not a record")
    return answer


class Reader:
    """An account's reader over a ccxt client that may be shared by the thread's readers
    (`exchanges.shared_client`): its key is set on the client before each call."""

    def __init__(self, client: Any, api_key: str = "", secret: str = "") -> None:
        self.client = client
        self._key, self._secret = api_key, secret

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(key …{self._key[-4:]})"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One call with this account's credentials, in the thread that makes it."""
        self.client.apiKey, self.client.secret = self._key, self._secret
        # ccxt reads a -2015 after any earlier success of the client as a temporary ban; for
        # BTI it is this key refused (revoked, or its IP list changed), whatever came before
        self.client.options["hasAlreadyAuthenticatedSuccessfully"] = False
        return call(what, fn)
