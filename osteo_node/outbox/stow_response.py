"""What a STOW-RS answer means for each instance sent (PS3.18 10.5.3): pure functions.

:func:`parse_stow_response` reads the Store Instances Response (DICOM JSON, PS3.18 F.2, or the
Native DICOM Model XML, PS3.19 A.1): which SOP instances were stored (Referenced SOP Sequence
(0008,1199), with a Warning Reason (0008,1196) if any) and which failed (Failed SOP Sequence
(0008,1198) with their Failure Reason (0008,1197)). :func:`stow_verdict` turns an HTTP answer
into one :class:`~osteo_node.outbox.association.StoreOutcome` per instance:

* an instance the response lists as stored is sent (also under 400/409: Orthanc 1.10 with
  DICOMweb 1.7 answers 409 or 400 when only some instances failed);
* an instance the response lists as failed fails for good (``permanent``) with the reason's
  code and meaning; except Out of Resources (A7xx) and Resource Limitation (0213), which are
  retried, and Duplicate SOP Instance (0111), which means it is already there (sent);
* an instance the response does not mention: 200 (and other 2xx but 202) stored; 202 retried
  (the server said some failed without saying which); 401/403 failed for good, "credentials
  rejected" (``credentials_rejected``: the sender stops sending to that destination); other 4xx
  (400, 404, 409, 413, 415, ...) and 3xx failed for good; 408, 429 and 5xx retried.

Reasons name the host, HTTP status and DICOM codes only: never the response text (a server may
quote header values, i.e. patient data), never credentials.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from osteo_node.outbox.association import StoreOutcome

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

#: Larger response bodies are not parsed (a Store Instances Response is a few kB).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

#: Failure reasons that say "already there": the object is stored.
ALREADY_STORED = frozenset({0x0111})  # Duplicate SOP Instance (PS3.7 C.4.2)
#: Failure reasons a later attempt may overcome.
_TRANSIENT_SINGLE = frozenset({0x0213})  # Resource Limitation


def reason_meaning(code: int) -> str:
    """Meaning of a STOW-RS Failure / Warning Reason (PS3.18 Table 10.5.3-2/-3, PS3.4 B.2.3)."""
    exact = {
        0x0110: "Processing failure",
        0x0111: "Duplicate SOP Instance",
        0x0122: "SOP Class not supported",
        0x0124: "Not authorized",
        0x0211: "Unrecognized operation",
        0x0213: "Resource limitation",
        0xB000: "Coercion of Data Elements",
        0xB006: "Elements Discarded",
        0xB007: "Data Set does not match SOP Class",
        0xC122: "Referenced Transfer Syntax not supported",
    }
    if code in exact:
        return exact[code]
    for lo, hi, meaning in (
        (0xA700, 0xA7FF, "Refused: Out of Resources"),
        (0xA900, 0xA9FF, "Error: Data Set does not match SOP Class"),
        (0xC000, 0xCFFF, "Error: Cannot understand"),
    ):
        if lo <= code <= hi:
            return meaning
    return "unknown reason"


def failure_is_transient(code: int | None) -> bool:
    """True for Failure Reasons that a later attempt may overcome (the server ran out of room)."""
    return code is not None and (0xA700 <= code <= 0xA7FF or code in _TRANSIENT_SINGLE)


@dataclass(frozen=True)
class StowResponse:
    """The instances a Store Instances Response names: SOP Instance UID -> reason code
    (warning reason for ``stored``, failure reason for ``failed``; None: not given)."""

    stored: Mapping[str, int | None] = field(default_factory=dict)
    failed: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP response to a STOW-RS request, as far as the verdict needs it."""

    status: int
    body: bytes = b""
    content_type: str | None = None


@dataclass(frozen=True)
class StowVerdict:
    """One outcome per SOP Instance UID sent; ``credentials_rejected``: the server answered
    401/403 (stop sending to it until the credentials change or an operator re-arms)."""

    outcomes: Mapping[str, StoreOutcome]
    credentials_rejected: bool = False


# -- parsing -----------------------------------------------------------------------------------
def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _json_values(element: Any) -> list[Any]:
    if not isinstance(element, Mapping):
        return []
    values = element.get("Value")
    return list(values) if isinstance(values, list) else []


def _json_items(dataset: Mapping[str, Any], tag: str, reason_tag: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in _json_values(dataset.get(tag)):
        if not isinstance(item, Mapping):
            continue
        uids = _json_values(item.get(REFERENCED_SOP_INSTANCE_UID))
        if not uids or not isinstance(uids[0], str) or not uids[0].strip():
            continue
        reasons = _json_values(item.get(reason_tag))
        out[uids[0].strip()] = _int(reasons[0]) if reasons else None
    return out


def _from_json(body: bytes) -> StowResponse | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, list) and doc:
        doc = doc[0]  # a JSON array holding the one response data set
    if not isinstance(doc, Mapping):
        return None
    doc = {str(k).upper(): v for k, v in doc.items()}
    return StowResponse(
        stored=_json_items(doc, REFERENCED_SOP_SEQUENCE, WARNING_REASON),
        failed=_json_items(doc, FAILED_SOP_SEQUENCE, FAILURE_REASON),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # without the XML namespace


def _xml_attribute(parent: ET.Element, tag: str) -> ET.Element | None:
    for child in parent:
        if _local(child.tag) == "DicomAttribute" and child.get("tag", "").upper() == tag:
            return child
    return None


def _xml_first_value(parent: ET.Element, tag: str) -> str | None:
    attr = _xml_attribute(parent, tag)
    if attr is None:
        return None
    for child in attr:
        if _local(child.tag) == "Value" and child.text and child.text.strip():
            return child.text.strip()
    return None


def _xml_items(root: ET.Element, tag: str, reason_tag: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    seq = _xml_attribute(root, tag)
    if seq is None:
        return out
    for item in seq:
        if _local(item.tag) != "Item":
            continue
        uid = _xml_first_value(item, REFERENCED_SOP_INSTANCE_UID)
        if uid:
            out[uid] = _int(_xml_first_value(item, reason_tag))
    return out


def _from_xml(body: bytes) -> StowResponse | None:
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None  # a Store Instances Response has no DTD: do not expand entities
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if _local(root.tag) != "NativeDicomModel":
        return None
    return StowResponse(
        stored=_xml_items(root, REFERENCED_SOP_SEQUENCE, WARNING_REASON),
        failed=_xml_items(root, FAILED_SOP_SEQUENCE, FAILURE_REASON),
    )


def parse_stow_response(body: bytes, content_type: str | None = None) -> StowResponse | None:
    """The instances a Store Instances Response names, or None when ``body`` is empty, too
    large or not a DICOM JSON / XML response (the media type is trusted when it says json or
    xml, else the body's first character decides)."""
    if not body or len(body) > MAX_RESPONSE_BYTES:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.endswith("json"):
        return _from_json(body)
    if media.endswith("xml"):
        return _from_xml(body)
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        return _from_json(body)
    if head == b"<":
        return _from_xml(body)
    return None


# -- verdict -----------------------------------------------------------------------------------
def _http(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def credentials_rejected_reason(host: str, status: int) -> str:
    """The reason recorded for instances a server refused for their credentials."""
    return f"credentials rejected by {host} ({_http(status)})"


def _named_outcome(uid: str, response: StowResponse, host: str, status: int) -> StoreOutcome | None:
    if uid in response.failed:
        code = response.failed[uid]
        if code in ALREADY_STORED:
            return StoreOutcome(True, code, f"already stored in {host} (Duplicate SOP Instance)")
        what = "no failure reason given" if code is None else (
            f"failure reason 0x{code:04X} {reason_meaning(code)}")
        return StoreOutcome(
            False,
            code if code is not None else status,
            f"refused by {host}: {what} ({_http(status)})",
            permanent=not failure_is_transient(code),
        )
    if uid in response.stored:
        warning = response.stored[uid]
        if warning is None:
            return StoreOutcome(True, 0, None)
        return StoreOutcome(
            True, warning, f"stored with warning 0x{warning:04X} {reason_meaning(warning)}"
        )
    return None


def _unnamed_outcome(host: str, status: int) -> StoreOutcome:
    """The outcome of an instance the response does not name, from the HTTP status alone."""
    if 200 <= status < 300 and status != 202:
        return StoreOutcome(True, 0, None)
    http = _http(status)
    permanent = False
    if status == 202:
        reason = f"not named in the STOW-RS response of {host} ({http})"
    elif status in (401, 403):
        reason, permanent = credentials_rejected_reason(host, status), True
    elif status in (408, 429) or status >= 500:
        reason = f"{host} cannot take it now ({http})"
    elif 300 <= status < 400:
        reason, permanent = (
            f"redirected by {host} ({http}); set the destination url to the final address "
            "(redirects are not followed, they would carry the credentials elsewhere)"), True
    elif 400 <= status < 500:
        reason, permanent = f"refused by {host} ({http})", True
    else:
        reason = f"unexpected answer from {host} ({http})"
    return StoreOutcome(False, status, reason, permanent)


def stow_verdict(answer: HttpAnswer, sop_instance_uids: Sequence[str], host: str) -> StowVerdict:
    """One outcome per instance of a STOW-RS request (see the module docstring)."""
    status = answer.status
    rejected = status in (401, 403)
    response = None if rejected else parse_stow_response(answer.body, answer.content_type)
    outcomes: dict[str, StoreOutcome] = {}
    for uid in sop_instance_uids:
        named = None if response is None else _named_outcome(uid, response, host, status)
        outcomes[uid] = named if named is not None else _unnamed_outcome(host, status)
    return StowVerdict(outcomes, credentials_rejected=rejected)
