"""Shared fixtures: each test gets its own temporary directory and seeded RNG."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs, so failures reproduce.
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2**32))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI", "").lower() == "true":
        return
