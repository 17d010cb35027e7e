"""Bybit's v5 REST protocol over the demo exchange's books (what BTI reads of an account), so
ccxt's ``bybit`` client runs unchanged against it
(https://bybit-exchange.github.io/docs/v5/guide):

- a private request carries ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW``
  and ``X-BAPI-SIGN``, the HMAC-SHA256 of timestamp + key + recv window + the query string
  under the key's secret (10003 an unknown key, 10004 a wrong signature, 10002 a timestamp
  outside the window);
- answers are ``{"retCode", "retMsg", "result", "time"}``, with HTTP 200 for refusals too;
- ``/v5/execution/list`` pages with ``cursor`` (``nextPageCursor``), at most 100 a page, a
  window of at most 7 days; a liquidation is an execution of type ``BustTrade``, an
  auto-deleveraging one of type ``AdlTrade``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from bti_core.accounts.demo_books import ApiError, DemoAccount, DemoKey

if TYPE_CHECKING:
    from bti_core.accounts.demo_books import DemoBooks

WEEK_MS = 7 * 24 * 3600 * 1000


def _refuse(code: int, msg: str) -> ApiError:
    return ApiError(200, code, msg, body={"retCode": code, "retMsg": msg, "result": {}})


def authorise(books: DemoBooks, query: str, headers: Any) -> DemoKey:
    key = books.keys.get(headers.get("X-BAPI-API-KEY", ""))
    if key is None:
        raise _refuse(10003, "API key is invalid.")
    stamp, window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000")
    payload = f"{stamp}{headers.get('X-BAPI-API-KEY')}{window}{query}"
    expected = hmac.new(key.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("X-BAPI-SIGN", ""), expected):
        raise _refuse(10004, "error sign! origin_string[" + payload.split(window, 1)[0] + "]")
    try:
        ts, recv = int(stamp), int(window)
    except ValueError:
        raise _refuse(10002, "invalid request, please check your timestamp") from None
    now = books.now_ms()
    if ts > now + 1000 or now - ts > recv:
        raise _refuse(
            10002,
            f"invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{recv}]",
        )
    return key


def answer(books: DemoBooks, key: DemoKey, path: str, q: dict[str, str]) -> Any:
    account = books.accounts[key.uid]
    handler = _PRIVATE.get(path)
    if handler is None:
        raise ApiError(404, 404, f"no endpoint {path}")
    return {
        "retCode": 0,
        "retMsg": "OK",
        "result": handler(books, key, account, q),
        "retExtInfo": {},
        "time": books.now_ms(),
    }


def _query_api(books: DemoBooks, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    r = key.rights
    trade = r.get("enableFutures") or r.get("enableSpotAndMarginTrading")
    wallet = (["Withdraw"] if r.get("enableWithdrawals") else []) + (
        ["AccountTransfer"]
        if r.get("enableInternalTransfer") or r.get("permitsUniversalTransfer")
        else []
    )
    return {
        "id": "1",
        "note": "demo",
        "apiKey": "",
        "secret": "",
        "readOnly": 0 if trade or wallet else 1,
        "permissions": {
            "ContractTrade": ["Order", "Position"] if r.get("enableFutures") else [],
            "Spot": ["SpotTrade"] if r.get("enableSpotAndMarginTrading") else [],
            "Wallet": wallet,
            "Options": [],
            "Derivatives": [],
            "CopyTrading": [],
            "BlockTrade": [],
            "Exchange": [],
            "NFT": [],
            "Affiliate": [],
        },
        "ips": ["*"],
        "type": 1,
        "unified": 1,
        "uta": 1,
        "userID": int(acct.uid),
        "isMaster": True,
    }


def _positions(books: DemoBooks, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    if q.get("category") != "linear":
        raise _refuse(10001, "params error: category must be linear here")
    rows = []
    for p in acct.positions.values():
        lp = books.liquidation_price(acct, p)
        rows.append(
            {
                "positionIdx": 0,
                "riskId": 1,
                "symbol": p.symbol,
                "side": "Buy" if p.side == "long" else "Sell",
                "size": str(p.size),
                "avgPrice": str(p.entry),
                "positionValue": str(p.size * p.entry),
                "tradeMode": 1 if p.mode == "isolated" else 0,
                "positionStatus": "Normal",
                "leverage": str(p.leverage),
                "markPrice": str(p.mark),
                "liqPrice": str(lp) if lp > 0 else "",
                "bustPrice": "",
                "positionIM": str(p.size * p.entry / p.leverage),
                "positionMM": "0",
                "positionBalance": str(p.margin),
                "unrealisedPnl": "0",
                "adlRankIndicator": p.adl_quantile + 1,
                "createdTime": str(p.opened_ms),
                "updatedTime": str(p.updated_ms),
            }
        )
    return {"list": rows, "nextPageCursor": "", "category": "linear"}


def _wallet(books: DemoBooks, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    return {
        "list": [
            {
                "accountType": "UNIFIED",
                "coin": [
                    {
                        "coin": "USDT",
                        "walletBalance": str(acct.wallet),
                        "availableToWithdraw": str(acct.wallet),
                    }
                ],
            }
        ]
    }


def _executions(books: DemoBooks, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    try:
        limit = int(q.get("limit", 50))
        end = int(q.get("endTime", books.now_ms()))
        start = int(q.get("startTime", end - WEEK_MS))
        offset = int(q.get("cursor") or 0)
    except ValueError:
        raise _refuse(10001, "params error") from None
    if not 1 <= limit <= 100 or start > end or end - start > WEEK_MS:
        raise _refuse(10001, "params error: limit 1…100, a window of at most 7 days")
    kind = {"BustTrade": "liquidation", "AdlTrade": "adl"}.get(q.get("execType", ""))
    rows = [
        o
        for o in sorted(acct.forced, key=lambda o: (-o["updateTime"], -o["orderId"]))
        if start <= o["updateTime"] <= end
        and ("symbol" not in q or o["symbol"] == q["symbol"])
        and (kind is None or o["_kind"] == kind)
    ]
    page = rows[offset : offset + limit]
    more = offset + limit < len(rows)
    return {
        "category": "linear",
        "nextPageCursor": str(offset + limit) if more else "",
        "list": [
            {
                "symbol": o["symbol"],
                "orderId": str(o["orderId"]),
                "side": o["side"].title(),
                "execPrice": o["avgPrice"],
                "execQty": o["executedQty"],
                "execType": "AdlTrade" if o["_kind"] == "adl" else "BustTrade",
                "execTime": str(o["updateTime"]),
                "execId": f"x{o['orderId']}",
            }
            for o in page
        ],
    }


_PRIVATE = {
    "/v5/user/query-api": _query_api,
    "/v5/position/list": _positions,
    "/v5/account/wallet-balance": _wallet,
    "/v5/execution/list": _executions,
}
