"""Shared fixtures: a tiny trained demo (model + index) per session and a local HTTP server."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.fixtures_demo import demo_env  # noqa: F401
from tests.fixtures_http import http_server  # noqa: F401
