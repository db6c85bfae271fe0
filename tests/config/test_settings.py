from __future__ import annotations

from pathlib import Path

import pytest

from osteo_node.cli.main import main
from osteo_node.config import ConfigError, load_settings, settings_from_mapping
from osteo_node.config.settings import apply_env_overrides
from osteo_node.outbox.policy import Destination, RetryPolicy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "osteo_node.example.yaml"


def test_example_config_loads(tmp_path: Path) -> None:
    s = load_settings(EXAMPLE, env={}, base=tmp_path)
    assert s.dicom.ae_title == "OSTEO_NODE"
    assert s.dicom.bind_address == "127.0.0.1"
    assert s.dicom.tls is None
    assert s.storage.spool_dir == tmp_path / "var" / "spool"
    assert s.storage.database_url == f"sqlite:///{tmp_path / 'var' / 'osteo_node.db'}"
    assert s.dicom.caller_permitted("STORESCU", "127.0.0.1")
    assert not s.dicom.caller_permitted("STORESCU", "10.1.2.3")  # pinned to its host
    assert s.dicom.check_called_ae_title
    assert s.dicom.association_request_timeout_s == 5
    assert s.dicom.pre_association_per_peer == 4
    assert s.dicom.caller_permitted("PACS", "127.0.0.1")
    assert not s.dicom.caller_permitted("PACS", "10.1.2.3")
    assert not s.dicom.caller_permitted("OTHER", "127.0.0.1")
    assert isinstance(s.destinations[0], Destination)
    assert s.destinations[0].kinds == frozenset({"sr", "seg", "sc", "kos"})
    assert isinstance(s.retry, RetryPolicy) and s.retry.max_attempts == 10


def test_env_overrides(tmp_path: Path) -> None:
    env = {"OSTEO_NODE__DICOM__PORT": "11113",
           "OSTEO_NODE__DICOM__ACCEPTED_MODALITIES": "[CT, MR]",
           "OSTEO_NODE__QUEUE__WORKERS": "3", "UNRELATED": "x"}
    s = load_settings(EXAMPLE, env=env, base=tmp_path)
    assert s.dicom.port == 11113
    assert s.dicom.accepted_modalities == ("CT", "MR")
    assert s.queue.workers == 3


def test_env_override_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(EXAMPLE, env={"OSTEO_NODE__DICOM__PORT": "70000"}, base=tmp_path)
    assert err.value.problems == ["dicom.port: must be in 1..65535 (got 70000)"]


def test_all_problems_reported_with_paths(tmp_path: Path) -> None:
    raw = {
        "dicom": {"ae_title": "THIS_TITLE_IS_FAR_TOO_LONG", "port": "x", "bind_address": "nope",
                  "allowed_callers": [{"hosts": ["1.2.3.4"]}],
                  "tls": {"enabled": True, "cert_file": str(tmp_path / "missing.crt")},
                  "accepted_modalities": ["CT", "XX"], "colour": "blue"},
        "queue": {"workers": 0},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 1,
                          "send": ["sr", "pdf"]}],
        "retry": {"base_delay_seconds": 10, "max_delay_seconds": 1},
        "surprise": 1,
    }
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(raw, tmp_path)
    text = "\n".join(err.value.problems)
    for expected in ("dicom.ae_title: AE title 'THIS_TITLE_IS_FAR_TOO_LONG' is longer",
                     "dicom.port: must be an integer", "dicom.bind_address:",
                     "dicom.allowed_callers[0].ae_title: is required",
                     "dicom.tls.cert_file: file", "dicom.tls.key_file: is required",
                     "dicom.accepted_modalities: unknown modality ['XX']",
                     "dicom.colour: unknown setting", "queue.workers: must be in 1..64",
                     "destinations[0]: destination 'pacs': unknown result kind(s) ['pdf']",
                     "retry: retry max_delay_s must be >= base_delay_s",
                     "surprise: unknown setting"):
        assert expected in text, f"missing {expected!r} in:\n{text}"


def test_env_override_builds_nested_sections() -> None:
    out = apply_env_overrides({"dicom": {"port": 1}}, {"OSTEO_NODE__TLS_X__A__B": "true"})
    assert out == {"dicom": {"port": 1}, "tls_x": {"a": {"b": True}}}


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(EXAMPLE, env={}, base=tmp_path)
    with pytest.raises(AttributeError):
        s.dicom.port = 1  # type: ignore[misc]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: 0\n  allowed_callers: [A]\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    assert "dicom.port: must be in 1..65535 (got 0)" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_destination_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    raw = {"dicom": {"allowed_callers": ["A"]},
           "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "pacs.local",
                             "port": 2762, "tls": {"ca_file": "ca.crt",
                                                   "server_hostname": "pacs.example.org"}}]}
    d = settings_from_mapping(raw, tmp_path).destinations[0]
    assert d.tls is not None and d.tls.ca_file == ca
    assert d.tls.server_hostname == "pacs.example.org" and d.tls.check_hostname
    raw["destinations"][0]["tls"] = {"cert_file": "ca.crt"}  # key missing
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(raw, tmp_path)
    assert "destinations[0].tls: TLS cert_file and key_file must be given together" in \
        err.value.problems


def test_results_section_validates_uid_root(tmp_path: Path) -> None:
    dicom = {"allowed_callers": ["STORESCU"]}
    ok = settings_from_mapping(
        {"dicom": dicom, "results": {"uid_root": "1.2.826.0.1.3680043.10.999"}}, tmp_path)
    assert ok.results.uid_root == "1.2.826.0.1.3680043.10.999" and ok.results.worklist
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(
            {"dicom": dicom, "results": {"uid_root": "1.2.x", "worklist": "yes"}}, tmp_path)
    text = str(err.value)
    assert "results.uid_root" in text and "results.worklist" in text
