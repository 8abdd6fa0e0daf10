"""Test suite: one file per module, fixtures in conftest.py and tests/fixtures_*.py."""
