"""Orthanc with its DICOMweb plugin (Debian package ``orthanc-dicomweb``) as a STOW-RS
destination in tests: the namespaced Orthanc of :mod:`tests.integration.orthanc` (HTTP basic
auth with a per-run random password, reachable only from this host), the plugin loaded, and
optionally HTTPS with a certificate made by the test (openssl).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.orthanc import OrthancServer, PrivateLink
from tests.integration.orthanc import unavailable_reason as orthanc_unavailable_reason

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web"


def unavailable_reason() -> str | None:
    """Why the DICOMweb plugin cannot be loaded here, or None."""
    if not DICOMWEB_PLUGIN.is_file():
        return (f"Orthanc DICOMweb plugin not installed ({DICOMWEB_PLUGIN}; "
                "Debian package 'orthanc-dicomweb')")
    return None


def dicomweb_config(**extra: Any) -> dict[str, Any]:
    """Orthanc configuration keys that load the DICOMweb plugin at ``/dicom-web/``."""
    return {
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT + "/", "EnableWado": True},
        **extra,
    }


def make_tls_files(folder: Path, server_ip: str) -> dict[str, Path]:
    """A test CA, a server certificate for ``server_ip`` and a client certificate signed by it,
    and an unrelated CA (openssl)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other_ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=osteo test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
    (folder / "server.ext").write_text(f"subjectAltName=IP:{server_ip}\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=osteo test {name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return {p.name: p for p in folder.iterdir()}


def new_server(workdir: Path, **kwargs: Any) -> OrthancServer:
    """A not yet started DICOMweb Orthanc with its private link made (skips when either is
    unavailable here)."""
    reason = orthanc_unavailable_reason() or unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    extra = dicomweb_config(**kwargs.pop("extra_config", {}))
    server = OrthancServer(workdir, extra_config=extra, **kwargs)
    try:
        server.link = PrivateLink.create()
    except OSError as exc:
        pytest.skip(f"cannot create a private network namespace: {exc}")
    return server


@pytest.fixture(name="orthanc_web")
def orthanc_web_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A running Orthanc with the DICOMweb plugin at ``{url}/dicom-web`` (HTTP basic auth:
    ``user`` / ``password``), reachable only from this host."""
    server = new_server(tmp_path_factory.mktemp("orthanc-web"))
    try:
        server.start()
        yield server
    finally:
        server.close()
