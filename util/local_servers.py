"""Local servers for tests and benchmarks: the real app on a free port (waited for until ready),
a folder over HTTP; `python -m util.local_servers` is `make serve`'s "Ready" announcer."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class AppStartError(RuntimeError):
    """The app process exited, reported an error, or was not ready in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_command(config_path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", "front_end.py",
            "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--", "--config", str(config_path)]


READY_PATH = "/api/ready"  # the app's readiness route (front_end.ready_endpoint)


def probe(url: str) -> tuple[int, bytes] | None:
    """(HTTP status, body) of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return None


def wait_for(url: str, gone: Callable[[], str | None], log: Path | None,
             timeout_s: float) -> dict:
    """Poll url until it answers 200; its JSON body (or {}). AppStartError when the server is
    gone (`gone()` says why), the app reports an error, or time runs out."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if (reason := gone()) is not None:
            raise AppStartError(f"{reason}:\n{_text(log)}")
        answer = probe(url)
        if answer is not None:
            last = _json(answer[1])
            if answer[0] == 200:
                return last
            if last.get("status") == "error":
                raise AppStartError(f"the app cannot serve: {last.get('detail')}")
        time.sleep(0.1)
    raise AppStartError(f"{url} did not answer 200 within {timeout_s:.0f} s (last: {last}):\n"
                        f"{_text(log)}")


def exited(server: subprocess.Popen) -> Callable[[], str | None]:
    return lambda: None if server.poll() is None else f"streamlit exited with {server.returncode}"


def pid_gone(pid: int) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"the server process {pid} has ended"
        except PermissionError:
            pass
        return None
    return check


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(log: Path | None) -> str:
    return log.read_text(errors="replace") if log is not None and log.is_file() else ""


def wait_until_healthy(port: int, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll /_stcore/health (the server answers) until 200; AppStartError otherwise."""
    wait_for(f"http://127.0.0.1:{port}/_stcore/health", exited(server), log, timeout_s)


@contextlib.contextmanager
def running_app(config_path: Path, log: Path, timeout_s: float = 90,
                env: dict[str, str] | None = None, ready: bool = True
                ) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of a running app server, stopped on exit: once it is ready (model
    and index loaded, /api/ready), or with ready=False as soon as it answers at all."""
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen(app_command(config_path, port), cwd=ROOT, stdout=output,
                                  stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_until_healthy(port, server, log, timeout_s)
        if ready:
            wait_for(f"http://127.0.0.1:{port}{READY_PATH}", exited(server), log, timeout_s)
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


def announce_when_ready(port: int, pid: int, timeout_s: float) -> int:
    """`make serve`: print the address once a visitor would wait for nothing, or why never;
    quietly gone when the server process `pid` ends first (its own output says why)."""
    began = time.monotonic()
    try:
        wait_for(f"http://127.0.0.1:{port}{READY_PATH}", pid_gone(pid), None, timeout_s)
    except AppStartError as error:
        if pid_gone(pid)() is None:
            print(f"Not ready: {error}".rstrip(), flush=True)
        return 1
    print(f"Ready: http://localhost:{port} (model and index loaded; "
          f"{time.monotonic() - began:.0f} s after the server began)", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Wait until the app on PORT is ready.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--timeout", type=float, default=300)
    arguments = parser.parse_args()
    sys.exit(announce_when_ready(arguments.port, arguments.pid, arguments.timeout))
