"""``dedupd review`` in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium).

Over a store made by a real ``dedupd scan`` of pictures copied from
../shared/photos: one group is kept whole, another gets a new original,
a third is applied; the store, the files on disk and the audit are checked
after each.  A file named like an HTML tag renders as text; a POST without
the CSRF token and a page reached under a foreign host name (DNS
rebinding, simulated with Chromium's host resolver rules) are refused.

Set ``DEDUPD_REVIEW_SCREENSHOT=docs/review.png`` to save the screenshot the
README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import helpers as H

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run installs them)",
)

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
SWAY = "natural-duplicates/Sway_Wallpaper_Blue_{}.png"
#: the pictures copied from ../shared/photos: three groups of Sway wallpapers and an exact copy
PICTURES = [SWAY.format(s) for s in ("1920x1080", "1024x768", "1136x640", "2048x1536", "768x1024_Portrait",
                                      "2048x1536_Portrait", "1136x640_Portrait")] + ["Aqua.jpg"]  # fmt: skip
WAIT = 20.0


@dataclass
class Served:
    url: str
    port: int
    root: Path
    quarantine: Path
    db: Path


def _name(p: str) -> str:
    return Path(p).name


@pytest.fixture
def served(tmp_path: Path, run_cli: H.RunCli, db_path: Path, cli_env: dict[str, str]) -> Iterator[Served]:
    """A real scan (log only) of the copied pictures, then `dedupd review` with a quarantine config, as a subprocess."""
    root, quarantine = tmp_path / "photos", tmp_path / "quarantine"
    quarantine.mkdir()
    for rel in PICTURES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(H.PHOTOS / rel, root / rel)
    shutil.copyfile(H.PHOTOS / "Aqua.jpg", root / HOSTILE)
    scanned = run_cli("scan", root)
    assert scanned.returncode == 0, scanned.stderr
    config = tmp_path / "review.yaml"
    config.write_text(
        f"roots: [{root}]\nquarantine_dir: {quarantine}\n"
        "actions: {exact: quarantine, pixel: quarantine, near: quarantine}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dedupd", "review", "--db", str(db_path), "--config", str(config), "--listen", "127.0.0.1:0"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.match(r"dedupd review: (http://127\.0\.0\.1:(\d+)/)$", line.strip())
        assert found, line
        yield Served(found.group(1), int(found.group(2)), root, quarantine, db_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium; `rebind.test` resolves to 127.0.0.1, as a DNS-rebinding attacker's name would."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1250", "--host-resolver-rules=MAP rebind.test 127.0.0.1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _group_of(driver: object, original: str) -> object:
    """The group section whose original is the file named ``original``."""
    from selenium.webdriver.common.by import By

    for section in driver.find_elements(By.CSS_SELECTOR, "section.group"):  # type: ignore[attr-defined]
        if section.find_element(By.CSS_SELECTOR, "figure.original .name").text == original:
            return section
    raise AssertionError(f"no group with original {original}")


def _click_and_wait(driver: object, button: object) -> str:
    """Click a form's button and wait for the page it leads to; returns its flashed message."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    button.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, WAIT).until(EC.staleness_of(button))
    message = WebDriverWait(driver, WAIT).until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.message")))
    return str(message.text)


def test_review_in_a_real_browser(served: Served, browser: object) -> None:
    """Keep all, choose another original and apply, each through the page, change the store, the files
    and the audit (with the browser's user agent); the hostile name is text; a POST without the CSRF
    token and a foreign Host are refused."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(served.url + "groups")  # type: ignore[attr-defined]
    before = H.groups(served.db)
    assert before[_name(SWAY.format("1920x1080"))] == sorted(_name(SWAY.format(s)) for s in ("1024x768", "1136x640"))
    # the portrait renders are near the landscape 2048x1536 through 768x1024_Portrait: one group
    portraits = ("1136x640_Portrait", "2048x1536_Portrait", "768x1024_Portrait")
    assert before[_name(SWAY.format("2048x1536"))] == sorted(_name(SWAY.format(s)) for s in portraits)
    [aqua] = [o for o in before if o in ("Aqua.jpg", HOSTILE)]  # the exact copy's group
    assert before[aqua] == [({"Aqua.jpg", HOSTILE} - {aqua}).pop()]

    # the hostile name: text in the page, no element made of it, no script run
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "figcaption .name")]  # type: ignore[attr-defined]
    assert HOSTILE in names
    assert driver.find_elements(By.CSS_SELECTOR, "img[src='x']") == []  # type: ignore[attr-defined]
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # type: ignore[attr-defined]  # noqa: B018
    # the thumbnails in view are made on demand and shown (those further down load as they scroll in)
    thumbs = driver.find_elements(By.CSS_SELECTOR, "figure.file img")[:4]  # type: ignore[attr-defined]
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    WebDriverWait(driver, WAIT).until(lambda d: all(d.execute_script(loaded, img) for img in thumbs))
    shot = os.environ.get("DEDUPD_REVIEW_SCREENSHOT")
    if shot:
        driver.save_screenshot(shot)  # type: ignore[attr-defined]

    # 1. keep all: the pair is no longer a group, recorded as not duplicates
    group = _group_of(driver, aqua)
    message = _click_and_wait(driver, group.find_element(By.CSS_SELECTOR, "button.keep-all"))  # type: ignore[attr-defined]
    assert "not duplicates" in message
    after = H.groups(served.db)  # never this pair again, though the two are byte for byte the same
    pair = {"Aqua.jpg", HOSTILE}
    assert not any({o, d} == pair for o, ds in after.items() for d in ds)
    ignored = H.db_rows(served.db, "SELECT path, decided_by FROM audit WHERE action = 'ignore'")
    assert len(ignored) == 1 and "HeadlessChrome" in str(ignored[0][1])
    assert os.path.basename(os.fsdecode(ignored[0][0])) == before[aqua][0]  # type: ignore[arg-type]

    # 2. choose another original: the portrait becomes the root of its group
    group = _group_of(driver, _name(SWAY.format("2048x1536")))
    figure = next(
        f for f in group.find_elements(By.CSS_SELECTOR, "figure.duplicate")  # type: ignore[attr-defined]
        if f.find_element(By.CSS_SELECTOR, ".name").text == _name(SWAY.format("768x1024_Portrait"))
    )
    message = _click_and_wait(driver, figure.find_element(By.CSS_SELECTOR, "button.make-original"))
    assert "is now the original" in message
    after = H.groups(served.db)
    assert _name(SWAY.format("2048x1536")) in after[_name(SWAY.format("768x1024_Portrait"))]
    assert _name(SWAY.format("2048x1536")) not in after
    chosen = H.db_rows(served.db, "SELECT path, original, decided_by FROM audit WHERE action = 'choose_original'")
    assert len(chosen) == 1 and "HeadlessChrome" in str(chosen[0][2])
    assert _group_of(driver, _name(SWAY.format("768x1024_Portrait")))  # the page shows it so

    # a POST without the CSRF token, sent by the page's own origin, is refused and changes nothing
    target = _group_of(driver, _name(SWAY.format("1920x1080"))).get_attribute("data-original")  # type: ignore[attr-defined]
    status = driver.execute_async_script(  # type: ignore[attr-defined]
        "const done = arguments[arguments.length - 1];"
        "fetch('/groups/' + arguments[0] + '/keep-all', {method: 'POST', body: new URLSearchParams({next: '/groups'})})"
        ".then(r => done(r.status), e => done(String(e)));",
        target,
    )
    assert status == 403
    assert len(H.groups(served.db)[_name(SWAY.format("1920x1080"))]) == 2

    # 3. apply: the group's two duplicates go to the quarantine, byte for byte, audited
    sway = _group_of(driver, _name(SWAY.format("1920x1080")))
    moved = {rel: (served.root / rel).read_bytes() for rel in (SWAY.format("1024x768"), SWAY.format("1136x640"))}
    message = _click_and_wait(driver, sway.find_element(By.CSS_SELECTOR, "button.apply"))  # type: ignore[attr-defined]
    assert "applied: 2 done" in message
    for rel, data in moved.items():
        assert not (served.root / rel).exists()
        assert [p.read_bytes() for p in served.quarantine.rglob(_name(rel))] == [data]
    assert _name(SWAY.format("1920x1080")) not in H.groups(served.db)
    applied = H.db_rows(served.db, "SELECT outcome, decided_by FROM audit WHERE action = 'quarantine'")
    assert len(applied) == 2 and all(o == "done" and "HeadlessChrome" in str(by) for o, by in applied)
    assert (served.root / SWAY.format("1920x1080")).exists()
    assert (served.root / SWAY.format("2048x1536")).exists()  # the other groups: nothing moved

    # a foreign host name that resolves here (DNS rebinding) gets no page
    driver.get(f"http://rebind.test:{served.port}/groups")  # type: ignore[attr-defined]
    body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert "Refused" in body and "section" not in driver.page_source.lower().split("<body", 1)[1][:200]  # type: ignore[attr-defined]
    assert driver.find_elements(By.CSS_SELECTOR, "section.group") == []  # type: ignore[attr-defined]
