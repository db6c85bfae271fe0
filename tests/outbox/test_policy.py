from __future__ import annotations

import ssl
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from osteo_node.outbox.policy import ALL_KINDS, Destination, RetryPolicy, TlsSettings


def test_destination_defaults_to_all_kinds_and_is_frozen() -> None:
    d = Destination("pacs", "PACS", "127.0.0.1", 104)
    assert d.kinds == ALL_KINDS == frozenset({"sr", "seg", "sc", "kos"})
    assert d.accepts("sr") and d.accepts("kos")
    with pytest.raises(FrozenInstanceError):
        d.port = 11112  # type: ignore[misc]


def test_destination_kind_subset_and_list_input_normalised() -> None:
    d = Destination("viewer", "VIEW", "127.0.0.1", 4242, kinds=["sc"])  # type: ignore[arg-type]
    assert d.kinds == frozenset({"sc"})
    assert d.accepts("sc") and not d.accepts("sr")
    assert hash(d)  # usable as a dict key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ae_title": ""}, "must not be empty"),
        ({"ae_title": "A" * 17}, "longer than 16"),
        ({"ae_title": "BAD\\AE"}, "backslash"),
        ({"calling_ae_title": "   "}, "must not be empty"),
        ({"port": 0}, "not in 1..65535"),
        ({"port": 70000}, "not in 1..65535"),
        ({"port": "104"}, "must be an integer"),
        ({"host": ""}, "host must not be empty"),
        ({"name": " "}, "name must not be empty"),
        ({"kinds": frozenset({"sr", "pdf"})}, "unknown result kind"),
        ({"kinds": frozenset()}, "must not be empty"),
    ],
)
def test_destination_validation(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Destination(**base)  # type: ignore[arg-type]


def test_backoff_exponential_with_cap() -> None:
    p = RetryPolicy(max_attempts=5, base_delay_s=2.0, max_delay_s=30.0, multiplier=3.0)
    assert [p.next_delay(n) for n in range(1, 6)] == [2.0, 6.0, 18.0, 30.0, 30.0]
    assert p.next_delay(10_000) == 30.0  # no overflow
    with pytest.raises(ValueError):
        p.next_delay(0)


def test_backoff_jitter_is_deterministic_and_bounded() -> None:
    p = RetryPolicy(base_delay_s=10.0, max_delay_s=100.0, multiplier=2.0, jitter=0.5)
    a = [p.next_delay(n, key="item-1") for n in range(1, 8)]
    assert a == [p.next_delay(n, key="item-1") for n in range(1, 8)]  # pure
    b = [p.next_delay(n, key="item-2") for n in range(1, 8)]
    assert a != b  # different items do not retry in lock step
    nominal = RetryPolicy(base_delay_s=10.0, max_delay_s=100.0, multiplier=2.0)
    for n, d in enumerate(a, start=1):
        assert 0.5 * nominal.next_delay(n) < d <= nominal.next_delay(n)


def test_overdue() -> None:
    p = RetryPolicy(max_attempts=3)
    assert not p.overdue(2)
    assert p.overdue(3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay_s": -1.0},
        {"base_delay_s": 10.0, "max_delay_s": 5.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_retry_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_tls_settings_requires_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        TlsSettings(cert_file=tmp_path / "c.pem")
    ctx = TlsSettings().ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
