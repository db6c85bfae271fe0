"""The DICOM listener against real dcmtk peers (and pynetdicom for inputs dcmtk will not send).

All on 127.0.0.1, free ports, polling. Acceptance points 1 and 4 of issue 6.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, generate_uid
from pynetdicom import AE as PyAE
from sqlalchemy import func, select

from osteo_node.store.index import instances, series
from tests.node.support import (
    dataset_bytes,
    echoscu,
    fill_uids,
    free_port,
    node_config,
    running_listener,
    storescu,
)

pytestmark = [pytest.mark.integration]

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")


@pytest.fixture
def chest_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))


@pytest.fixture
def totalseg_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "ct/totalseg_example/dicom").iterdir())
    assert len(files) == 20
    return files


def _count(listener: Any, table: Any) -> int:
    """Rows in ``table`` once the listener's background index writer has caught up."""
    assert listener.indexer.flush(30), "index writer did not catch up"
    with listener.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _spool_files(root: Path) -> list[Path]:
    """Filed instances; asserts that the pre-created slots hold nothing (no partial file)."""
    slots = root / ".slots"
    if slots.is_dir():
        assert all(p.stat().st_size == 0 for p in slots.rglob("*") if p.is_file()), \
            "a slot holds data"  # slots lie in .slots/<node name>/
    return sorted(p for p in root.rglob("*.dcm") if p.is_file() and slots not in p.parents)


@needs_dcmtk
def test_echo_and_calling_ae_policy(tmp_path: Path, log_stream: io.StringIO) -> None:
    port = free_port()
    cfg = node_config(tmp_path, port)
    cfg["dicom"]["allowed_callers"] = ["STORESCU", {"ae_title": "PINNED", "hosts": ["10.9.9.9"]}]
    with running_listener(cfg, tmp_path):
        ok = echoscu(port)
        assert ok.returncode == 0, ok.stderr
        assert "Received Echo Response (Success)" in ok.stdout + ok.stderr
        intruder = echoscu(port, calling="INTRUDER")
        assert intruder.returncode != 0
        assert "Calling AE Title Not Recognized" in intruder.stdout + intruder.stderr
        pinned = echoscu(port, calling="PINNED")  # right AE title, wrong host
        assert pinned.returncode != 0
        assert "Calling AE Title Not Recognized" in pinned.stdout + pinned.stderr
        assert echoscu(port).returncode == 0  # still serving
    text = log_stream.getvalue()
    assert '"calling_ae": "INTRUDER"' in text and "association rejected" in text


@needs_dcmtk
def test_called_ae_title_checked_when_configured(tmp_path: Path) -> None:
    """Issue 16 (11): with dicom.check_called_ae_title an association addressed to another AE
    title is refused; without it (the default) it is served."""
    port = free_port()
    cfg = node_config(tmp_path, port)
    cfg["dicom"]["check_called_ae_title"] = True
    with running_listener(cfg, tmp_path):
        assert echoscu(port).returncode == 0
        wrong = echoscu(port, "-aec", "SOMEONE_ELSE")
        assert wrong.returncode != 0
        assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
    port = free_port()
    with running_listener(node_config(tmp_path / "open", port), tmp_path / "open"):
        assert echoscu(port, "-aec", "SOMEONE_ELSE").returncode == 0


@needs_dcmtk
def test_real_jpeg2000_slices_stored_byte_identical(tmp_path: Path, totalseg_files: list[Path]
                                                    ) -> None:
    """"Identical" means: the stored file's data set (everything after its file meta group)
    equals, byte for byte, the data set storescu sent, which storescu sends unchanged from the
    source file when the file's transfer syntax (JPEG 2000 lossless) is accepted; and the
    stored file meta names that same transfer syntax and SOP instance."""
    sent = fill_uids(totalseg_files, tmp_path / "sent")
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        out = storescu(port, sent, "-xv")  # propose JPEG 2000 lossless: sent as in the file
        assert out.returncode == 0, out.output[-3000:]
        assert sorted(out.acknowledged) == sorted(sent)
        assert _count(listener, instances) == 20
        assert _count(listener, series) == 1
        for f in sent:
            ds = dcmread(f, stop_before_pixels=True)
            stored = (tmp_path / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID
                      / f"{ds.SOPInstanceUID}.dcm")
            assert dataset_bytes(stored) == dataset_bytes(f)
            meta = dcmread(stored, stop_before_pixels=True).file_meta
            assert meta.TransferSyntaxUID == JPEG2000Lossless
            assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert meta.SourceApplicationEntityTitle.strip() == "STORESCU"
        # The pixel data decodes to the same image as the source.
        a, b = dcmread(sent[0]), dcmread(next((tmp_path / "spool").rglob(
            f"{dcmread(sent[0]).SOPInstanceUID}.dcm")))
        assert (a.pixel_array == b.pixel_array).all()
        # Sending the same instances again: success, stored once.
        mtimes = {p: p.stat().st_mtime_ns for p in _spool_files(tmp_path / "spool")}
        again = storescu(port, sent, "-xv")
        assert sorted(again.acknowledged) == sorted(sent)
        assert _count(listener, instances) == 20
        assert {p: p.stat().st_mtime_ns for p in _spool_files(tmp_path / "spool")} == mtimes


# (dcmtk encoder command, storescu proposal flag, transfer syntax UID)
TS_CASES = [
    (["dcmconv", "+te"], "-xe", "1.2.840.10008.1.2.1"),  # explicit VR little endian
    (["dcmconv", "+ti"], "-xi", "1.2.840.10008.1.2"),  # implicit VR little endian
    (["dcmconv", "+td"], "-xd", "1.2.840.10008.1.2.1.99"),  # deflated explicit VR LE
    (["dcmcrle"], "-xr", "1.2.840.10008.1.2.5"),  # RLE lossless
    (["dcmcjpeg", "+e1"], "-xs", "1.2.840.10008.1.2.4.70"),  # JPEG lossless SV1
    (["dcmcjpls"], "-xt", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
]


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)


@needs_dcmtk
def test_transfer_syntaxes_stored_as_sent(tmp_path: Path, chest_files: list[Path]) -> None:
    """A real slice encoded by dcmtk in each syntax is sent unchanged by storescu and stored
    with the identical data set bytes in that syntax (decodable to the original pixels where
    pydicom has a decoder)."""
    port = free_port()
    original = dcmread(chest_files[0]).pixel_array
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        for encoder, flag, ts in TS_CASES:
            plain = fill_uids(chest_files[:1], tmp_path / f"src{flag}")[0]
            f = plain.with_suffix(".enc.dcm")
            subprocess.run([*encoder, str(plain), str(f)], check=True, capture_output=True)
            assert dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
            out = storescu(port, [f], flag)
            assert out.acknowledged == [f], out.output[-2000:]
            stored = next((tmp_path / "spool").rglob(f"{dcmread(f).SOPInstanceUID}.dcm"))
            ds = dcmread(stored)
            assert ds.file_meta.TransferSyntaxUID == ts, flag
            if ts == "1.2.840.10008.1.2.1.99":
                # storescu pads the deflated stream to an even length on the wire (PDVs are
                # even): we keep the padded stream as received; the inflated data set is equal.
                sent_stream, kept = dataset_bytes(f), dataset_bytes(stored)
                assert kept[:len(sent_stream)] == sent_stream and len(kept) - len(sent_stream) <= 1
                assert _inflate(kept) == _inflate(sent_stream)
            else:
                assert dataset_bytes(stored) == dataset_bytes(f), flag
            if ts != "1.2.840.10008.1.2.4.80":  # no JPEG-LS decoder for pydicom installed
                assert (ds.pixel_array == original).all(), flag
        assert _count(listener, instances) == len(TS_CASES)


@needs_dcmtk
def test_dataset_without_pixel_data_refused(tmp_path: Path, chest_files: list[Path],
                                            log_stream: io.StringIO) -> None:
    bad = fill_uids(chest_files[:1], tmp_path / "bad")[0]
    ds = dcmread(bad)
    del ds.PixelData
    ds.save_as(bad, enforce_file_format=True)
    good = fill_uids(chest_files[1:2], tmp_path / "good")
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        out = storescu(port, [bad])
        assert out.acknowledged == []
        assert "DataSetDoesNotMatchSOPClass" in out.output, out.output[-2000:]  # 0xA900
        assert _count(listener, instances) == 0
        assert _spool_files(tmp_path / "spool") == []
        assert "image without pixel data" in log_stream.getvalue()
        assert echoscu(port).returncode == 0
        assert storescu(port, good).acknowledged == good


def _pynetdicom_send_raw(port: int, path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Send a file's bytes as they are (pynetdicom chunked mode: no decoding on our side)."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = PyAE(ae_title="PYSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="OSTEO_NODE")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status)
    finally:
        assoc.release()


def test_truncated_and_empty_uid_refused(tmp_path: Path, chest_files: list[Path],
                                         totalseg_files: list[Path], log_stream: io.StringIO,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good = fill_uids(chest_files[:1], tmp_path / "good")[0]
    truncated_native = tmp_path / "trunc_native.dcm"
    truncated_native.write_bytes(good.read_bytes()[:-100_000])
    j2k = fill_uids(totalseg_files[:1], tmp_path / "j2k")[0]
    truncated_j2k = tmp_path / "trunc_j2k.dcm"
    truncated_j2k.write_bytes(j2k.read_bytes()[:-5000])
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        assert _pynetdicom_send_raw(port, truncated_native, monkeypatch) == 0xC000
        assert _pynetdicom_send_raw(port, truncated_j2k, monkeypatch) == 0xC000
        # The real files as distributed: SOP Instance UID empty in the data set.
        assert _pynetdicom_send_raw(port, totalseg_files[0], monkeypatch) == 0xA900
        assert _count(listener, instances) == 0
        assert _spool_files(tmp_path / "spool") == []
        text = log_stream.getvalue()
        assert "dataset is truncated" in text
        assert "StudyInstanceUID is missing or empty" in text or \
            "SOPInstanceUID is missing or empty" in text
        # Still serving: the complete files go in.
        assert _pynetdicom_send_raw(port, good, monkeypatch) == 0x0000
        assert _pynetdicom_send_raw(port, j2k, monkeypatch) == 0x0000
        assert _count(listener, instances) == 2
        assert dataset_bytes(next((tmp_path / "spool").rglob(
            f"{dcmread(j2k).SOPInstanceUID}.dcm"))) == dataset_bytes(j2k)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "spool"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mnt)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_dcmtk
def test_disk_full_spool(tmp_path: Path, tiny_tmpfs: Path, chest_files: list[Path],
                         log_stream: io.StringIO) -> None:
    """A 1.6 MB tmpfs spool fills after two 0.5 MB slices: 0xA700, no partial file, and after
    space is added (remount) the same daemon stores again."""
    files = fill_uids(chest_files[:6], tmp_path / "sent")
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        out = storescu(port, files)
        assert 1 <= len(out.acknowledged) < len(files)
        assert "OutOfResources" in out.output, out.output[-2000:]  # 0xA700
        stored = _spool_files(tiny_tmpfs)
        assert len(stored) == len(out.acknowledged)  # no temp / partial files
        for f in out.acknowledged:
            sop = dcmread(f, stop_before_pixels=True).SOPInstanceUID
            on_disk = next(p for p in stored if p.name == f"{sop}.dcm")
            assert dcmread(on_disk).PixelData == dcmread(f).PixelData  # complete, readable
        assert _count(listener, instances) == len(out.acknowledged)
        assert "spool disk full" in log_stream.getvalue()
        assert echoscu(port).returncode == 0
        subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_tmpfs)], check=True)
        rest = [f for f in files if f not in out.acknowledged]
        assert storescu(port, rest).acknowledged == rest
        assert _count(listener, instances) == len(files)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path / "tls"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name in ("node", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=d)
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@needs_dcmtk
def test_tls_association_with_dcmtk(tmp_path: Path, tls_files: dict[str, Path],
                                    chest_files: list[Path]) -> None:
    """Mutual TLS: dcmtk echoscu/storescu +tls with a client certificate signed by our CA."""
    port = free_port()
    cfg = node_config(tmp_path, port)
    cfg["dicom"]["tls"] = {"enabled": True, "cert_file": str(tls_files["node_crt"]),
                           "key_file": str(tls_files["node_key"]),
                           "ca_file": str(tls_files["ca_crt"]), "require_client_cert": True}
    tls = ("+tls", str(tls_files["client_key"]), str(tls_files["client_crt"]),
           "+cf", str(tls_files["ca_crt"]))
    files = fill_uids(chest_files[:2], tmp_path / "sent")
    with running_listener(cfg, tmp_path) as listener:
        ok = echoscu(port, *tls)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "Received Echo Response (Success)" in ok.stdout + ok.stderr
        assert storescu(port, files, *tls).acknowledged == files
        assert _count(listener, instances) == 2
        plain = echoscu(port)  # no TLS: the handshake fails, nothing is served
        assert plain.returncode != 0
        no_cert = echoscu(port, "+tla", "+cf", str(tls_files["ca_crt"]))  # TLS without a cert
        assert no_cert.returncode != 0
        assert echoscu(port, *tls).returncode == 0


def test_unknown_modality_refused(tmp_path: Path, chest_files: list[Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    f = fill_uids(chest_files[:1], tmp_path / "mr")[0]
    ds = dcmread(f)
    ds.Modality = "PT"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(f, enforce_file_format=True)
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        assert _pynetdicom_send_raw(port, f, monkeypatch) == 0xC000
        assert _count(listener, instances) == 0


@needs_dcmtk
def test_four_concurrent_senders_lose_nothing(tmp_path: Path, chest_files: list[Path]) -> None:
    files = fill_uids(chest_files[:40], tmp_path / "sent")
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", "OSTEO_NODE",
                                   "127.0.0.1", str(port), *map(str, files[i::4])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(4)]
        codes = [p.wait(120) for p in procs]
        assert codes == [0, 0, 0, 0], [p.stderr.read()[-1500:] for p in procs if p.stderr]
        assert _count(listener, instances) == 40
        assert _count(listener, series) == 1
        assert len(_spool_files(tmp_path / "spool")) == 40


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from tests.outbox.postgres import TempPostgres, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = TempPostgres.start()
    yield server.url
    server.stop()


@needs_dcmtk
def test_listener_on_postgresql(tmp_path: Path, totalseg_files: list[Path],
                                postgres_url: str) -> None:
    """The same ingest with the index in PostgreSQL instead of SQLite."""
    sent = fill_uids(totalseg_files, tmp_path / "sent")
    port = free_port()
    cfg = node_config(tmp_path, port)
    cfg["storage"]["database_url"] = postgres_url
    with running_listener(cfg, tmp_path) as listener:
        out = storescu(port, sent, "-xv")
        assert sorted(out.acknowledged) == sorted(sent), out.output[-2000:]
        again = storescu(port, sent[:3], "-xv")
        assert sorted(again.acknowledged) == sorted(sent[:3])
        assert _count(listener, instances) == 20
        assert _count(listener, series) == 1
