"""The page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) takes a WAV file as its microphone, records through the page, and the final
text on the page equals the offline transcript of that WAV. Skipped, with the reason, where
Chromium is not installed (``make test`` installs it when it can)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
from test_serve import LIMITS, Endpoint, Server
from test_transcribe import SR, trained, utterance  # noqa: F401

import ctcasr

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not installed (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path):
    """A function that opens Chromium with ``wav`` as its microphone (played once)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def open_with(wav):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                     "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={wav}%noloop",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=900,900",
                     "--ignore-certificate-errors"):  # the HTTPS run's self-signed one
            opts.add_argument(flag)
        d = webdriver.Chrome(options=opts, service=Service(DRIVER))
        drivers.append(d)
        return d

    yield open_with
    for d in drivers:
        d.quit()


def wait_for(fn, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s")


def self_signed(folder) -> tuple:
    """A certificate for 127.0.0.1 and its key, made here with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_page_records_the_microphone_and_shows_the_transcript(trained, browser,  # noqa: F811
                                                              tmp_path, scheme):
    """Over HTTPS with an API key too, as a page served to other machines must be: browsers
    give the microphone only to HTTPS pages and localhost; the page asks for the key."""
    from selenium.webdriver.common.by import By

    asr = ctcasr.load(trained)
    rng = np.random.default_rng(7)
    phrases = [utterance(rng, words=3, seed=70)[0], utterance(rng, words=2, seed=71)[0]]
    wave = np.concatenate([phrases[0], np.zeros(2 * SR, np.float32), phrases[1]])
    wav = tmp_path / "mic.wav"
    sf.write(wav, wave, SR, subtype="PCM_16")
    want = [asr.transcribe(p, SR).text for p in phrases]
    assert [len(w.split()) for w in want] == [3, 2]
    if scheme == "https" and not shutil.which("openssl"):
        pytest.skip("no openssl to make a certificate with")
    tls = self_signed(tmp_path) if scheme == "https" else None
    key = "s3cret-key" if tls else None
    server = Server(asr, Endpoint(silence_s=1.0), tls, dataclasses.replace(LIMITS, api_key=key))
    try:
        d = browser(wav)
        d.get(server.http + "/")
        record = d.find_element(By.ID, "record")
        if key:
            field = wait_for(lambda: d.find_element(By.ID, "key").is_displayed()
                             and d.find_element(By.ID, "key"))
            assert not record.is_enabled()
            field.send_keys(key + "\n")
        wait_for(lambda: record.is_enabled())
        record.click()
        wait_for(lambda: "listening" in d.find_element(By.ID, "status").text)
        # the first phrase is a segment of its own once 1 s of its pause has gone by
        seg = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".segment"))[0]
        assert seg.get_attribute("data-text") == want[0]
        time.sleep(len(wave) / SR + 1.5)  # the file plays once, then silence
        record.click()
        wait_for(lambda: d.find_element(By.ID, "status").text == "done")
        segs = d.find_elements(By.CSS_SELECTOR, ".segment")[::-1]  # the newest is on top
        assert [s.get_attribute("data-text") for s in segs] == want
        assert all("microphone" in s.text for s in segs)
        assert [len(s.find_elements(By.CSS_SELECTOR, ".word")) for s in segs] == [3, 2]
        d.save_screenshot(str(tmp_path / "page.png"))
    finally:
        server.stop()
