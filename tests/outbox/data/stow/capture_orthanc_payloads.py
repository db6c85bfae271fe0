"""Re-capture the Orthanc STOW-RS responses in this folder (run as root, from the repository:
``.venv/bin/python -m tests.outbox.data.stow.capture_orthanc_payloads``).

Orthanc 1.10.1 with its DICOMweb plugin 1.7 (Debian bookworm packages ``orthanc``,
``orthanc-dicomweb``) in a private network namespace (tests/integration/orthanc.py). Two
Secondary Captures are made from pydicom's CT_small and MR_small (two studies); ``uids.json``
records their SOP Instance UIDs. Orthanc's answers, as received (status in the file name):
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.integration.orthanc import OrthancServer, PrivateLink
from tests.integration.orthanc_dicomweb import dicomweb_config
from tests.outbox.objects import secondary_capture

HERE = Path(__file__).resolve().parent


def _part10(ds: object) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # type: ignore[attr-defined]
    return buf.getvalue()


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        srv = OrthancServer(Path(tmp), extra_config=dicomweb_config())
        srv.link = PrivateLink.create()
        try:
            srv.start()
            ct = secondary_capture(dcmread(get_testdata_file("CT_small.dcm")), generate_uid(), 1)
            mr = secondary_capture(dcmread(get_testdata_file("MR_small.dcm")), generate_uid(), 1)
            a, b = _part10(ct), _part10(mr)
            (HERE / "uids.json").write_text(json.dumps({
                "ct_sc": ct.SOPInstanceUID, "ct_study": ct.StudyInstanceUID,
                "mr_sc": mr.SOPInstanceUID, "mr_study": mr.StudyInstanceUID}, indent=2) + "\n")

            def stow(name: str, parts: list[bytes], study: str | None = None,
                     accept: str = "application/dicom+json") -> None:
                bnd = uuid.uuid4().hex
                body = b"".join(b"--" + bnd.encode() + b"\r\nContent-Type: application/dicom"
                                b"\r\n\r\n" + p + b"\r\n" for p in parts)
                body += b"--" + bnd.encode() + b"--\r\n"
                url = srv.url + "/dicom-web/studies" + (f"/{study}" if study else "")
                r = httpx.post(url, content=body, auth=(srv.user, srv.password), headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={bnd}',
                    "Accept": accept})
                ext = "xml" if "xml" in accept else "json"
                (HERE / f"orthanc_{name}_{r.status_code}.{ext}").write_bytes(r.content)

            stow("stored", [a], ct.StudyInstanceUID)
            stow("stored", [a], ct.StudyInstanceUID, accept="application/dicom+xml")
            stow("other_study", [a, b], ct.StudyInstanceUID)   # b is of another study
            stow("all_other_study", [b], ct.StudyInstanceUID)
            stow("garbage", [b"not dicom"])
            stow("garbage_and_stored", [a, b"not dicom"])
        finally:
            srv.close()


if __name__ == "__main__":
    main()
