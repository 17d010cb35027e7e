#!/usr/bin/env bash
# `make run`: the local chain node (unless BTI_RPC_URL names one), the worker and the
# dashboard, started together and stopped together (Ctrl-C, or any one of them exiting).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8501}
pids=()
stop() {
  trap - EXIT INT TERM
  # the dashboard and the worker first, the chain node last (it snapshots its state)
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
}
trap stop EXIT INT TERM

if [ -z "${BTI_RPC_URL:-}" ]; then
  "$BIN/bti" chain up &
  pids+=($!)
  for _ in $(seq 1 150); do  # until it answers with BTI deployed (chain up deploys once)
    "$BIN/bti" chain status >/dev/null 2>&1 && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "the chain node did not start" >&2; exit 1; }
    sleep 0.2
  done
fi
"$BIN/bti" worker &
pids+=($!)
"$BIN/streamlit" run dashboard/app.py --server.address "$HOST" --server.port "$PORT" \
  --server.headless true &
pids+=($!)
echo "BTI dashboard: http://$HOST:$PORT (the worker and the chain run beside it; Ctrl-C stops all)"
wait -n "${pids[@]}"
