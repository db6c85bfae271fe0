"""Push a FHIR transaction Bundle to a FHIR R4 server (``POST [base]``), with retries.

The outbox's retry rules (:class:`osteo_node.outbox.policy.RetryPolicy`): a transient failure
(connection refused or reset, timeout, HTTP 408/429/5xx) is retried after the policy's backoff
up to ``max_attempts``; a permanent one is not: HTTP 401/403 (the token is missing, wrong or
expired: retrying would only hammer the server) and any other 4xx (the server refuses the
Bundle itself; its OperationOutcome diagnostics are returned). Success is a 2xx answer whose
body is a ``transaction-response`` Bundle.

The token is sent as ``Authorization: Bearer <token>`` and never logged.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from osteo_node.outbox.policy import RetryPolicy
from osteo_node.secret_files import read_secret_file

log = structlog.get_logger(__name__)

TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
MAX_DIAGNOSTICS = 500  # characters of the server's OperationOutcome kept in the error


class FhirPushError(RuntimeError):
    """The Bundle was not accepted; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool, attempts: int,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.attempts = attempts
        self.status = status


@dataclass(frozen=True)
class PushResult:
    attempts: int
    status: int
    #: per entry of the response: its ``response.status`` (e.g. "201 Created", "200 OK" when a
    #: conditional create found the resource already there)
    entry_status: tuple[str, ...]


def read_token(path: Any) -> str:
    """The bearer token from a file (its one non-blank line, stripped)."""
    return read_secret_file(path)


def _diagnostics(body: bytes) -> str:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return body[:MAX_DIAGNOSTICS].decode("utf-8", "replace")
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        parts = [str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code"))
                 for i in doc.get("issue") or [] if isinstance(i, dict)]
        return "; ".join(parts)[:MAX_DIAGNOSTICS]
    return json.dumps(doc)[:MAX_DIAGNOSTICS]


def _post(base_url: str, body: bytes, token: str | None, timeout: float
          ) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/fhir+json; charset=utf-8",
               "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base_url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # URL scheme checked by config
        return int(resp.status), resp.read()


def _accepted(status: int, body: bytes, attempts: int) -> PushResult:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FhirPushError(f"HTTP {status} but the answer is not JSON: {exc}",
                            permanent=True, attempts=attempts, status=status) from exc
    if not isinstance(doc, dict) or doc.get("type") != "transaction-response":
        raise FhirPushError(f"HTTP {status} but the answer is not a transaction-response Bundle",
                            permanent=True, attempts=attempts, status=status)
    entry_status = tuple(str((e.get("response") or {}).get("status", "?"))
                         for e in doc.get("entry") or [] if isinstance(e, dict))
    return PushResult(attempts, status, entry_status)


def push_bundle(
    bundle: dict[str, Any], base_url: str, *, token: str | None, policy: RetryPolicy,
    timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """POST the transaction ``bundle`` to ``base_url``; retried per ``policy``.

    Raises :class:`FhirPushError` (``permanent`` for 401/403/4xx, not after the last transient
    failure)."""
    body = json.dumps(bundle).encode("utf-8")
    attempt = 0
    while True:
        attempt += 1
        try:
            status, answer = _post(base_url, body, token, timeout)
            return _accepted(status, answer, attempt)
        except urllib.error.HTTPError as exc:
            detail = _diagnostics(exc.read() or b"")
            if exc.code in (401, 403):
                raise FhirPushError(
                    f"FHIR server refused the credentials (HTTP {exc.code}): check the bearer "
                    f"token (fhir.token_file); not retried. {detail}".strip(),
                    permanent=True, attempts=attempt, status=exc.code) from exc
            if exc.code not in TRANSIENT_HTTP:
                raise FhirPushError(f"FHIR server rejected the Bundle (HTTP {exc.code}): {detail}",
                                    permanent=True, attempts=attempt, status=exc.code) from exc
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if attempt >= policy.max_attempts:
            raise FhirPushError(f"FHIR server not reachable after {attempt} attempts "
                                f"(last: {reason})", permanent=False, attempts=attempt)
        delay = policy.next_delay(attempt, base_url)
        log.warning("fhir_push_retry", attempt=attempt, reason=reason, delay_s=round(delay, 1))
        sleep(delay)
