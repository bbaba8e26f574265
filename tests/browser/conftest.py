"""Real Chromium for the console's tests: Debian's ``chromium`` (``.ci/run`` installs it),
driven by playwright, with nothing of its own reaching out (the machine has no internet, and
background networking would only flood refused connections)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

# README names this folder. It is build output (ignored by git), so a test run leaves the tree
# clean; docs/screenshots/ holds copies committed from such a run.
SCREENSHOTS = Path(__file__).parents[2] / "build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if executable is None:
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()
