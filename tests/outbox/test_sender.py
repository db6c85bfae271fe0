"""The C-STORE sender against a real pynetdicom Storage SCP on 127.0.0.1 (the fake PACS)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from sqlalchemy import Engine

from osteo_node.outbox import store
from osteo_node.outbox.policy import Destination, RetryPolicy, TlsSettings
from osteo_node.outbox.sender import (
    MAX_CONTEXTS,
    OutboxSender,
    SenderSettings,
    Timeouts,
    presentation_contexts,
    run_sender,
    split_for_contexts,
)
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.outbox.conftest import UNCOMPRESSED, FakePacs
from tests.outbox.objects import key_object_selection, secondary_capture

SC = "1.2.840.10008.5.1.4.1.1.7"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
FAST = Timeouts(connect=5, acse=5, dimse=10, network=10)
QUICK = SenderSettings(timeouts=FAST)


class Clock:
    """Controllable time for backoff tests (the network parts stay real)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _dest(pacs: FakePacs, name: str = "pacs", **kw: object) -> Destination:
    return Destination(name, pacs.ae_title, "127.0.0.1", pacs.port, **kw)  # type: ignore[arg-type]


def _wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_batch_uses_one_association_per_destination_with_only_needed_contexts(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
) -> None:
    pacs_a = fake_pacs(ae_title="PACS_A")
    pacs_b = fake_pacs(ae_title="PACS_B")
    series = generate_uid()
    scs = [secondary_capture(ct_small, series, i) for i in range(1, 6)]
    kos = key_object_selection([ct_small])
    a = _dest(pacs_a, "a", calling_ae_title="OSTEO_TEST")
    b = _dest(pacs_b, "b", kinds=frozenset({"kos"}))
    store.enqueue(engine, outbox_dir, [*scs, kos], [a, b], job_id="job-1")

    sender = OutboxSender(engine, outbox_dir, [a, b], RetryPolicy(), settings=QUICK)
    report = sender.run_once()

    assert (report.claimed, report.sent, report.retrying, report.failed) == (7, 7, 0, 0)
    assert report.associations == 2
    assert sorted(pacs_a.received_uids) == sorted(d.SOPInstanceUID for d in [*scs, kos])
    assert pacs_b.received_uids == [kos.SOPInstanceUID]
    assert {r[2] for r in pacs_a.received} == {"OSTEO_TEST"}
    assert len(pacs_a.associations) == 1 and len(pacs_b.associations) == 1
    # Only the SOP classes of the batch, with the stored syntax plus the two LE fallbacks.
    le = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    expected_a = {(c, (t,)) for c in (SC, KOS) for t in le}
    assert set(pacs_a.associations[0]) == expected_a
    assert len(pacs_a.associations[0]) == len(expected_a)
    assert {c for c, _ in pacs_b.associations[0]} == {KOS}
    assert store.counts(engine) == {"a": {"sent": 6}, "b": {"sent": 1}}
    assert sender.run_once().claimed == 0  # nothing is sent twice


def test_compressed_file_is_sent_as_is_or_decompressed_when_peer_wants_uncompressed(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
) -> None:
    j2k = secondary_capture(ct_small, generate_uid(), 1, transfer_syntax_uid=JPEG2000Lossless)
    full = fake_pacs(ae_title="FULL")
    plain = fake_pacs(ae_title="PLAIN", transfer_syntaxes=UNCOMPRESSED)
    dests = [_dest(full, "full"), _dest(plain, "plain")]
    store.enqueue(engine, outbox_dir, [j2k], dests)
    (it,) = store.claim_due(engine, outbox_dir, ["full"], store.utcnow())
    assert it.transfer_syntax_uid == JPEG2000Lossless
    assert presentation_contexts([it])[0].transfer_syntax == [JPEG2000Lossless]
    store.recover_interrupted(engine)

    report = OutboxSender(engine, outbox_dir, dests, RetryPolicy(), settings=QUICK).run_once()

    assert report.sent == 2
    assert full.received == [(j2k.SOPInstanceUID, JPEG2000Lossless, "OSTEO_NODE")]
    assert plain.received[0][0] == j2k.SOPInstanceUID
    assert plain.received[0][1] in UNCOMPRESSED
    assert ("1.2.840.10008.5.1.4.1.1.7", (JPEG2000Lossless,)) in plain.associations[0]


def test_failure_status_retries_with_backoff_then_succeeds_same_uid(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
) -> None:
    pacs = fake_pacs(statuses=[0xA700, 0x0000])  # out of resources once, then fine
    policy = RetryPolicy(max_attempts=5, base_delay_s=30, max_delay_s=300, multiplier=2)
    clock = Clock(store.utcnow())
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [_dest(pacs)], now=clock.now)
    sender = OutboxSender(engine, outbox_dir, [_dest(pacs)], policy, settings=QUICK, clock=clock)

    r1 = sender.run_once()
    assert (r1.sent, r1.retrying) == (0, 1)
    (info,) = store.list_items(engine)
    assert info.state == "pending" and info.attempts == 1 and info.last_status == 0xA700
    assert info.last_error == "C-STORE status 0xA700"
    assert info.next_attempt_at == clock.now + timedelta(seconds=30)

    clock.now += timedelta(seconds=29)
    assert sender.run_once().claimed == 0  # backoff respected
    clock.now += timedelta(seconds=1)
    assert sender.run_once().sent == 1
    (info,) = store.list_items(engine)
    assert info.state == "sent" and info.attempts == 2
    assert pacs.received_uids == [sc.SOPInstanceUID]  # stored once, same SOP Instance UID


def test_unreachable_destination_backs_off_and_is_reported_overdue_not_given_up(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = Destination("dead", "NOBODY", "127.0.0.1", closed_port)
    policy = RetryPolicy(max_attempts=3, base_delay_s=5, max_delay_s=60, multiplier=3)
    clock = Clock(store.utcnow())
    objs = [secondary_capture(ct_small, generate_uid(), i) for i in (1, 2)]
    store.enqueue(engine, outbox_dir, objs, [dead], now=clock.now)
    sender = OutboxSender(engine, outbox_dir, [dead], policy, settings=QUICK, clock=clock)

    delays = []
    for attempt in (1, 2):
        report = sender.run_once()
        assert (report.claimed, report.retrying, report.associations) == (2, 2, 1)
        infos = store.list_items(engine)
        assert {i.attempts for i in infos} == {attempt}
        assert all("could not connect" in (i.last_error or "") for i in infos)
        delay = (infos[0].next_attempt_at - clock.now).total_seconds()
        delays.append(delay)
        clock.now += timedelta(seconds=delay)
    assert delays == [5.0, 15.0]
    report = sender.run_once()  # the last attempt of the retry window: overdue, ERROR once
    assert report.failed == 0 and report.retrying == 2
    assert {(i.state, i.attempts) for i in store.list_items(engine)} == {("pending", 3)}
    out = capsys.readouterr().out
    assert out.count("outbox.overdue") == 2 and objs[0].SOPInstanceUID in out
    assert str(ct_small.PatientName) not in out and str(ct_small.PatientID) not in out
    clock.now = store.list_items(engine)[0].next_attempt_at
    sender.run_once()  # still retried at the capped delay, not reported again
    out = capsys.readouterr().out
    assert "outbox.overdue" not in out and "outbox.retry" in out
    assert {(i.state, i.attempts) for i in store.list_items(engine)} == {("pending", 4)}


def test_missing_file_fails_permanently(
    engine: Engine, outbox_dir: Path, ct_small: Dataset, fake_pacs: Callable[..., FakePacs]
) -> None:
    pacs = fake_pacs()
    (r,) = store.enqueue(
        engine, outbox_dir, [secondary_capture(ct_small, generate_uid(), 1)], [_dest(pacs)]
    )
    assert r.path is not None
    r.path.unlink()
    report = OutboxSender(
        engine, outbox_dir, [_dest(pacs)], RetryPolicy(), settings=QUICK
    ).run_once()
    assert report.failed == 1 and report.associations == 0
    (info,) = store.list_items(engine)
    assert (info.state, info.last_error) == ("failed", "outbox file missing")


def test_sop_class_not_accepted_is_retried_not_lost(
    engine: Engine, outbox_dir: Path, ct_small: Dataset, fake_pacs: Callable[..., FakePacs]
) -> None:
    pacs = fake_pacs(transfer_syntaxes=["1.2.840.10008.1.2.4.80"])  # only JPEG-LS: no overlap
    store.enqueue(
        engine, outbox_dir, [secondary_capture(ct_small, generate_uid(), 1)], [_dest(pacs)]
    )
    report = OutboxSender(
        engine, outbox_dir, [_dest(pacs)], RetryPolicy(), settings=QUICK
    ).run_once()
    assert report.retrying == 1
    (info,) = store.list_items(engine)
    assert info.state == "pending"
    assert info.last_error == f"peer accepted no presentation context for SOP class(es) {SC}"


def test_serve_delivers_after_wake_and_picks_up_interrupted_items(
    engine: Engine, outbox_dir: Path, ct_small: Dataset, fake_pacs: Callable[..., FakePacs]
) -> None:
    pacs = fake_pacs()
    d = _dest(pacs)
    first = [secondary_capture(ct_small, generate_uid(), i) for i in (1, 2)]
    store.enqueue(engine, outbox_dir, first, [d])
    store.claim_due(engine, outbox_dir, ["pacs"], store.utcnow())  # a sender "crashed" here
    sender = OutboxSender(
        engine,
        outbox_dir,
        [d],
        RetryPolicy(),
        settings=SenderSettings(poll_interval_s=5.0, timeouts=FAST),
    )
    assert sender.recover() == 2
    stop = threading.Event()
    thread = threading.Thread(target=sender.serve, args=(stop,))
    thread.start()
    try:
        _wait_for(lambda: len(pacs.received) == 2)
        later = secondary_capture(ct_small, generate_uid(), 3)
        store.enqueue(engine, outbox_dir, [later], [d])
        t0 = time.monotonic()
        sender.wake()
        _wait_for(lambda: len(pacs.received) == 3)
        assert time.monotonic() - t0 < 4.0  # woken, not waiting for the 5 s poll
    finally:
        stop.set()
        sender.wake()
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(pacs.received_uids) == sorted(o.SOPInstanceUID for o in [*first, later])
    assert store.counts(engine) == {"pacs": {"sent": 3}}


def test_run_sender_as_own_process_stops_cleanly_on_sigterm(
    tmp_path: Path, ct_small: Dataset, fake_pacs: Callable[..., FakePacs]
) -> None:
    pacs = fake_pacs()
    d = _dest(pacs)
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)  # the schema step runs before the node's processes start
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=run_sender,
        args=(url, str(tmp_path / "outbox"), [d], RetryPolicy()),
        kwargs={"settings": SenderSettings(poll_interval_s=0.2)},
    )
    proc.start()
    try:
        sc = secondary_capture(ct_small, generate_uid(), 1)
        store.enqueue(engine, tmp_path / "outbox", [sc], [d])
        _wait_for(lambda: pacs.received_uids == [sc.SOPInstanceUID], 30)
        _wait_for(lambda: store.counts(engine) == {"pacs": {"sent": 1}})
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(15)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_dead_destination_backlog_does_not_starve_a_live_one(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
    closed_port: int,
) -> None:
    live = fake_pacs()
    dead = Destination("dead", "NOBODY", "127.0.0.1", closed_port)
    series = generate_uid()
    objs = [secondary_capture(ct_small, series, i) for i in range(1, 5)]
    store.enqueue(engine, outbox_dir, objs, [dead, _dest(live, "live")])
    sender = OutboxSender(
        engine,
        outbox_dir,
        [dead, _dest(live, "live")],
        RetryPolicy(),
        settings=SenderSettings(batch_size=2, timeouts=FAST),
    )
    report = sender.run_once()
    assert report.claimed_per_destination == {"dead": 2, "live": 2}
    assert report.per_destination == {"dead": {"retrying": 2}, "live": {"sent": 2}}
    assert len(live.received) == 2


def test_tls_destination_mutual_auth_and_wrong_ca_is_retried(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
    tls_files: dict[str, Path],
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls_files["ca_crt"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # the PACS wants our client certificate
    server_ctx.load_cert_chain(tls_files["server_crt"], tls_files["server_key"])
    pacs = fake_pacs(ssl_context=server_ctx)
    good = TlsSettings(
        ca_file=tls_files["ca_crt"],
        cert_file=tls_files["client_crt"],
        key_file=tls_files["client_key"],
    )
    wrong_ca = TlsSettings(
        ca_file=tls_files["other_ca_crt"],
        cert_file=tls_files["client_crt"],
        key_file=tls_files["client_key"],
    )
    secure = _dest(pacs, "secure", tls=good)
    mistrusted = _dest(pacs, "mistrusted", tls=wrong_ca)
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [secure, mistrusted])

    sender = OutboxSender(engine, outbox_dir, [secure, mistrusted], RetryPolicy(), settings=QUICK)
    report = sender.run_once()

    assert report.per_destination == {"secure": {"sent": 1}, "mistrusted": {"retrying": 1}}
    assert pacs.received_uids == [sc.SOPInstanceUID]  # exactly once, over TLS
    (bad,) = store.list_items(engine, state="pending")
    assert bad.destination == "mistrusted"
    why = "refused, timed out or TLS handshake failed"
    assert bad.last_error == f"could not connect to 127.0.0.1:{pacs.port} ({why})"


@pytest.mark.parametrize("status", [0x0000, 0xA700])
def test_lost_claim_is_counted_as_lost_not_sent_or_retrying(
    engine: Engine,
    outbox_dir: Path,
    ct_small: Dataset,
    fake_pacs: Callable[..., FakePacs],
    status: int,
) -> None:
    """The sender's lease expires while the peer answers and another sender claims the item:
    the outcome of the first attempt is not recorded and not counted as sent/retrying."""
    clock = Clock(store.utcnow())
    stolen: list[store.ClaimedItem] = []

    def other_sender_claims() -> None:
        later = clock.now + timedelta(seconds=120)  # past the 60 s lease below
        stolen.extend(store.claim_due(engine, outbox_dir, ["pacs"], later, lease_s=60))

    pacs = fake_pacs(statuses=[status], during_store=other_sender_claims)
    sc = secondary_capture(ct_small, generate_uid(), 1)
    store.enqueue(engine, outbox_dir, [sc], [_dest(pacs)], now=clock.now)
    sender = OutboxSender(
        engine,
        outbox_dir,
        [_dest(pacs)],
        RetryPolicy(),
        settings=SenderSettings(timeouts=FAST, lease_s=60),
        clock=clock,
    )

    report = sender.run_once()

    assert len(stolen) == 1
    assert (report.claimed, report.sent, report.retrying, report.failed, report.lost) == (
        1, 0, 0, 0, 1
    )
    assert report.per_destination == {"pacs": {"lost": 1}}
    (info,) = store.list_items(engine)
    assert (info.state, info.attempts) == ("sending", 2)  # the other sender's claim stands
    assert store.mark_sent(engine, stolen[0], clock.now)  # ... and it can finish the item


def test_contexts_are_computed_once_per_chunk_and_chunks_fit_an_association(
    tmp_path: Path,
) -> None:
    """A batch with more SOP class / transfer syntax pairs than one association may carry is
    split greedily (each chunk as large as fits), in order, without losing an item."""
    syntaxes = [ExplicitVRLittleEndian, JPEG2000Lossless, "1.2.840.10008.1.2.5"]
    items = [
        store.ClaimedItem(
            id=i,
            sop_instance_uid=f"1.2.3.{i}",
            destination="pacs",
            attempts=1,
            sop_class_uid=f"1.2.840.10008.5.1.4.1.1.{i % 50 + 1}",
            transfer_syntax_uid=str(syntaxes[i % 3]),
            path=tmp_path / f"{i}.dcm",
            claim_token="t",
        )
        for i in range(600)
    ]
    chunks = split_for_contexts(items)
    assert [it for c in chunks for it in c] == items
    assert len(chunks) > 1
    for n, chunk in enumerate(chunks):
        assert len(presentation_contexts(chunk)) <= MAX_CONTEXTS
        if n + 1 < len(chunks):  # greedy: the next item would not have fitted
            assert len(presentation_contexts([*chunk, chunks[n + 1][0]])) > MAX_CONTEXTS
