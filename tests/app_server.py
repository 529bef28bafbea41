"""Start and stop the dashboard as `make app` does (`python -m pages._serve`: `streamlit run app.py` with the
engine warmed on start, the repo's .streamlit/config.toml),
on a free port; shared by the browser tests and the load-test benchmark."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app_server(
    log: Path, env: dict | None = None, timeout_s: float = 180.0
) -> tuple[subprocess.Popen, str]:
    """``(process, url)`` once ``/_stcore/health`` answers; stdout and stderr go to ``log``.

    Raises RuntimeError (the process stopped) when the server does not answer within ``timeout_s``."""
    port = free_port()
    with open(log, "w", encoding="utf-8") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pages._serve",  # `make app`: streamlit run app.py with the engine warmed on start
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop_app_server(proc)
    raise RuntimeError(f"streamlit did not start within {timeout_s:.0f} s; see {log}")


def stop_app_server(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
