"""Shared fixtures: generated catalogs, a tiny trained model and index per session, a local HTTP server."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.fixtures_demo import demo_env  # noqa: E402,F401
from tests.fixtures_http import http_server  # noqa: E402,F401
