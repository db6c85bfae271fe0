"""Issue 6, acceptance 3: the outbox delivers result objects to a real Orthanc (Debian package, in
a private network namespace); with Orthanc stopped it retries with backoff, and after Orthanc is
back everything is delivered exactly once with unchanged SOP Instance UIDs.

The objects are derived from the real CT series in ../shared/data (Secondary Captures of CT
slices and a Key Object Selection flagging them, in the CT's study); the lead re-runs the
delivery with the exporters' SR/SEG/SC/KOS.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid
from sqlalchemy import Engine

from osteo_node.outbox import store
from osteo_node.outbox.policy import RetryPolicy
from osteo_node.outbox.sender import OutboxSender, SenderSettings, Timeouts
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.integration.outbox_support import claimed_at, engine_fixture, wait_for  # noqa: F401
from tests.outbox.objects import key_object_selection, secondary_capture

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A CLI test run earlier in the session may have pointed structlog at its (now closed)
    captured stderr: start from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()

TIMEOUTS = Timeouts(connect=5, acse=10, dimse=30, network=30)


@pytest.fixture
def chest_ct(shared_data: Path) -> list[Path]:
    folder = shared_data / "ct" / "chest_ct_series" / "dicom"
    files = sorted(folder.glob("*.dcm"))
    if len(files) < 100:
        pytest.skip(f"chest CT series incomplete in {folder}")
    return [files[60], files[70], files[80]]


@pytest.fixture
def j2k_ct(shared_data: Path, tmp_path: Path) -> list[Path]:
    """Three of the real JPEG 2000 CT slices, with the empty Study/Series/SOP UIDs filled in
    (pixel data untouched)."""
    files = sorted((shared_data / "ct" / "totalseg_example" / "dicom").iterdir())[:3]
    study, series = generate_uid(), generate_uid()
    out = []
    for i, src in enumerate(files):
        ds = dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID  # empty in these files too
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        dst = tmp_path / f"j2k{i}.dcm"
        ds.save_as(dst, enforce_file_format=True)
        out.append(dst)
    return out


def _storescu(orthanc: OrthancServer, files: list[Path]) -> None:
    if shutil.which("storescu") is None:
        pytest.skip("dcmtk storescu not installed")
    res = subprocess.run(
        [
            "storescu",
            "-R",
            "-aec",
            orthanc.aet,
            orthanc.host,
            str(orthanc.dicom_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def _results(ct_files: list[Path], j2k_files: list[Path]) -> list[Dataset]:
    cts = [dcmread(p) for p in ct_files]
    sc_series = generate_uid()
    objs: list[Dataset] = [secondary_capture(ct, sc_series, i) for i, ct in enumerate(cts, 1)]
    objs.append(key_object_selection(cts))
    j2k = dcmread(j2k_files[0])
    objs.append(secondary_capture(j2k, generate_uid(), 1, transfer_syntax_uid=JPEG2000Lossless))
    return objs


def _study_sop_uids(orthanc: OrthancServer, study_uid: str) -> dict[str, set[str]]:
    """{modality: SOP Instance UIDs} of the Orthanc study with this Study Instance UID."""
    (study_id,) = [s for s in orthanc.studies() if orthanc.study_uid(s) == study_uid]
    out: dict[str, set[str]] = {}
    for series in orthanc.series_of(study_id):
        modality = series["MainDicomTags"].get("Modality", "")
        for inst in series["Instances"]:
            uid = orthanc.instance_tags(inst)["SOPInstanceUID"]
            out.setdefault(modality, set()).add(uid)
    return out


def test_results_reach_orthanc_in_the_source_study(
    orthanc: OrthancServer,
    engine: Engine,
    tmp_path: Path,
    chest_ct: list[Path],
    j2k_ct: list[Path],
) -> None:
    _storescu(orthanc, chest_ct)  # the source CT images are in the PACS
    objs = _results(chest_ct, j2k_ct)
    outbox = tmp_path / "outbox"
    dest = orthanc.destination()
    store.enqueue(engine, outbox, objs, [dest], job_id="job-orthanc")
    sender = OutboxSender(
        engine, outbox, [dest], RetryPolicy(), settings=SenderSettings(timeouts=TIMEOUTS)
    )

    report = sender.run_once()

    assert (report.sent, report.retrying, report.failed) == (len(objs), 0, 0)
    assert report.associations == 1
    assert orthanc.instance_count() == len(chest_ct) + len(objs)
    ct_study = dcmread(chest_ct[0]).StudyInstanceUID
    by_modality = _study_sop_uids(orthanc, ct_study)
    assert by_modality["CT"] == {dcmread(p).SOPInstanceUID for p in chest_ct}
    assert by_modality["OT"] == {o.SOPInstanceUID for o in objs[:3]}  # the secondary captures
    assert by_modality["KO"] == {objs[3].SOPInstanceUID}
    j2k_study = _study_sop_uids(orthanc, dcmread(j2k_ct[0]).StudyInstanceUID)
    assert objs[4].SOPInstanceUID in set().union(*j2k_study.values())
    # What Orthanc stored is the object from the outbox: same UIDs, same pixels, same syntax.
    (hit,) = orthanc.lookup(objs[4].SOPInstanceUID)
    stored = orthanc.fetch_instance(hit["ID"])
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert stored.SOPInstanceUID == objs[4].SOPInstanceUID
    assert (stored.pixel_array == objs[4].pixel_array).all()
    assert sorted(orthanc.received_sop_uids()) == sorted(
        [*(dcmread(p).SOPInstanceUID for p in chest_ct), *(o.SOPInstanceUID for o in objs)]
    )


def test_outbox_retries_while_orthanc_is_down_then_delivers_exactly_once(
    orthanc: OrthancServer,
    engine: Engine,
    tmp_path: Path,
    chest_ct: list[Path],
    j2k_ct: list[Path],
) -> None:
    objs = _results(chest_ct, j2k_ct)
    uids = sorted(o.SOPInstanceUID for o in objs)
    outbox = tmp_path / "outbox"
    dest = orthanc.destination()
    policy = RetryPolicy(max_attempts=100, base_delay_s=0.4, max_delay_s=1.6, multiplier=2.0)
    orthanc.stop()
    assert not orthanc.running

    store.enqueue(engine, outbox, objs, [dest], job_id="job-retry")
    quick = SenderSettings(poll_interval_s=0.1, timeouts=TIMEOUTS)
    sender = OutboxSender(engine, outbox, [dest], policy, settings=quick)
    stop = threading.Event()
    thread = threading.Thread(target=sender.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        # Watch the items while the PACS is down: (attempts, claimed_at, next_attempt_at).
        seen: dict[str, dict[int, tuple[object, object]]] = {}

        def snapshot() -> bool:
            for it in store.list_items(engine):
                if it.state == "pending" and it.attempts > 0:
                    claimed = claimed_at(engine, it.id)
                    seen.setdefault(it.sop_instance_uid, {})[it.attempts] = (
                        claimed,
                        it.next_attempt_at,
                    )
            return all(len(seen.get(u, {})) >= 4 for u in uids)

        wait_for(snapshot, 60, "4 failed attempts per item while Orthanc is down")
        checked = 0
        for per_item in seen.values():
            attempts = sorted(per_item)
            for a, b in itertools.pairwise(attempts):
                if b == a + 1:
                    _, next_at = per_item[a]
                    claimed_b, _ = per_item[b]
                    assert claimed_b >= next_at  # type: ignore[operator]  # backoff respected
                    checked += 1
        assert checked >= len(uids)  # consecutive attempts were observed and compared
        for it in store.list_items(engine):
            assert it.state == "pending"
            assert it.last_error and "could not connect" in it.last_error
        assert orthanc.received_sop_uids() == []

        orthanc.start()
        wait_for(
            lambda: store.counts(engine) == {"orthanc": {"sent": len(objs)}},
            60,
            "delivery after Orthanc came back",
        )
    finally:
        stop.set()
        sender.wake()
        thread.join(30)
    assert not thread.is_alive()

    # Delivered once: one C-STORE per object reached Orthanc, same SOP Instance UIDs.
    assert sorted(orthanc.received_sop_uids()) == uids
    assert orthanc.instance_count() == len(objs)
    assert sorted(orthanc.sop_instance_uids()) == uids
    assert all(it.attempts >= 5 for it in store.list_items(engine))

    # A re-run enqueues the same objects again: no duplicate items, nothing re-sent.
    again = store.enqueue(engine, outbox, objs, [dest], job_id="job-retry")
    assert all(r.new_destinations == () for r in again)
    assert sender.run_once().claimed == 0
    assert sorted(orthanc.received_sop_uids()) == uids


def test_orthanc_listens_only_inside_its_private_namespace(orthanc: OrthancServer) -> None:
    assert orthanc.link is not None and orthanc.pid is not None
    ns = orthanc.link.ns

    def ss(*prefix: str) -> str:
        return subprocess.run(
            [*prefix, "ss", "-ltnpH"], capture_output=True, text=True, check=True
        ).stdout

    inside = [
        ln for ln in ss("ip", "netns", "exec", ns).splitlines() if f"pid={orthanc.pid}," in ln
    ]
    ports = {ln.split()[3].rsplit(":", 1)[1] for ln in inside}
    assert ports == {str(orthanc.dicom_port), str(orthanc.http_port)}
    assert not [ln for ln in ss().splitlines() if f"pid={orthanc.pid}," in ln]  # none on the host
    routes = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-4", "route"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Only the /30 to the host: no default route, so nothing beyond the host gets an answer.
    assert len(routes) == 1 and routes[0].startswith(f"{orthanc.link.ns_ip.rsplit('.', 1)[0]}.")
    assert "default" not in " ".join(routes)
