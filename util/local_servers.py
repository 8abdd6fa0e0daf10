"""Local servers for tests and benchmarks: the real app on a free port, a folder over HTTP."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class AppStartError(RuntimeError):
    """The app process exited or did not answer its health check in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_command(config_path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", "front_end.py",
            "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--", "--config", str(config_path)]


def wait_until_healthy(port: int, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll /_stcore/health until it answers 200; AppStartError with the log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AppStartError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AppStartError(f"streamlit did not answer within {timeout_s:.0f} s:\n{log.read_text()}")


@contextlib.contextmanager
def running_app(config_path: Path, log: Path, timeout_s: float = 90,
                env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of a healthy app server; stopped on exit."""
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen(app_command(config_path, port), cwd=ROOT, stdout=output,
                                  stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_until_healthy(port, server, log, timeout_s)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_folder(folder: Path) -> Iterator[Callable[[str], str]]:
    """`url(relative path)` of the files in folder, served on 127.0.0.1 while the block runs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(_QuietFiles, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, name="served-folder", daemon=True)
    thread.start()
    try:
        yield lambda path: f"http://127.0.0.1:{httpd.server_address[1]}/{path}"
    finally:
        httpd.shutdown()
        httpd.server_close()
