"""The persisted outbox: enqueue (durable file, routing by kind, idempotence) and the item state
machine, against a real SQLite database."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, func, select

from osteo_node.outbox import store
from osteo_node.outbox.files import OutboxInputError
from osteo_node.outbox.policy import Destination, RetryPolicy
from osteo_node.outbox.tables import outbox_items, outbox_objects
from tests.outbox.objects import key_object_selection, secondary_capture

T0 = datetime(2026, 1, 1, 12, 0, 0)
PACS = Destination("pacs", "PACS", "127.0.0.1", 11112)
VIEWER = Destination("viewer", "VIEWER", "127.0.0.1", 11113, kinds=frozenset({"sc"}))


def _n_items(engine: Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(outbox_items)).scalar_one())


def test_enqueue_writes_part10_file_and_routes_by_kind(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    kos = key_object_selection([ct_small])
    res = store.enqueue(engine, outbox_dir, [sc, kos], [PACS, VIEWER], job_id=7, now=T0)

    assert [r.kind for r in res] == ["sc", "kos"]  # derived from the SOP Class UID
    assert res[0].new_destinations == ("pacs", "viewer")
    assert res[1].new_destinations == ("pacs",)  # the viewer takes only secondary captures
    for r, ds in zip(res, [sc, kos], strict=True):
        assert r.path is not None and r.path.is_file()
        assert r.path.is_relative_to(outbox_dir)
        back = dcmread(r.path)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert back.StudyInstanceUID == ct_small.StudyInstanceUID
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert not list(outbox_dir.rglob("*.tmp"))
    items = store.list_items(engine)
    assert {(i.sop_instance_uid, i.destination, i.state, i.job_id) for i in items} == {
        (sc.SOPInstanceUID, "pacs", "pending", "7"),
        (sc.SOPInstanceUID, "viewer", "pending", "7"),
        (kos.SOPInstanceUID, "pacs", "pending", "7"),
    }


def test_enqueue_explicit_kind_overrides_and_none_taken(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    (r,) = store.enqueue(engine, outbox_dir, [sc], [VIEWER], kind="sr", now=T0)
    assert r.kind == "sr" and r.path is None and r.new_destinations == ()
    assert _n_items(engine) == 0 and not outbox_dir.exists()


def test_enqueue_is_idempotent_per_uid_and_destination(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)
    (again,) = store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)
    assert again.new_destinations == () and again.existing_destinations == ("pacs",)
    assert _n_items(engine) == 1
    # A destination added later gets its own item; the object row is not duplicated.
    (more,) = store.enqueue(engine, outbox_dir, [sc], [PACS, VIEWER], now=T0)
    assert more.new_destinations == ("viewer",)
    assert _n_items(engine) == 2
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(outbox_objects)).scalar_one() == 1


def test_enqueue_file_path_is_copied_byte_identical(
    engine: Engine, outbox_dir: Path, ct_small: Dataset, tmp_path: Path
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    src = tmp_path / "sc.dcm"
    sc.save_as(src, enforce_file_format=True)
    (r,) = store.enqueue(engine, outbox_dir, [src], [PACS], now=T0)
    assert r.path is not None and r.path.read_bytes() == src.read_bytes()


def test_enqueue_rejects_bad_objects_clearly(
    engine: Engine, outbox_dir: Path, ct_small: Dataset, tmp_path: Path
) -> None:
    no_uid = secondary_capture(ct_small, generate_uid(), 1)
    no_uid.SOPInstanceUID = ""
    with pytest.raises(OutboxInputError, match="SOP Instance UID"):
        store.enqueue(engine, outbox_dir, [no_uid], [PACS])
    evil = secondary_capture(ct_small, generate_uid(), 1)
    with warnings.catch_warnings():  # pydicom may warn (depends on its validation mode)
        warnings.simplefilter("ignore")
        evil.SOPInstanceUID = "../../etc/passwd"
    with pytest.raises(OutboxInputError, match="not a valid DICOM UID"):
        store.enqueue(engine, outbox_dir, [evil], [PACS])
    with pytest.raises(OutboxInputError, match="result kind"):
        store.enqueue(engine, outbox_dir, [ct_small], [PACS])  # a CT image is no result kind
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(OutboxInputError, match=r"junk\.dcm"):
        store.enqueue(engine, outbox_dir, [junk], [PACS], kind="sc")
    with pytest.raises(OutboxInputError, match="unknown result kind"):
        store.enqueue(engine, outbox_dir, [ct_small], [PACS], kind="pdf")
    assert _n_items(engine) == 0


def test_state_machine_backoff_never_gives_up_on_a_transient_failure(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_s=10, max_delay_s=15, multiplier=2)
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)

    (it,) = store.claim_due(engine, outbox_dir, ["pacs"], T0)
    assert it.attempts == 1 and it.path.is_file() and it.sop_instance_uid == sc.SOPInstanceUID
    assert store.claim_due(engine, outbox_dir, ["pacs"], T0) == []  # claimed once only
    assert store.mark_failed_attempt(engine, it, T0, policy, "refused") == "pending"
    (info,) = store.list_items(engine)
    assert info.next_attempt_at == T0 + timedelta(seconds=10)
    assert info.last_error == "refused" and info.attempts == 1

    # Not due before the backoff delay has passed.
    assert store.claim_due(engine, outbox_dir, ["pacs"], T0 + timedelta(seconds=9.9)) == []
    t1 = T0 + timedelta(seconds=10)
    (it,) = store.claim_due(engine, outbox_dir, ["pacs"], t1)
    assert it.attempts == 2
    assert store.mark_failed_attempt(engine, it, t1, policy, "again", status=0xA700) == "pending"
    assert store.list_items(engine)[0].next_attempt_at == t1 + timedelta(seconds=15)  # capped

    # Beyond the retry window (issue 16, 6): a transient failure is never given up; the item
    # keeps being retried at the capped delay, so results arrive when the PACS is back.
    t = t1 + timedelta(seconds=15)
    for attempt in (3, 4, 5):
        (it,) = store.claim_due(engine, outbox_dir, ["pacs"], t)
        assert it.attempts == attempt
        assert store.mark_failed_attempt(engine, it, t, policy, "still down") == "pending"
        (info,) = store.list_items(engine)
        assert info.next_attempt_at == t + timedelta(seconds=15)
        t = info.next_attempt_at
    (it,) = store.claim_due(engine, outbox_dir, ["pacs"], t)
    assert it.sop_instance_uid == sc.SOPInstanceUID  # same object, same UID
    assert store.mark_sent(engine, it, t)
    assert store.counts(engine) == {"pacs": {"sent": 1}}


def test_permanent_failure_skips_retries(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    store.enqueue(engine, outbox_dir, [secondary_capture(ct_small, generate_uid(), 1)], [PACS])
    (it,) = store.claim_due(engine, outbox_dir, ["pacs"], store.utcnow())
    state = store.mark_failed_attempt(
        engine, it, store.utcnow(), RetryPolicy(max_attempts=10), "gone", permanent=True
    )
    assert state == "failed"
    assert store.claim_due(engine, outbox_dir, ["pacs"], store.utcnow() + timedelta(days=1)) == []
    assert store.retry_failed(engine, now=store.utcnow()) == 1  # the operator re-arms it
    (again,) = store.claim_due(engine, outbox_dir, ["pacs"], store.utcnow())
    assert again.attempts == 1


def test_expired_lease_is_reclaimed_and_old_claim_cannot_write(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)
    (old,) = store.claim_due(engine, outbox_dir, ["pacs"], T0, lease_s=60)
    early, late = T0 + timedelta(seconds=59), T0 + timedelta(seconds=61)
    assert store.claim_due(engine, outbox_dir, ["pacs"], early, lease_s=60) == []
    (new,) = store.claim_due(engine, outbox_dir, ["pacs"], late, lease_s=60)
    assert new.id == old.id and new.attempts == 2 and new.claim_token != old.claim_token
    assert not store.mark_sent(engine, old, T0)  # the stale sender lost its claim
    assert store.mark_failed_attempt(engine, old, T0, RetryPolicy(), "x") is None
    assert store.mark_sent(engine, new, T0)


def test_recover_interrupted_puts_sending_back_to_pending(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    objs = [secondary_capture(ct_small, generate_uid(), i) for i in range(1, 4)]
    store.enqueue(engine, outbox_dir, objs, [PACS], now=T0)
    assert len(store.claim_due(engine, outbox_dir, ["pacs"], T0)) == 3  # then the sender "dies"
    assert store.recover_interrupted(engine, now=T0) == 3
    again = store.claim_due(engine, outbox_dir, ["pacs"], T0)
    assert sorted(i.sop_instance_uid for i in again) == sorted(o.SOPInstanceUID for o in objs)
    assert {i.attempts for i in again} == {2}


def test_claim_only_named_destinations_and_limit(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    objs = [secondary_capture(ct_small, generate_uid(), i) for i in range(1, 4)]
    store.enqueue(engine, outbox_dir, objs, [PACS, VIEWER], now=T0)
    assert store.next_due_at(engine, ["pacs"]) == T0
    got = store.claim_due(engine, outbox_dir, ["viewer"], T0, limit=2)
    assert len(got) == 2 and {g.destination for g in got} == {"viewer"}
    assert store.counts(engine) == {"pacs": {"pending": 3}, "viewer": {"pending": 1, "sending": 2}}


def test_purge_sent_keeps_rows_and_rewrites_file_for_new_destination(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    sc = secondary_capture(ct_small, generate_uid(), 1)
    (r,) = store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)
    (it,) = store.claim_due(engine, outbox_dir, ["pacs"], T0)
    store.mark_sent(engine, it, T0)
    assert store.purge_sent(engine, outbox_dir, timedelta(hours=1), now=T0) == 0  # too recent
    later = T0 + timedelta(hours=2)
    assert store.purge_sent(engine, outbox_dir, timedelta(hours=1), now=later) == 1
    assert r.path is not None and not r.path.exists()
    (again,) = store.enqueue(engine, outbox_dir, [sc], [PACS], now=T0)
    assert again.new_destinations == () and not r.path.exists()  # sent: nothing to do
    (more,) = store.enqueue(engine, outbox_dir, [sc], [PACS, VIEWER], now=T0)
    assert more.new_destinations == ("viewer",) and r.path.is_file()


def test_concurrent_claimers_never_take_the_same_item(
    engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    series = generate_uid()
    store.enqueue(
        engine,
        outbox_dir,
        [secondary_capture(ct_small, series, i) for i in range(1, 31)],
        [PACS, VIEWER],
        now=T0,
    )

    def claimer() -> list[int]:
        got: list[int] = []
        while batch := store.claim_due(engine, outbox_dir, ["pacs", "viewer"], T0, limit=4):
            got += [b.id for b in batch]
        return got

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = [f.result() for f in [pool.submit(claimer) for _ in range(3)]]
    claimed = [i for r in results for i in r]
    assert len(claimed) == 60 and len(set(claimed)) == 60
    assert store.counts(engine) == {"pacs": {"sending": 30}, "viewer": {"sending": 30}}
