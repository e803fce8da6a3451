"""The web page: uploads checked at the door, a job's outputs and figures, and the page itself
driven by a real headless Chromium (when Chromium, its driver, Gradio and Selenium are here)."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from skipvsr.cli import app
from skipvsr.cli.demo import clip_path, shrink_video
from skipvsr.frames import MediaError
from skipvsr.video.io import probe
from tests.test_video_io import make_clip

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def tiny_bunny(tmp_path_factory) -> Path:
    """The demo clip at a tiny size: its first 3 frames shrunk x20 to 64x36."""
    try:
        source = clip_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    path = tmp_path_factory.mktemp("clips") / "bunny_64x36.mp4"
    shrink_video(source, path, 20, 3)
    return path


def test_bad_uploads_are_one_clear_line(tmp_path, monkeypatch):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(MediaError, match="clip: notes.mp4 is not a video this page can read"):
        app.check_upload(text)
    with pytest.raises(MediaError, match="clip: nothing uploaded"):
        app.check_upload(None)
    big = make_clip(tmp_path / "big.mp4", n=2, w=336, h=64, audio=None)
    with pytest.raises(MediaError, match=r"is 336x64 \(expected at most 320x240"):
        app.check_upload(big)
    monkeypatch.setattr(app, "MAX_UPLOAD_MB", 0.001)
    with pytest.raises(MediaError, match=r"MB \(expected at most 0.001 MB\)"):
        app.check_upload(big)


def test_a_job_writes_three_videos_and_measures_them(tmp_path, tiny_bunny):
    result = app.run_job(tiny_bunny, "skipvsr-vimeo-bi", "learned", True, 0.5, 0.0, 2, tmp_path)
    assert result.frames == 2 and result.psnr is None
    assert (
        0.4 < result.mac_fraction < 0.8 and result.seconds_per_frame > 0
    )  # first frames run fully
    for path in (result.output, result.routing, result.side_by_side):
        assert probe(path).frames == 2
    assert (probe(result.output).width, probe(result.routing).width) == (256, 256 + 48)
    assert re.search(r"MAC fraction 0\.\d{3}", result.summary())
    with pytest.raises(ValueError, match="frames: 99"):
        app.run_job(tiny_bunny, "skipvsr-vimeo-bi", "learned", True, 0.5, 0.0, 99, tmp_path)
    with pytest.raises(ValueError, match="policy: uniform routes by a MAC budget"):
        app.run_job(tiny_bunny, "skipvsr-vimeo-bi", "uniform", False, 0.5, 0.5, 2, tmp_path)


def test_the_demo_clip_is_scored_against_the_real_picture(tmp_path):
    try:
        clip_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    result = app.run_job(None, "skipvsr-vimeo-bi", "learned", False, 1.0, 0.9, 1, tmp_path)
    assert (result.lr_size, result.sr_size) == ((160, 90), (640, 360))
    assert result.psnr is not None and 20 < result.psnr < 40
    assert "PSNR" in result.summary() and "1 frame," in result.summary()


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or ``None``."""
    for module in ("gradio", "selenium"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'skipvsr[app]' selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page_url(tmp_path):
    """``skipvsr app`` on a free port, stopped after the test."""
    port = free_port()
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skipvsr", "app", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the app did not start: {(tmp_path / 'app.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_page_in_a_real_browser(page_url, tiny_bunny, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1500"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shot = Path(os.environ.get("SKIPVSR_SCREENSHOT", tmp_path / "app.png"))
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(page_url)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#clip input")))
        upload.send_keys(str(tiny_bunny))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#clip video")))
        budget = driver.find_element(By.CSS_SELECTOR, "#budget input[type=number]")
        budget.send_keys(Keys.CONTROL, "a")
        budget.send_keys("0.5", Keys.TAB)
        frames = driver.find_element(By.CSS_SELECTOR, "#frames input[type=number]")
        frames.send_keys(Keys.CONTROL, "a")
        frames.send_keys("2", Keys.TAB)
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        WebDriverWait(driver, 180).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#output video[src]"))
        )
        text = driver.find_element(By.CSS_SELECTOR, "#result").text
        found = re.search(r"MAC fraction (\d\.\d+)", text)
        assert found, text
        assert 0.4 < float(found.group(1)) < 0.8, text
        assert "2 frames, 64x36 -> 256x144" in text, text
        for elem in ("#routing video[src]", "#side video[src]"):
            assert driver.find_elements(By.CSS_SELECTOR, elem), elem
        driver.save_screenshot(str(shot))
        # a bad upload: a message in the page, and the page goes on
        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video")
        driver.get(page_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#clip input")))
        driver.find_element(By.CSS_SELECTOR, "#clip input").send_keys(str(bad))
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        message = "clip: notes.mp4 is not a video this page can read"
        wait.until(lambda d: message in d.find_element(By.TAG_NAME, "body").text)
    except BaseException:
        driver.save_screenshot(str(shot))
        raise
    finally:
        driver.quit()
    assert shot.stat().st_size > 0
