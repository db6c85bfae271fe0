from __future__ import annotations

import re

import pytest

from osteo_node.exporters.uids import UidFactory, deterministic_uid

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def test_same_job_same_uid_other_job_or_purpose_differs() -> None:
    a = deterministic_uid("job-1", "sr", "1.2.3")
    assert a == deterministic_uid("job-1", "sr", "1.2.3")
    assert a != deterministic_uid("job-2", "sr", "1.2.3")
    assert a != deterministic_uid("job-1", "seg", "1.2.3")


@pytest.mark.parametrize("root", [None, "1.2.826.0.1.3680043.10.999",
                                  "1.2.840.10008.999999999999.1.2.3.4.5.6.7.8.9.10"])
def test_uids_are_valid(root: str | None) -> None:
    for n in range(200):
        uid = deterministic_uid(f"job-{n}", "sr-instance", root)
        assert UID_RE.match(uid) and len(uid) <= 64, uid
        if root is None:
            assert uid.startswith("2.25.")
        else:
            assert uid.startswith(root + ".")


@pytest.mark.parametrize("root", ["1.2.a", "01.2", "1..2", "1.2." + "9" * 60])
def test_bad_roots_refused(root: str) -> None:
    with pytest.raises(ValueError):
        UidFactory("job", root)


def test_empty_job_key_refused() -> None:
    with pytest.raises(ValueError):
        UidFactory("", None)
