"""The dashboard in headless Chromium (Debian's, driven by Playwright): live updates from the
WebSocket, no reload. With VOXBRIDGE_UPDATE_SCREENSHOT=1 it refreshes docs/dashboard.png, the
README's picture."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import ARGS, CHROMIUM, needs_chromium
from tests.conftest import clean_env
from voxbridge import testing
from voxbridge.runtime.version import blob_id

pytestmark = needs_chromium
SCREENSHOT = Path(__file__).parent.parent / "docs" / "dashboard.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[str]:
    site = tmp_path / "site"
    testing.write_entry_points(site)
    agents = tmp_path / "agents.d"
    agents.mkdir()
    (agents / "support.yaml").write_text(
        "name: Support\ndefault: true\nsystem_prompt: Answers billing questions.\n"
        "plugins:\n  echo: {}\n  slow: {delay: 0}\n  web: {}\n"
    )
    (agents / "sales.yaml").write_text("name: Sales\nplugins:\n  crashy: {crashes: 1, after: 3s}\n")
    (agents / "legacy.yaml").write_text(
        "name: Legacy\nplugins:\n  broken: {reason: 'invalid "
        "token (401): reset it in the Developer Portal'}\n"
    )
    (agents / "draft.yaml").write_text("name: Draft\nhistory: ten\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbridge", "run", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(site)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_dashboard_updates_live(fleet: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 420})
        page.goto(fleet)
        row = 'tr[data-agent="sales"][data-plugin="crashy"] td.state'
        page.wait_for_selector(f"{row}.running", timeout=10_000)
        assert page.inner_text("#default") == "support"
        # The live version of each file: its git blob id (no git here, so no commit).
        blob = blob_id((tmp_path / "agents.d" / "support.yaml").read_bytes())
        version = page.inner_text(
            'tr[data-agent="support"][data-plugin="echo"] td[data-label="version"]'
        )
        assert version == blob[:8]
        assert page.inner_text("#live") == "live"
        assert "invalid token (401)" in page.inner_text('tr[data-agent="legacy"]')
        assert "history: expected an integer" in page.inner_text('tr[data-agent="draft"]')
        # Issue 21.10: the column holds notes too ("chat at http://…"), and says so; the chat
        # link is drawn, not an emoji (an empty box where no emoji font is installed).
        assert page.inner_text("thead th:nth-child(8)") == "error / note"
        note = page.inner_text(
            'tr[data-agent="support"][data-plugin="web"] td[data-label="error / note"]'
        )
        assert note.startswith("chat at http://127.0.0.1:")
        link = 'tr[data-agent="support"][data-plugin="echo"] a.chat'
        assert page.inner_text(link).strip() == "chat"
        assert page.locator(f"{link} svg").count() == 1
        assert not page.evaluate("/\\p{Emoji_Presentation}/u.test(document.body.innerHTML)")
        # It crashes 3 s after starting and comes back a second later: the row follows, live.
        page.wait_for_selector(f"{row}.backoff", timeout=10_000)
        page.wait_for_selector(f"{row}.running", timeout=10_000)
        assert page.inner_text('tr[data-agent="sales"] td[data-label="restarts"]') == "1"
        page.wait_for_timeout(300)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("VOXBRIDGE_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, SCREENSHOT)
        # Narrow screens get one card per actor.
        page.set_viewport_size({"width": 390, "height": 800})
        assert page.is_hidden("thead")
        browser.close()
