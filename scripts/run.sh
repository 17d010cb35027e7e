#!/usr/bin/env bash
# `make run`: demo markets (if there are none), the local chain node (unless BTI_RPC_URL names
# one), the demo exchange (local chain only), the worker and the dashboard, started together and stopped together (Ctrl-C, or any
# one of them exiting). One line per step; each process writes its own log.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8501}
DATA=${BTI_DATA_DIR:-data}
LOGS="$DATA/logs"
mkdir -p "$LOGS"
pids=()
stop() {
  trap - EXIT INT TERM
  echo "stopping…"
  # the dashboard and the worker first, the chain node last (it snapshots its state)
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  echo "stopped (logs in $LOGS/)"
}
trap stop EXIT INT TERM
fail() { echo "$1 did not start: see $LOGS/$2.log" >&2; tail -n 5 "$LOGS/$2.log" >&2; exit 1; }

printf '1/6 markets:   '
"$BIN/bti" demo --if-missing --quiet 2>"$LOGS/demo.log" || fail "the demo markets" demo

if [ -z "${BTI_RPC_URL:-}" ]; then
  "$BIN/bti" chain up >"$LOGS/chain.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do  # until it answers with BTI deployed (chain up deploys once)
    "$BIN/bti" chain status >/dev/null 2>&1 && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "the chain node" chain
    sleep 0.2
  done
  echo "2/6 chain:     $(head -n 1 "$LOGS/chain.log" | sed "s/; Ctrl-C stops it//")"
  # a fresh install gets an insured book to explore (bought on the local chain, once)
  # its progress on one line, redrawn (a first start buys the book: about two minutes)
  printf '3/6 book:      '
  "$BIN/bti" demo-book --if-missing --progress-lines 2>"$LOGS/demo-book.log" \
    | while IFS= read -r line; do printf '\r3/6 book:      %s\033[K' "$line"; done \
    || fail "the demo book" demo-book
  echo
  # the demo trader's exchange account: Binance's protocol on 127.0.0.1, following the market
  export BTI_DEMO_EXCHANGE_URL="${BTI_DEMO_EXCHANGE_URL:-http://127.0.0.1:${DEMO_EXCHANGE_PORT:-8610}}"
  export BTI_DEMO_EXCHANGE_WS_URL="${BTI_DEMO_EXCHANGE_WS_URL:-ws://127.0.0.1:${DEMO_EXCHANGE_WS_PORT:-8611}}"
  "$BIN/bti" demo-exchange >"$LOGS/demo-exchange.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    grep -q "demo exchange on" "$LOGS/demo-exchange.log" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || fail "the demo exchange" demo-exchange
    sleep 0.2
  done
  echo "4/6 exchange:  $BTI_DEMO_EXCHANGE_URL, the demo trader's account linked ($LOGS/demo-exchange.log)"
else
  echo "2/6 chain:     $BTI_RPC_URL (BTI_RPC_URL)"
  echo "3/6 book:      no demo book on a chain other than the local one"
  echo "4/6 exchange:  no demo exchange on a chain other than the local one"
fi
"$BIN/bti" worker >"$LOGS/worker.log" 2>&1 &
pids+=($!)
echo "5/6 worker:    claims, expiry and reconciliation ($LOGS/worker.log)"
"$BIN/streamlit" run dashboard/server.py --server.address "$HOST" --server.port "$PORT" \
  --server.headless true --browser.gatherUsageStats false >"$LOGS/dashboard.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
  "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://$HOST:$PORT/_stcore/health" >/dev/null 2>&1 && break
  kill -0 "${pids[-1]}" 2>/dev/null || fail "the dashboard" dashboard
  sleep 0.2
done
echo "6/6 dashboard: http://$HOST:$PORT   (Ctrl-C stops everything)"
wait -n "${pids[@]}"
