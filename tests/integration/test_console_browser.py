"""The review console in a real browser (Debian's Chromium, driven by Playwright): a
reviewer signs in and clears the queue with the keyboard alone."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson

from guard.events import Decision, decode_review
from stream_app.kafka_io import produce
from stream_app.launchers.console import console_process
from stream_app.topics import create_topics
from tests.integration.test_console import KEYS, PASSWORDS, console_settings, flagged, reviews

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root, in a machine without network: no sandbox, nothing fetched in the background.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_a_reviewer_clears_the_queue_with_the_keyboard_alone(
    kafka_broker: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: scripts/setup.sh installs it"
    shots = Path(os.environ.get("GUARDSTREAM_SCREENSHOTS", tmp_path))
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    records = [flagged(f"k{i}", "acme", p=0.9 - i / 10) for i in range(4)]
    asyncio.run(produce(s, [(None, r) for r in records], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(f"{base}/review")
        expect(page).to_have_url(f"{base}/login")  # no session: the sign-in page
        page.keyboard.type("bob")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORDS["bob"])
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_contain_text("4 open for you")
        page.screenshot(path=str(shots / "console-queue.png"))
        page.keyboard.press("Enter")  # start reviewing, riskiest... oldest first
        item = page.locator("#item")
        expect(item).to_have_attribute("data-flagged-id", "k0")
        expect(page.locator("#judged")).to_contain_text("reply k0: here is how to hotwire")
        page.keyboard.press("s")  # skip k0: not offered again for a while
        expect(item).to_have_attribute("data-flagged-id", "k1")
        page.keyboard.press("2")
        page.keyboard.press("5")  # the third category key: O3
        expect(page.locator(".cat.on")).to_contain_text("O3")
        page.screenshot(path=str(shots / "console-item.png"))
        page.keyboard.press("Enter")
        expect(item).to_have_attribute("data-flagged-id", "k2")
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        expect(item).to_have_attribute("data-flagged-id", "k3")
        page.keyboard.press("2")
        page.keyboard.press("5")
        page.keyboard.press("Enter")
        expect(page.locator("#empty")).to_be_visible()
        page.keyboard.press("u")  # undo: k3 again, to decide anew
        expect(item).to_have_attribute("data-flagged-id", "k3")
        expect(page.locator("#status")).to_contain_text("You decided this before: unsafe")
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        expect(page.locator("#empty")).to_be_visible()
        browser.close()
    got = reviews(s)  # in order per flagged turn (its key's partition), not across them
    by_turn: dict[str, list[tuple[Decision, tuple[str, ...]]]] = {}
    for r in got:
        by_turn.setdefault(r.flagged_id, []).append((r.label, r.categories))
    assert by_turn == {
        "k1": [(Decision.UNSAFE, ("O3",))],
        "k2": [(Decision.SAFE, ())],
        # the undo: bob's latest decision on k3 is the one that counts
        "k3": [(Decision.UNSAFE, ("O3",)), (Decision.SAFE, ())],
    }
    assert all(r.reviewer == "bob" and r.signed_by(KEYS["bob"].encode()) for r in got)


def test_up_starts_the_console_and_a_reviewer_clears_the_samples_flagged_turns_by_keyboard(
    tmp_path: Path,
) -> None:
    """``guardstream up`` as a newcomer runs it (the shipped model), then the printed
    sign-in in a browser: every flagged sample turn is decided with the keyboard alone."""
    import re
    import signal
    import subprocess
    import sys
    import time

    import httpx
    from playwright.sync_api import expect, sync_playwright

    from guard.settings import Settings
    from stream_app.kafka_io import read_all
    from tests.conftest import ROOT
    from tests.streaming import up_environment

    env, ports = up_environment(tmp_path, ROOT / "models" / "default")
    log = (tmp_path / "up.out").open("w+")
    up = subprocess.Popen(
        [sys.executable, "-m", "guardstream_cli.main", "up"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        out = ""
        while "streamed reply leaf" not in out or "streamed reply bomb" not in out:
            assert up.poll() is None and time.monotonic() < deadline, out[-3000:]
            time.sleep(1)
            out = (tmp_path / "up.out").read_text()
        match = re.search(r"review console: (http://\S+) \(sign in as (\w+), password (\S+)\)", out)
        assert match, out[-3000:]
        base, reviewer, password = match.groups()
        s = Settings(local={"broker_port": ports["broker"]}).for_local_stack()  # type: ignore[arg-type]
        # The last flagged record (the stopped reply's) may land just after the line
        # that reports the stop, and the console reads the topic as it grows: wait
        # until the console holds every flagged record the topic holds.
        while True:
            records = asyncio.run(read_all(s, s.topics.flagged))
            flagged_ids = {str(orjson.loads(r)["flagged_id"]) for r in records}
            depth = re.search(
                r"^guardstream_review_queue_depth (\d+)", httpx.get(f"{base}metrics").text, re.M
            )
            if depth and int(depth.group(1)) == len(flagged_ids):
                break
            assert time.monotonic() < deadline, (depth, len(flagged_ids))
            time.sleep(1)
        assert flagged_ids, "the samples include unsafe turns: some are flagged"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(base)
            page.keyboard.type(reviewer)
            page.keyboard.press("Tab")
            page.keyboard.type(password)
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_contain_text(f"{len(flagged_ids)} open for you")
            page.keyboard.press("Enter")
            item = page.locator("#item")
            decided = []
            for _ in range(len(flagged_ids)):
                expect(item).not_to_have_attribute("data-flagged-id", "")
                fid = item.get_attribute("data-flagged-id")
                assert fid in flagged_ids and fid not in decided
                page.keyboard.press("2")
                page.keyboard.press("3")  # the policy's first category
                page.keyboard.press("Enter")
                expect(item).not_to_have_attribute("data-flagged-id", fid or "")
                decided.append(fid)
            expect(page.locator("#empty")).to_be_visible()
            browser.close()
        got = [decode_review(r) for r in asyncio.run(read_all(s, s.topics.reviews))]
        assert {r.flagged_id for r in got} == flagged_ids
        assert all(r.reviewer == reviewer for r in got)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
        log.close()
