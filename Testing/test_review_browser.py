"""``immunodiff review`` end to end in a real headless Chromium: the server on a free localhost
port, the sample CT, the tumour point placed by a click, the clinical form (a bad value first),
a run with the demo bundle, the views and overlays checked on screenshots, the predictions
against the library's, Save, a refused path and a refused upload, and Cancel.

Chromium and chromedriver come from Debian (``scripts/setup_browser.sh`` installs them); the
test is skipped, saying so, only where they cannot be installed."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

webdriver = pytest.importorskip("selenium.webdriver")
import SimpleITK as sitk  # noqa: E402
from PIL import Image  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from ImmunoDiffLib.commands.review import free_port  # noqa: E402
from ImmunoDiffLib.imaging import write_dicom_series  # noqa: E402
from ImmunoDiffLib.inference.cases import predict_case  # noqa: E402
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline  # noqa: E402
from ImmunoDiffLib.inference.sampling import SamplingOptions  # noqa: E402
from ImmunoDiffLib.reporting.case_report import prediction_lines  # noqa: E402
from ImmunoDiffLib.settings import default_bundle  # noqa: E402

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
                 if p and Path(p).is_file()), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and chromedriver are not installed (scripts/setup_browser.sh installs "
           "Debian's chromium and chromium-driver)")

CLINICAL = {"age": "64", "sex": "male", "race": "white", "cea": "6.1", "anc": "4.6",
            "alc": "1.4", "aec": "0.21", "amc": "0.55", "pdl1": "70"}
TUMOUR_RAS = (-52.6, 95.9, -256.5)  # lung2's labelled tumour (LPS 52.6, -95.9, -256.5)


def _wait(condition, timeout: float, what: str, step: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def review(tmp_path_factory, sample_paths):
    work = tmp_path_factory.mktemp("review")
    port = free_port("127.0.0.1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "ImmunoDiffLib.cli", "review", str(sample_paths["lung2_image"]),
         "--port", str(port), "--anatomy", "classic", "--work-dir", str(work / "scratch"),
         "--allow", str(work)], cwd=work, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait(lambda: _answers(url), 90, "the server to answer")
        driver.get(url)
        _wait(lambda: driver.find_elements(By.ID, "run"), 60, "the page")
        yield driver, work, port, server
    finally:
        driver.quit()
        server.terminate()
        server.wait(20)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _type(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
    field.send_keys(Keys.CONTROL, "a")  # clear() does not reach the page's own copy
    field.send_keys(Keys.DELETE)
    field.send_keys(text)


def _click(driver, element_id: str) -> None:
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _views(driver) -> tuple[np.ndarray, np.ndarray]:
    """The left and right slice views as (H, W, 3) arrays cut from a page screenshot."""
    page = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    scale = page.shape[1] / driver.execute_script("return window.innerWidth")
    images = driver.find_elements(By.CSS_SELECTOR, "#views img, #views canvas")
    boxes = sorted((e.rect for e in images if e.rect["width"] > 100), key=lambda r: r["x"])
    assert len(boxes) >= 2, boxes
    cut = [page[int(b["y"] * scale):int((b["y"] + b["height"]) * scale),
                int(b["x"] * scale):int((b["x"] + b["width"]) * scale)] for b in boxes[:2]]
    height = min(c.shape[0] for c in cut)
    width = min(c.shape[1] for c in cut)
    return cut[0][:height, :width].astype(float), cut[1][:height, :width].astype(float)


def lung2_crop(sample_paths) -> sitk.Image:
    """A 40 x 30 x 6 voxel piece of lung2, small enough to upload as a DICOM series."""
    return sitk.ReadImage(str(sample_paths["lung2_image"]))[200:240, 300:330, 18:24]


def _settle(driver, seconds: float = 2.5) -> None:
    time.sleep(seconds)  # let the remote views send their new frames


def test_a_radiologist_reviews_a_case_in_the_browser(review, sample_paths, tmp_path):
    driver, work, _, _ = review
    # a path outside the allowed folders is refused, and nothing else changes
    _type(driver, "ct-path", "../../etc/passwd")
    _click(driver, "load")
    _wait(lambda: "outside the folders" in driver.page_source, 20, "the refusal")
    # an upload that is not an image gives the library's clear error
    note = tmp_path / "notes.txt"
    note.write_text("not a CT")
    driver.find_element(By.CSS_SELECTOR, "#upload, input[type=file]").send_keys(str(note))
    _wait(lambda: "is not a CT file" in driver.page_source, 20, "the upload error")
    # the files of a DICOM series, chosen together, arrive as one volume
    series = write_dicom_series(lung2_crop(sample_paths), tmp_path / "series",
                                description="lung2 crop")
    driver.find_element(By.CSS_SELECTOR, "#upload, input[type=file]").send_keys(
        "\n".join(str(p) for p in sorted(series.iterdir())))
    _wait(lambda: driver.find_element(By.ID, "ct-info").text.startswith(
        "lung2 crop: 40 x 30 x 6 voxels"), 30, "the DICOM upload")
    # load the sample CT again and go to the tumour's slice, centred
    _type(driver, "ct-path", str(sample_paths["lung2_image"]))
    before = driver.find_element(By.ID, "ct-info").text
    time.sleep(1.1)  # the load time shown has whole seconds
    _click(driver, "load")
    _wait(lambda: driver.find_element(By.ID, "ct-info").text not in ("", before), 30,
          "the CT to load")
    _type(driver, "goto", " ".join(str(v) for v in TUMOUR_RAS))
    _click(driver, "goto-button")
    _settle(driver)
    # one click at the centre of the left view places the tumour point there
    left = sorted((e for e in driver.find_elements(By.CSS_SELECTOR, "#views img, #views canvas")
                   if e.rect["width"] > 100), key=lambda e: e.rect["x"])[0]
    webdriver.ActionChains(driver).move_to_element(left).click().perform()
    text = _wait(lambda: "tumour point (RAS mm)" in (t := driver.find_element(
        By.ID, "point").text) and t, 20, "the point")
    placed = [float(v) for v in text.split(":")[1].split(",")]
    assert np.linalg.norm(np.subtract(placed, TUMOUR_RAS)) < 6.0, placed
    # a bad clinical value first: its message appears and Run stays disabled
    _type(driver, "clinical-age", "abc")
    _wait(lambda: "Age" in driver.find_element(By.ID, "form").text
          and "abc" in driver.find_element(By.ID, "form").text, 20, "the age message")
    assert not driver.find_element(By.ID, "run").is_enabled()
    for name, value in CLINICAL.items():
        _type(driver, f"clinical-{name}", value)
    _wait(lambda: "NLR computed from ANC/ALC: 3.29" in driver.page_source, 20, "NLR")
    # the README's picture is taken with the page's defaults; the test's run is short
    samples, steps = (2, 25) if os.environ.get("IMMUNODIFF_REVIEW_SCREENSHOT") else (1, 5)
    _type(driver, "samples", str(samples))
    _type(driver, "steps", str(steps))
    _wait(lambda: driver.find_element(By.ID, "run").is_enabled(), 20, "Run enabled")
    baseline_left, baseline_right = _views(driver)
    assert np.abs(baseline_left - baseline_right).mean() < 1.0  # the same CT in both
    _click(driver, "run")
    _wait(lambda: driver.find_element(By.ID, "predictions").text.strip(), 600, "the result",
          step=1.0)
    # linked views: scrolling the left view three slices (15 mm, beyond the 8 mm thick crop)
    # moves the right one too, and there both show the same CT
    at_tumour_left, at_tumour_right = _views(driver)
    left = sorted((e for e in driver.find_elements(By.CSS_SELECTOR, "#views img, #views canvas")
                   if e.rect["width"] > 100), key=lambda e: e.rect["x"])[0]
    for _ in range(3):
        webdriver.ActionChains(driver).scroll_to_element(left).scroll_from_origin(
            webdriver.common.actions.wheel_input.ScrollOrigin.from_element(left), 0, 120
        ).perform()
        time.sleep(0.5)
    _settle(driver)
    moved_left, moved_right = _views(driver)
    assert np.abs(moved_left - at_tumour_left).mean() > 1.0
    assert np.abs(moved_right - at_tumour_right).mean() > 1.0
    assert np.abs(moved_left - moved_right).mean() < 1.0
    _click(driver, "orientation-axial")  # back to the tumour, centred
    _settle(driver)
    # coronal: the crop is a thin slab around the tumour, so the rows far from it are outside
    _click(driver, "orientation-coronal")
    _settle(driver)
    left_image, right_image = _views(driver)
    difference = np.abs(left_image - right_image).mean(axis=(1, 2))
    middle = len(difference) // 2
    assert difference[middle - 10:middle + 10].mean() > 5.0  # inside the crop they differ
    assert difference[:len(difference) // 6].mean() < 1.0  # far above: the same CT
    assert difference[-len(difference) // 6:].mean() < 1.0
    if os.environ.get("IMMUNODIFF_REVIEW_SCREENSHOT"):  # the README's picture of the page
        _click(driver, "orientation-axial")
        _settle(driver)
        driver.execute_script("document.getElementById('predictions').scrollIntoView()")
        driver.save_screenshot(os.environ["IMMUNODIFF_REVIEW_SCREENSHOT"])
        _click(driver, "orientation-coronal")
        _settle(driver)
    # the overlay and anatomy toggles change the pixels
    _click(driver, "overlay-difference")
    _settle(driver)
    overlaid_left, _ = _views(driver)
    assert np.abs(overlaid_left - left_image).mean() > 0.5
    _click(driver, "anatomy")
    _settle(driver)
    with_anatomy_left, _ = _views(driver)
    assert np.abs(with_anatomy_left - overlaid_left).mean() > 0.2
    # Save writes the case folder immunodiff predict writes, and the page says what it holds
    _type(driver, "save-path", str(work / "saved_case"))
    _click(driver, "save")
    _wait(lambda: (work / "saved_case" / "predictions.json").is_file(), 30, "the saved case")
    saved = json.loads((work / "saved_case" / "predictions.json").read_text())
    page_lines = driver.find_element(By.ID, "predictions").text.splitlines()
    assert page_lines[:6] == prediction_lines(saved)[:6]
    # the same case through the library gives the same predictions
    pipeline = ImmunoDiffPipeline(default_bundle(), anatomy_backend="classic")
    assert saved["tumour_point_lps"] == [-placed[0], -placed[1], placed[2]]
    library = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "lib",
                           point=tuple(saved["tumour_point_lps"]),
                           options=SamplingOptions(samples=samples, steps=steps, seed=0))
    for key in ("recist", "response_probability", "survival_risk", "baseline_lesion_ml",
                "followup_lesion_ml", "followup_diameter_mm"):
        assert library[key] == saved[key], key


def _listening_addresses(port: int) -> set[str]:
    """The local IPv4/IPv6 addresses listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_the_server_listens_on_this_computer_only(review):
    _, _, port, _ = review
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else


def test_cancel_stops_a_run_within_seconds_and_keeps_nothing(review):
    driver, work, _, _ = review
    _type(driver, "steps", "50")
    _wait(lambda: driver.find_element(By.ID, "run").is_enabled(), 20, "Run enabled")
    _click(driver, "run")
    _wait(lambda: "denoising" in driver.find_element(By.ID, "run-message").text, 300,
          "the sampling to start", step=0.5)
    # a second tab sees the run going and cannot start another
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(f"http://127.0.0.1:{review[2]}/")
    _wait(lambda: driver.find_elements(By.ID, "run"), 60, "the second tab")
    _wait(lambda: "denoising" in driver.find_element(By.ID, "run-message").text, 30,
          "the second tab to show the run")
    assert not driver.find_element(By.ID, "run").is_enabled()
    assert "Busy: a case is running" in driver.find_element(By.ID, "busy").text
    driver.close()
    driver.switch_to.window(first)
    asked = time.monotonic()
    _click(driver, "cancel")
    _wait(lambda: "cancelled" in driver.find_element(By.ID, "run-message").text, 15,
          "the cancel")
    assert time.monotonic() - asked < 15
    assert not (work / "scratch" / "case").exists()
    assert not [p for p in (work / "scratch").iterdir() if p.name.startswith(".")]


def test_the_tumour_can_come_from_a_label_map(review, sample_paths):
    driver, _, _, _ = review
    _type(driver, "mask-path", str(sample_paths["lung2_tumour"]))
    _click(driver, "use-mask")
    text = _wait(lambda: "from the mask's centre" in (t := driver.find_element(
        By.ID, "point").text) and t, 20, "the point from the mask")
    placed = [float(v) for v in text.split(":")[1].split(",")]
    assert np.allclose(placed, TUMOUR_RAS, atol=0.6), placed
