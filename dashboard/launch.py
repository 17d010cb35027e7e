"""Starting the dashboard's server as a process, in one place: `scripts/run.sh` starts it for
people, and the browser tests and page benchmarks start it through `start_server`."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    port: int,
    env: Mapping[str, str],
    *,
    log: IO[Any] | int = subprocess.DEVNULL,
    timeout: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """``streamlit run dashboard/server.py`` on 127.0.0.1:``port`` (headless, no usage
    statistics), returned once its health endpoint answers, with its URL. Raises
    `RuntimeError` if it exits or does not answer within ``timeout`` seconds."""
    streamlit = Path(sys.executable).parent / "streamlit"
    proc = subprocess.Popen(
        [
            str(streamlit),
            "run",
            str(ROOT / "dashboard" / "server.py"),
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.headless=true",
            "--browser.gatherUsageStats=false",
        ],
        env=dict(env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the dashboard did not start on {url}") from None
            time.sleep(0.3)
