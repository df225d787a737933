"""Debian's Chromium driven by Playwright (which downloads nothing: it is told where Chromium
is), for the tests of the pages the status server serves."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# In CI (CI=true) a missing Chromium fails these tests instead of skipping them.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it; CI fails without it)",
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


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A new page in a headless Chromium (Playwright's sync API: call it in a thread)."""
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:  # only in CI, where needs_chromium does not skip: fail, and say why
        pytest.fail("CI=true: Debian's chromium is not installed (.ci/run installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()
