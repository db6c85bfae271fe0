"""``osteo-node outbox list`` shows each destination's protocol (issue 14, DICOMweb)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from osteo_node.cli.main import main
from osteo_node.config import load_settings
from osteo_node.outbox import store
from osteo_node.outbox.policy import RetryPolicy
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.outbox.objects import secondary_capture


def test_outbox_list_shows_the_protocol(
    tmp_path: Path, ct_small: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken-value\n")
    cfg = {
        "dicom": {"allowed_callers": ["STORESCU"]},
        "storage": {"spool_dir": str(tmp_path / "spool"), "outbox_dir": str(tmp_path / "outbox"),
                    "database_url": f"sqlite:///{tmp_path / 'node.db'}"},
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242},
            {"name": "web", "protocol": "dicomweb", "url": "https://pacs.example.org/dicom-web",
             "auth": {"type": "bearer", "token_file": str(token)}},
        ],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path, env={})
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, settings.storage.outbox_dir, [sc], settings.destinations)
    for item in store.claim_due(engine, settings.storage.outbox_dir, ["web"], store.utcnow()):
        store.mark_failed_attempt(engine, item, store.utcnow(), RetryPolicy(),
                                  "credentials rejected by pacs.example.org (HTTP 401 "
                                  "Unauthorized)", status=401, permanent=True)
    engine.dispose()

    assert main(["outbox", "--config", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert "pacs: pending 1  [dimse PACS@127.0.0.1:4242]" in out
    assert "web: failed 1  [dicomweb https://pacs.example.org/dicom-web]" in out
    assert "-> web (dicomweb)" in out and "-> pacs (dimse)" in out
    assert "credentials rejected by pacs.example.org (HTTP 401 Unauthorized)" in out
    assert "t0ken-value" not in out

    assert main(["outbox", "--config", str(path), "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["destinations"] == {
        "pacs": {"protocol": "dimse", "endpoint": "PACS@127.0.0.1:4242"},
        "web": {"protocol": "dicomweb", "endpoint": "https://pacs.example.org/dicom-web"},
    }
    assert {i["destination"]: i["protocol"] for i in data["items"]} == {
        "pacs": "dimse", "web": "dicomweb"}
