"""The FLS web application in a real headless Chromium (Debian's ``chromium`` driven by Selenium).

A real CT (the low-density TPTBox lumbar CT written as an axial DICOM series) goes storescu ->
node -> analysis -> results in Orthanc and a row on the worklist; then, with the node serving the
web application on 127.0.0.1, a browser: is refused without signing in, signs in, sees the row,
filters the worklist, opens the study page with the overlay image the node sent, changes the
status, and signs out; a form posted without its CSRF token is refused. The study's DXA and
clinical-risk assessment (``osteo-node assess --worklist``) is on its page. Screenshots of the
worklist and the study page are written to test-artifacts/ (docs/images has copies looked at by
eye).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from osteo_node.store.db import make_engine
from osteo_node.web import users
from osteo_node.worklist import store
from tests.integration.ct_series import Identity
from tests.integration.e2e_support import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    run_series_through_node,
    start_node_for,
)
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.integration.test_e2e_ct import TPTBOX_CT, _axial_series
from tests.node.support import free_port, wait_until

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="Debian's chromium and chromium-driver are not installed"),
]

PASSWORD = "fls-nurse-password"


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage", "--no-first-run", "--proxy-server=direct://"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(DRIVER)), options=opts)


def _nurse_session(browser: Any, base: str, engine: Any, artifacts_dir: Path) -> None:
    """Sign in, see the row, filter, open the study page with its overlay, change the status,
    sign out."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{base}/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.NAME, "name").send_keys("nurse")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_until(lambda: "1 studies" in browser.page_source, 20, what="worklist")
    assert PATIENT_ID in browser.page_source
    browser.save_screenshot(str(artifacts_dir / "web_worklist.png"))
    # filter: referred -> nothing; back to new -> the row
    Select(browser.find_element(By.NAME, "status")).select_by_value("referred")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_until(lambda: "No study matches" in browser.page_source, 20, what="filtered")
    browser.get(f"{base}/?status=new")
    browser.find_element(By.LINK_TEXT, PATIENT_NAME.replace("^", " ")).click()
    wait_until(lambda: "Follow-up" in browser.page_source, 20, what="study page")
    img = browser.find_element(By.CSS_SELECTOR, "img.overlay")
    wait_until(lambda: browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", img), 20,
        what="overlay image loaded")
    browser.save_screenshot(str(artifacts_dir / "web_study_page.png"))
    # the stored DXA / clinical-risk assessment, ClinRisk's disclaimer once
    section = browser.find_element(By.CSS_SELECTOR, "section.assessment")
    assert "forearm-only osteoporosis" in section.text and "high risk" in section.text
    assert browser.page_source.count("wrong patients being given the wrong treatment") == 1
    browser.execute_script("arguments[0].scrollIntoView()", section)
    browser.save_screenshot(str(artifacts_dir / "web_study_risk.png"))
    Select(browser.find_element(By.NAME, "status")).select_by_value("referred")
    browser.find_element(By.NAME, "note").send_keys("DXA booked")
    browser.find_element(By.CSS_SELECTOR, "form.status button").click()
    wait_until(lambda: "set by nurse" in browser.page_source, 20, what="status saved")
    row = store.list_rows(engine)[0]
    assert (row.status, row.status_changed_by, row.status_note) == ("referred", "nurse",
                                                                    "DXA booked")
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_until(lambda: browser.current_url.endswith("/login"), 20, what="signed out")
    browser.get(f"{base}/")
    assert browser.current_url.endswith("/login")


def _store_assessment(tmp_path: Path, study_uid: str) -> None:
    """``osteo-node assess --worklist`` for the study: a woman on long-term glucocorticoids,
    osteoporotic at the 33 % radius only."""

    from osteo_node.cli.main import main
    from tests.clinical import fhir_data as fd

    bundle, dxa = fd.steroid_user_inputs(tmp_path)
    assert main(["assess", "--fhir", str(bundle), "--dxa", str(dxa), "--json",
                 str(tmp_path / "assessment.json"), "--worklist", "--by", "nurse",
                 "--study-uid", study_uid, "--db",
                 f"sqlite:///{tmp_path / 'node' / 'node.db'}"]) == 0


def test_fls_nurse_works_the_worklist_in_a_real_browser(
        tmp_path: Path, shared_data: Path, artifacts_dir: Path,
        orthanc: OrthancServer) -> None:
    files, _ = _axial_series(shared_data / TPTBOX_CT, shared_data, tmp_path / "sent",
                             Identity(PATIENT_NAME, PATIENT_ID, BIRTH_DATE))
    web_port = free_port()
    web = {"enabled": True, "bind_address": "127.0.0.1", "port": web_port}
    study_uid, _, _ = run_series_through_node(tmp_path, orthanc, files,
                                              expect=("SR", "SEG", "OT"), web=web)
    engine = make_engine(f"sqlite:///{tmp_path / 'node' / 'node.db'}")
    rows = store.list_rows(engine)
    assert [r.study_instance_uid for r in rows] == [study_uid], "the study is not on the worklist"
    users.add_user(engine, "nurse", "editor", PASSWORD)
    _store_assessment(tmp_path, study_uid)

    node, _ = start_node_for(tmp_path, orthanc, web)  # the node again, serving the web app
    base = f"http://127.0.0.1:{web_port}"
    browser = None
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 60, what="web application")
        # a form posted without its CSRF token is refused, unauthenticated pages too
        assert httpx.post(f"{base}/rows/{rows[0].id}/status",
                          data={"status": "referred"}).status_code in (401, 403)
        browser = _browser()
        _nurse_session(browser, base, engine, artifacts_dir)
    finally:
        if browser is not None:
            browser.quit()
        assert node.stop() == 0
        engine.dispose()
