"""Delivery to a DICOMweb destination by STOW-RS (PS3.18 10.5): what :class:`OutboxSender` does
for a destination with ``dicomweb`` set instead of opening an association.

Requests: the claimed items are grouped by Study Instance UID and each group is POSTed as one
``multipart/related; type="application/dicom"`` request to ``{url}/studies/{StudyInstanceUID}``
(at most :data:`MAX_INSTANCES_PER_REQUEST` instances and about :data:`MAX_REQUEST_BYTES` per
request; an item without a Study Instance UID goes to ``{url}/studies``). One request per study
rather than per item: a result set (SR, SEG, SC, KOS of one analysis) is one study, so it costs
one round trip and one authentication, and the study in the URL makes the server refuse an
object that is not of that study instead of filing it elsewhere. The answer names each instance
(:mod:`.stow_response`), so every item still gets its own outcome. A server or proxy that
answers 413 (payload too large) to a request of several instances gets them again one by one.
The Part-10 files are sent as stored (their transfer syntax, their SOP Instance UIDs).

Outcomes are recorded through the callback the sender passes (the outbox state machine):
stored -> ``sent``; a failure the server will not get over (400/409 per instance, 404, ...)
-> ``failed`` with the reason; no connection, timeouts, 408/429/5xx -> retried with the
sender's backoff policy. Credentials rejected (401/403) -> the request's items ``failed``
("credentials rejected by HOST"), the items left in the pass too, and the destination is
*held*: this sender makes no request to it, claims none of its items (they wait, no attempts
counted) until the secret file's content changes or an operator re-arms the failed items
(``osteo-node outbox retry``). So a wrong password costs one rejected request per sender
process, not one per item and retry: repeated failed logins lock service accounts.

Secrets are read from their files for each pass (a rotated secret needs no restart) and go
only into the Authorization header: never into reasons or logs. Redirects are not followed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO

import httpx
import structlog
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine, and_, select

from osteo_node.outbox.association import StoreOutcome
from osteo_node.outbox.claims import ClaimedItem
from osteo_node.outbox.dicomweb_settings import Credentials, DicomWebTarget
from osteo_node.outbox.policy import Destination, Timeouts
from osteo_node.outbox.stow_response import (
    HttpAnswer,
    credentials_rejected_reason,
    stow_verdict,
)
from osteo_node.outbox.tables import PENDING, outbox_items

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_INSTANCES_PER_REQUEST = 50
#: Answers after which the rest of the pass is not sent (the server is busy or gone).
_STOP_STATUSES = frozenset({429, 503})
#: The beginning of every reason recorded for a credentials rejection (see :func:`rearmed`).
CREDENTIALS_REJECTED = "credentials rejected by "

Record = Callable[[ClaimedItem, StoreOutcome], None]


@dataclass(frozen=True)
class Part:
    """A claimed item ready to be sent: its study and the size of its file."""

    item: ClaimedItem
    study_instance_uid: str | None
    size: int


def read_part(item: ClaimedItem) -> Part | StoreOutcome:
    """The item's study (from its file's header) and file size, or the permanent failure of an
    outbox file that cannot be read as DICOM."""
    try:
        size = item.path.stat().st_size
        ds = dcmread(item.path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except FileNotFoundError:
        return StoreOutcome(False, None, "outbox file missing", permanent=True)
    except (OSError, InvalidDicomError, ValueError) as exc:
        return StoreOutcome(False, None, f"cannot read outbox file: {type(exc).__name__}",
                            permanent=True)
    study = str(ds.get("StudyInstanceUID", "") or "").strip() or None
    return Part(item, study, size)


def plan_requests(
    parts: Sequence[Part],
    max_instances: int = MAX_INSTANCES_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[list[Part]]:
    """Group ``parts`` by study (first-seen order) and cut each group into requests of at most
    ``max_instances`` instances and ``max_bytes`` (a larger single file goes alone)."""
    by_study: dict[str | None, list[Part]] = {}
    for p in parts:
        by_study.setdefault(p.study_instance_uid, []).append(p)
    requests: list[list[Part]] = []
    for group in by_study.values():
        current: list[Part] = []
        size = 0
        for p in group:
            if current and (len(current) >= max_instances or size + p.size > max_bytes):
                requests.append(current)
                current, size = [], 0
            current.append(p)
            size += p.size
        if current:
            requests.append(current)
    return requests


def multipart_body(documents: Sequence[bytes], boundary: str) -> bytes:
    """A ``multipart/related`` body (RFC 2387) of ``application/dicom`` parts."""
    delimiter = b"--" + boundary.encode("ascii")
    out = BytesIO()
    for doc in documents:
        out.write(delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n")
        out.write(doc)
        out.write(b"\r\n")
    out.write(delimiter + b"--\r\n")
    return out.getvalue()


def rearmed(engine: Engine, destination: str) -> bool:
    """True when an operator gave the destination's credentials-rejected items a fresh set of
    attempts (``outbox retry``: pending, 0 attempts, the rejection still their last error)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(outbox_items.c.id).where(and_(
                outbox_items.c.destination == destination,
                outbox_items.c.state == PENDING,
                outbox_items.c.attempts == 0,
                outbox_items.c.last_error.like(CREDENTIALS_REJECTED + "%"),
            )).limit(1)
        ).first()
    return row is not None


@dataclass(frozen=True)
class _Result:
    """What sending one planned request did: requests made, the last HTTP status, and whether
    the server could not be reached (no HTTP answer)."""

    requests: int = 0
    status: int | None = None
    #: why no HTTP answer came (None: one came)
    unreachable: str | None = None


@dataclass(frozen=True)
class _Hold:
    """The destination rejected the credentials with this fingerprint."""

    fingerprint: str


class StowSender:
    """Sends claimed items to one DICOMweb destination; see the module docstring."""

    def __init__(self, dest: Destination, timeouts: Timeouts) -> None:
        if dest.dicomweb is None:
            raise ValueError(f"destination {dest.name!r} is not a DICOMweb destination")
        self.dest = dest
        self.target: DicomWebTarget = dest.dicomweb
        self.timeouts = timeouts
        self._hold: _Hold | None = None

    # -- the hold after a credentials rejection ------------------------------------------------
    def held(self, engine: Engine) -> bool:
        """True while the destination's credentials stand rejected: lifted when the secret
        file's content changed or the rejected items were re-armed by an operator."""
        hold = self._hold
        if hold is None:
            return False
        try:
            changed = self.target.auth.credentials().fingerprint != hold.fingerprint
        except (OSError, ValueError):
            changed = False  # unreadable now: nothing better to try with
        why = "credentials changed" if changed else (
            "failed items re-armed" if rearmed(engine, self.dest.name) else None)
        if why is None:
            return True
        self._hold = None
        log.warning("outbox.destination_resumed", destination=self.dest.name,
                    host=self.target.host, why=why)
        return False

    def _start_hold(self, credentials: Credentials, status: int) -> None:
        self._hold = _Hold(credentials.fingerprint)
        log.error(
            "outbox.credentials_rejected",
            destination=self.dest.name,
            host=self.target.host,
            http_status=status,
            action=(f"nothing more is sent to {self.dest.name!r}: fix its auth settings or "
                    f"the account on {self.target.host}, then run `osteo-node outbox retry "
                    f"--destination {self.dest.name}`"),
        )

    def _rejected_hint(self, reason: str) -> str:
        return (f"{reason}; fix the auth of destination {self.dest.name!r} or the account on "
                f"the server, then `osteo-node outbox retry --destination {self.dest.name}`")

    # -- one pass ------------------------------------------------------------------------------
    def deliver(self, items: Sequence[ClaimedItem], record: Record) -> int:
        """Send ``items`` (claimed for this destination) and record each outcome; returns the
        number of HTTP requests made. Never raises for a file, a server or a network problem."""
        parts: list[Part] = []
        for it in items:
            part = read_part(it)
            if isinstance(part, StoreOutcome):
                record(it, part)
            else:
                parts.append(part)
        if not parts:
            return 0
        try:
            credentials = self.target.auth.credentials()
        except (OSError, ValueError) as exc:
            why = f"cannot read the secret of destination {self.dest.name!r}: {_describe(exc)}"
            for p in parts:
                record(p.item, StoreOutcome(False, None, why))
            return 0
        try:
            client = self._client()
        except (OSError, ValueError) as exc:
            why = f"TLS settings of destination {self.dest.name!r} unusable: {_describe(exc)}"
            for p in parts:
                record(p.item, StoreOutcome(False, None, why))
            return 0
        with client:
            return self._send_all(client, credentials, plan_requests(parts), record)

    def _client(self) -> httpx.Client:
        verify = self.target.tls.ssl_context() if self.target.is_https else True
        t = self.timeouts
        return httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(connect=t.connect, read=t.dimse, write=t.network,
                                  pool=t.connect),
            follow_redirects=False,
            trust_env=False,  # no proxies or CA bundles from the environment: the config says
        )

    def _send_all(self, client: httpx.Client, credentials: Credentials,
                  requests: list[list[Part]], record: Record) -> int:
        made = 0
        for i, request in enumerate(requests):
            result = self._post_splitting(client, credentials, request, record)
            made += result.requests
            rest = [p for later in requests[i + 1:] for p in later]
            if result.unreachable is not None or result.status in _STOP_STATUSES:
                stop = result.unreachable or f"{self.target.host} busy (HTTP {result.status})"
                for p in rest:
                    record(p.item, StoreOutcome(
                        False, None, f"{stop} (not sent: an earlier request of the pass failed)"))
                break
            if result.status in (401, 403):
                assert result.status is not None
                reason = credentials_rejected_reason(self.target.host, result.status)
                self._start_hold(credentials, result.status)
                for p in rest:
                    record(p.item, StoreOutcome(
                        False, None, self._rejected_hint(f"{reason}, not sent"), permanent=True))
                break
        return made

    def _post_splitting(self, client: httpx.Client, credentials: Credentials,
                        request: list[Part], record: Record) -> _Result:
        """POST one request and record its outcomes; a 413 for several instances sends them
        again one by one."""
        loaded = _load(request, record)
        if not loaded:
            return _Result()
        answer = self._post(client, credentials, loaded)
        if isinstance(answer, str):
            for p, _ in loaded:
                record(p.item, StoreOutcome(False, None, answer))
            return _Result(requests=1, unreachable=answer)
        if answer.status != 413 or len(loaded) == 1:
            self._record_answer(answer, [p for p, _ in loaded], record)
            return _Result(requests=1, status=answer.status)
        log.warning("outbox.stow_split", destination=self.dest.name, instances=len(loaded))
        total = _Result(requests=1, status=answer.status)
        for p, _ in loaded:
            one = self._post_splitting(client, credentials, [p], record)
            total = _Result(total.requests + one.requests, one.status, one.unreachable)
            if one.unreachable is not None or one.status in (401, 403):
                break
        return total

    def _post(self, client: httpx.Client, credentials: Credentials,
              loaded: list[tuple[Part, bytes]]) -> HttpAnswer | str:
        """One POST: the answer, or why none came."""
        boundary = secrets.token_hex(16)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json, application/dicom+xml;q=0.5, */*;q=0.1",
        }
        if credentials.authorization is not None:
            headers["Authorization"] = credentials.authorization
        url = self.target.studies_url(loaded[0][0].study_instance_uid)
        body = multipart_body([doc for _, doc in loaded], boundary)
        started = time.monotonic()
        try:
            resp = client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            why = f"no answer from {self.target.host} in time ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            why = (f"could not connect to {self.target.host}:{self.target.port} or the "
                   f"connection failed ({type(exc).__name__}: {_describe(exc)})")
        else:
            log.debug("outbox.stow", destination=self.dest.name, instances=len(loaded),
                      bytes=len(body), http_status=resp.status_code,
                      seconds=round(time.monotonic() - started, 3))
            return HttpAnswer(resp.status_code, resp.content, resp.headers.get("content-type"))
        return why

    def _record_answer(self, answer: HttpAnswer, request: list[Part], record: Record) -> None:
        verdict = stow_verdict(answer, [p.item.sop_instance_uid for p in request],
                               self.target.host)
        for p in request:
            outcome = verdict.outcomes[p.item.sop_instance_uid]
            if verdict.credentials_rejected and outcome.reason:
                outcome = StoreOutcome(outcome.ok, outcome.status,
                                       self._rejected_hint(outcome.reason), outcome.permanent)
            record(p.item, outcome)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of an exception (no URL query, no headers)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _load(request: list[Part], record: Record) -> list[tuple[Part, bytes]]:
    """The parts' file contents; a file that cannot be read now fails for good (recorded)."""
    loaded = []
    for p in request:
        try:
            loaded.append((p, p.item.path.read_bytes()))
        except OSError as exc:
            record(p.item, StoreOutcome(False, None, f"cannot read outbox file: {_describe(exc)}",
                                        permanent=True))
    return loaded
