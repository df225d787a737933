"""Debian's Chromium driven by Playwright (which downloads nothing: it is told where Chromium
is), for the tests of the pages the status server serves."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# In CI a missing Chromium fails the test (.ci/run installs it) rather than skipping it.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (CI installs it: see .ci/run)",
)

# Headless, and no background traffic: this machine's network is closed.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
