"""Issue 14, acceptance 4: reading STOW-RS answers into one outcome per instance.

The payloads in tests/outbox/data/stow are Orthanc's real answers (Orthanc 1.10.1 + DICOMweb
plugin 1.7, captured by capture_orthanc_payloads.py in that folder); the 202 answer with a
Failed SOP Sequence, which that Orthanc never gives, is written by pydicom's DICOM JSON encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from osteo_node.outbox.association import StoreOutcome
from osteo_node.outbox.stow_response import (
    HttpAnswer,
    StowResponse,
    parse_stow_response,
    stow_verdict,
)

DATA = Path(__file__).parent / "data" / "stow"
UIDS = json.loads((DATA / "uids.json").read_text())
CT, MR = UIDS["ct_sc"], UIDS["mr_sc"]
HOST = "pacs.example.org"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _answer(name: str, status: int, content_type: str | None = None) -> HttpAnswer:
    return HttpAnswer(status, (DATA / name).read_bytes(), content_type)


def test_orthanc_200_json_and_xml_list_the_stored_instance() -> None:
    for name, ctype in (("orthanc_stored_200.json", "application/dicom+json"),
                        ("orthanc_stored_200.xml", "application/dicom+xml"),
                        ("orthanc_stored_200.xml", None)):  # sniffed from the body
        parsed = parse_stow_response((DATA / name).read_bytes(), ctype)
        assert parsed == StowResponse(stored={CT: None}, failed={}), name
        verdict = stow_verdict(_answer(name, 200, ctype), [CT], HOST)
        assert verdict.outcomes == {CT: StoreOutcome(True, 0, None)}
        assert not verdict.credentials_rejected


def test_orthanc_409_other_study_fails_that_instance_for_good_and_keeps_the_stored_one() -> None:
    # Orthanc answers 409 although one of the two instances was stored.
    verdict = stow_verdict(_answer("orthanc_other_study_409.json", 409), [CT, MR], HOST)
    assert verdict.outcomes[CT] == StoreOutcome(True, 0, None)
    failed = verdict.outcomes[MR]
    assert not failed.ok and failed.permanent and failed.status == 0x0110
    assert failed.reason == (
        "refused by pacs.example.org: failure reason 0x0110 Processing failure "
        "(HTTP 409 Conflict)"
    )
    only = stow_verdict(_answer("orthanc_all_other_study_409.json", 409), [MR], HOST)
    assert only.outcomes[MR] == failed


def test_orthanc_400_garbage() -> None:
    # nothing named: the HTTP status decides, for good
    verdict = stow_verdict(_answer("orthanc_garbage_400.json", 400), [CT], HOST)
    (outcome,) = verdict.outcomes.values()
    assert outcome == StoreOutcome(
        False, 400, "refused by pacs.example.org (HTTP 400 Bad Request)", permanent=True
    )
    # one good instance next to a broken part: the good one is stored although the answer is 400
    mixed = stow_verdict(_answer("orthanc_garbage_and_stored_400.json", 400), [CT, MR], HOST)
    assert mixed.outcomes[CT].ok
    assert not mixed.outcomes[MR].ok and mixed.outcomes[MR].permanent


def _response_202() -> bytes:
    """A 202 Store Instances Response: CT stored with a coercion warning, MR failed for lack of
    room, a third instance refused for its SOP class (pydicom's DICOM JSON encoder)."""
    ds = Dataset()
    ds.RetrieveURL = "https://pacs.example.org/dicom-web/studies/1.2.3"
    ok = Dataset()
    ok.ReferencedSOPClassUID, ok.ReferencedSOPInstanceUID = SC_CLASS, CT
    ok.WarningReason = 0xB000
    ok.RetrieveURL = f"https://pacs.example.org/dicom-web/studies/1.2.3/series/4/instances/{CT}"
    ds.ReferencedSOPSequence = [ok]
    full, refused = Dataset(), Dataset()
    full.ReferencedSOPClassUID, full.ReferencedSOPInstanceUID = SC_CLASS, MR
    full.FailureReason = 0xA700
    refused.ReferencedSOPClassUID, refused.ReferencedSOPInstanceUID = SC_CLASS, "1.2.3.4.5"
    refused.FailureReason = 0x0122
    ds.FailedSOPSequence = [full, refused]
    return ds.to_json().encode()


def test_202_with_failed_sop_sequence() -> None:
    body = _response_202()
    assert json.loads(body)["00081198"]["vr"] == "SQ"  # a real DICOM JSON Failed SOP Sequence
    verdict = stow_verdict(
        HttpAnswer(202, body, "application/dicom+json"), [CT, MR, "1.2.3.4.5", "1.2.3.4.6"], HOST
    )
    assert verdict.outcomes[CT] == StoreOutcome(
        True, 0xB000, "stored with warning 0xB000 Coercion of Data Elements"
    )
    # out of resources: retried with the backoff policy, not failed for good
    assert verdict.outcomes[MR] == StoreOutcome(
        False, 0xA700,
        "refused by pacs.example.org: failure reason 0xA700 Refused: Out of Resources "
        "(HTTP 202 Accepted)",
        permanent=False,
    )
    assert verdict.outcomes["1.2.3.4.5"].permanent
    assert "0x0122 SOP Class not supported" in str(verdict.outcomes["1.2.3.4.5"].reason)
    # not named by a 202: unknown, so retried (sending it again is harmless)
    unnamed = verdict.outcomes["1.2.3.4.6"]
    assert not unnamed.ok and not unnamed.permanent


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_credentials_rejected_for_good(status: int) -> None:
    verdict = stow_verdict(HttpAnswer(status, b""), [CT, MR], HOST)
    assert verdict.credentials_rejected
    phrase = {401: "Unauthorized", 403: "Forbidden"}[status]
    for outcome in verdict.outcomes.values():
        assert outcome == StoreOutcome(
            False, status, f"credentials rejected by pacs.example.org (HTTP {status} {phrase})",
            permanent=True,
        )


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (502, False), (503, False), (504, False), (408, False), (429, False),
     (404, True), (413, True), (415, True), (301, True)],
)
def test_http_status_alone(status: int, permanent: bool) -> None:
    (outcome,) = stow_verdict(HttpAnswer(status, b"<html>busy</html>", "text/html"), [CT],
                              HOST).outcomes.values()
    assert not outcome.ok and outcome.permanent is permanent and outcome.status == status
    assert "busy" not in str(outcome.reason)  # the server's text never goes into the reason


def test_200_without_body_and_duplicate_instance() -> None:
    assert stow_verdict(HttpAnswer(200), [CT], HOST).outcomes[CT].ok
    dup = Dataset()
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = SC_CLASS, CT
    item.FailureReason = 0x0111
    dup.FailedSOPSequence = [item]
    verdict = stow_verdict(HttpAnswer(409, dup.to_json().encode()), [CT], HOST)
    assert verdict.outcomes[CT].ok  # already there: delivered


def test_unparseable_and_hostile_bodies() -> None:
    assert parse_stow_response(b"") is None
    assert parse_stow_response(b"{not json", "application/dicom+json") is None
    assert parse_stow_response(b"<html/>", None) is None
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
            b"<NativeDicomModel>&a;</NativeDicomModel>")
    assert parse_stow_response(bomb, "application/dicom+xml") is None
    assert parse_stow_response(b"[]", "application/json") is None
    # a JSON array holding the response data set is read like the data set
    arr = b"[" + (DATA / "orthanc_stored_200.json").read_bytes() + b"]"
    assert parse_stow_response(arr, None) == StowResponse(stored={CT: None})
