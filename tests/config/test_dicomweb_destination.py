"""Issue 14: a destination may be a DICOMweb STOW-RS endpoint (``protocol: dicomweb``); the
configuration is validated with ``path: reason`` problems, existing DIMSE configurations are
unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from osteo_node.cli.main import main
from osteo_node.config import ConfigError, settings_from_mapping
from osteo_node.outbox.dicomweb_settings import DicomWebTarget, WebAuth, WebTls
from osteo_node.outbox.policy import Destination


def _cfg(destinations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dicom": {"allowed_callers": ["STORESCU"]}, "destinations": destinations}


def _secret(tmp_path: Path, name: str, text: str = "s3cret\n") -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(0o600)
    return p


def _problems(raw: dict[str, Any], base: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(raw, base)
    return err.value.problems


def test_default_protocol_is_dimse_and_unchanged(tmp_path: Path) -> None:
    s = settings_from_mapping(
        _cfg([{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}]),
        tmp_path,
    )
    (d,) = s.destinations
    assert d == Destination("pacs", "PACS", "10.0.0.5", 104)
    assert d.protocol == "dimse" and d.dicomweb is None
    assert d.endpoint == "PACS@10.0.0.5:104"


def test_dicomweb_destination_with_basic_auth_and_tls(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "pacs.password")
    ca = _secret(tmp_path, "ca.crt", "not parsed at configuration\n")
    s = settings_from_mapping(
        _cfg([{
            "name": "pacs-web", "protocol": "dicomweb",
            "url": "https://pacs.example.org:8443/dicom-web/", "send": ["sr", "sc"],
            "auth": {"type": "basic", "username": "osteo", "password_file": "pacs.password"},
            "tls": {"ca_file": "ca.crt"},
        }]),
        tmp_path,
    )
    (d,) = s.destinations
    assert d.protocol == "dicomweb"
    assert d.kinds == frozenset({"sr", "sc"})
    assert d.dicomweb == DicomWebTarget(
        "https://pacs.example.org:8443/dicom-web",
        auth=WebAuth("basic", username="osteo", password_file=pw),
        tls=WebTls(ca_file=ca),
    )
    assert (d.host, d.port, d.ae_title) == ("pacs.example.org", 8443, "")
    assert d.endpoint == "https://pacs.example.org:8443/dicom-web"
    assert d.dicomweb.studies_url("1.2.3") == "https://pacs.example.org:8443/dicom-web/studies/1.2.3"


def test_dicomweb_bearer_and_no_auth(tmp_path: Path) -> None:
    tok = _secret(tmp_path, "token")
    s = settings_from_mapping(
        _cfg([
            {"name": "a", "protocol": "dicomweb", "url": "https://a.example/dicomweb",
             "auth": {"type": "bearer", "token_file": str(tok)}},
            {"name": "b", "protocol": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web"},
            {"name": "c", "protocol": "dicomweb", "url": "https://c.example/dw", "auth": "none",
             "tls": {"verify": False}},
        ]),
        tmp_path,
    )
    a, b, c = s.destinations
    assert a.dicomweb is not None and a.dicomweb.auth == WebAuth("bearer", token_file=tok)
    assert b.dicomweb is not None and b.dicomweb.auth == WebAuth() and b.port == 8042
    assert c.dicomweb is not None and c.dicomweb.tls == WebTls(verify=False)
    assert c.port == 443


def test_dicomweb_problems_are_reported_with_paths(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "pw")
    problems = _problems(
        _cfg([
            {"name": "w1", "protocol": "dicomweb"},
            {"name": "w2", "protocol": "dicomweb", "url": "ftp://x/dw"},
            {"name": "w3", "protocol": "dicomweb", "url": "https://u:p@x/dw"},
            {"name": "w4", "protocol": "dicomweb", "url": "https://x/dw",
             "auth": {"type": "basic", "password_file": str(pw)}},
            {"name": "w5", "protocol": "dicomweb", "url": "https://x/dw",
             "auth": {"type": "bearer", "token_file": str(tmp_path / "missing")}},
            {"name": "w6", "protocol": "dicomweb", "url": "https://x/dw", "ae_title": "PACS",
             "port": 104, "auth": {"type": "digest"}},
            {"name": "w7", "protocol": "dicomweb", "url": "http://x/dw",
             "auth": {"type": "basic", "username": "u", "password_file": str(pw)}},
            {"name": "w8", "protocol": "dicomweb", "url": "http://x/dw",
             "tls": {"ca_file": str(pw)}},
            {"name": "w9", "protocol": "dicomweb", "url": "https://x/dw",
             "tls": {"cert_file": str(pw), "verfy": True}},
            {"name": "d1", "ae_title": "PACS", "host": "h", "port": 104,
             "url": "https://x/dw"},
            {"name": "d2", "protocol": "dicom", "ae_title": "PACS", "host": "h", "port": 104},
        ]),
        tmp_path,
    )
    assert problems == [
        "destinations[0].url: is required",
        "destinations[1].url: url must be an http:// or https:// URL with a host, "
        "got 'ftp://x/dw'",
        "destinations[2].url: url must not hold credentials (user:password@); use auth",
        "destinations[3].auth.username: is required with type basic",
        f"destinations[4].auth.token_file: file {tmp_path / 'missing'} does not exist "
        f"(got '{tmp_path / 'missing'}')",
        "destinations[5].auth.type: must be one of none, basic, bearer (got 'digest')",
        "destinations[5].ae_title: not used with protocol: dicomweb (the url says where)",
        "destinations[5].port: not used with protocol: dicomweb (the url says where)",
        "destinations[6].url: basic credentials over http:// would cross the network in clear "
        "text; use https:// (or set auth.allow_plain_http: true on a private link)",
        "destinations[7].tls: only used with an https:// url",
        "destinations[8].tls.verfy: unknown setting (typo?)",
        "destinations[8].tls: TLS cert_file and key_file must be given together",
        "destinations[9].url: only used with protocol: dicomweb",
        "destinations[10].protocol: must be one of dimse, dicomweb (got 'dicom')",
    ]


def test_plain_http_credentials_only_when_allowed(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "pw")
    s = settings_from_mapping(
        _cfg([{"name": "lab", "protocol": "dicomweb", "url": "http://10.1.1.1/dw",
                           "auth": {"type": "basic", "username": "u", "password_file": str(pw),
                                    "allow_plain_http": True}}]),
        tmp_path,
    )
    (d,) = s.destinations
    assert d.dicomweb is not None and d.dicomweb.allow_plain_http_auth


def test_secret_is_read_at_request_time_and_never_shown(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "pw", "first\n")
    auth = WebAuth("basic", username="osteo", password_file=pw)
    first = auth.credentials()
    assert first.authorization == "Basic b3N0ZW86Zmlyc3Q="  # base64("osteo:first")
    assert "first" not in repr(first) and "b3N0ZW86" not in repr(first)
    pw.write_text("second\n")
    second = auth.credentials()
    assert second.fingerprint != first.fingerprint  # a rotated password is noticed
    pw.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        auth.credentials()
    tok = _secret(tmp_path, "tok", "abc.def\n")
    assert WebAuth("bearer", token_file=tok).credentials().authorization == "Bearer abc.def"


def test_check_config_shows_protocol_and_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _secret(tmp_path, "tok")
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        "dicom: {allowed_callers: [STORESCU]}\n"
        "destinations:\n"
        "  - {name: pacs, ae_title: PACS, host: 127.0.0.1, port: 4242}\n"
        "  - name: web\n"
        "    protocol: dicomweb\n"
        "    url: https://pacs.example.org/dicom-web\n"
        f"    auth: {{type: bearer, token_file: {tok}}}\n"
    )
    assert main(["check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "pacs=dimse:PACS@127.0.0.1:4242" in out
    assert "web=dicomweb:https://pacs.example.org/dicom-web" in out
    assert "s3cret" not in out


def test_dicomweb_destination_survives_the_trip_to_the_outbox_process(tmp_path: Path) -> None:
    """serve hands the settings to its children by pickling (multiprocessing, spawn); the
    rejection-note routing copies destinations with more kinds (dataclasses.replace)."""
    import pickle
    from dataclasses import replace

    pw = _secret(tmp_path, "pw")
    s = settings_from_mapping(_cfg([{
        "name": "web", "protocol": "dicomweb", "url": "https://pacs.example.org/dicom-web",
        "send": ["sr"], "auth": {"type": "basic", "username": "u", "password_file": str(pw)},
    }]), tmp_path)
    assert pickle.loads(pickle.dumps(s)) == s
    (d,) = s.destinations
    wider = replace(d, kinds=d.kinds | {"kos"})
    assert wider.protocol == "dicomweb" and wider.kinds == frozenset({"sr", "kos"})
