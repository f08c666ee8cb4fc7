"""The web page in a real browser: Playwright driving Debian's Chromium, headless.

Open a user's page, click a recommended item (the page records the click as an event and
fetches the list again), and check that the list changed; a screenshot is saved. Skips
locally when /usr/bin/chromium is missing; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_support import ServerProcess, small_artifacts

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=ARGS, headless=True, viewport={"width": 1280, "height": 900}
        )
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    settings = {"artifacts": small_artifacts(tmp / "art"), "state_dir": tmp / "state"}
    with ServerProcess(settings, log=tmp / "server.log") as s:
        yield s


def rec_items(page) -> list[str]:
    return page.eval_on_selector_all("#recs li[data-item]", "els => els.map(e => e.dataset.item)")


def test_click_changes_the_recommendations(browser, server, tmp_path):
    page = browser.new_page()
    page.goto(f"{server.url}/ui/users/u1")
    before = rec_items(page)
    assert len(before) == 10
    assert page.locator("#timings").is_visible()  # the explanation panel: stage timings
    assert page.locator("#recs .chip").count() >= 10  # channels of every item
    clicked = before[0]
    page.click(f'#recs button.item[data-item="{clicked}"]')
    page.wait_for_function(
        "before => { const els = [...document.querySelectorAll('#recs li[data-item]')];"
        " return els.length > 0 && els.map(e => e.dataset.item).join() !== before.join(); }",
        arg=before, timeout=15_000,
    )
    after = rec_items(page)
    assert after != before and clicked not in after
    assert page.locator("#history li").first.inner_text().strip() != ""
    shot = Path(os.environ.get("RECFUNNEL_SCREENSHOTS", tmp_path)) / "web-user-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # the click is a real event: the API's history shows it
    import httpx

    hist = httpx.get(f"{server.url}/users/u1/history", params={"limit": 5}).json()
    assert hist["source"] == "store" and hist["history"][-1]["item"] == clicked


def test_home_and_item_pages(browser, server):
    page = browser.new_page()
    page.goto(f"{server.url}/?user=u2")
    assert page.locator("#for-you .card").count() == 8
    assert page.locator("h2").count() >= 3  # "for you" and category rows
    page.locator("#for-you .card a").first.click()
    page.wait_for_selector("#similar .card")
    assert page.locator("#similar .card").count() > 0
