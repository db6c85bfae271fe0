"""Where results go, how often sending is retried, how the sender works: immutable settings.

The node's configuration builds :class:`Destination` and :class:`RetryPolicy` objects; the outbox
and its sender only read them (:class:`SenderSettings` and :class:`Timeouts` tune the sender).
Everything here is pure (no I/O at construction); only :meth:`TlsSettings.ssl_context` reads
files, when the sender opens an association.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from osteo_node.outbox.dicomweb_settings import DicomWebTarget

#: Result object kinds the exporters produce: Comprehensive 3D SR (TID 1500), Segmentation,
#: Secondary Capture overlay, Key Object Selection.
ALL_KINDS: frozenset[str] = frozenset({"sr", "seg", "sc", "kos"})

DEFAULT_CALLING_AE = "OSTEO_NODE"


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """Return ``value`` if it is a valid DICOM AE title (1-16 chars, no backslash/control chars,
    not only spaces), else raise ValueError with a clear message."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{what} must not be empty")
    if len(value) > 16:
        raise ValueError(f"{what} {value!r} is longer than 16 characters")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(f"{what} {value!r} contains a backslash or a non-printable character")
    return value


@dataclass(frozen=True)
class TlsSettings:
    """TLS for an outgoing association (DICOM over TLS, the peer's certificate is verified).

    ``ca_file``: CA bundle that signed the PACS certificate (None: the system trust store).
    ``cert_file``/``key_file``: our client certificate, if the PACS requires mutual TLS.
    ``server_hostname``: name to check the PACS certificate against (default: the host).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS cert_file and key_file must be given together")

    def ssl_context(self) -> ssl.SSLContext:
        """Client-side SSL context (reads the certificate files)."""
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.check_hostname
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


@dataclass(frozen=True)
class Destination:
    """A DICOM peer (usually a PACS) that receives result objects by C-STORE, or, with
    ``dicomweb`` set (see :meth:`stow_rs`), by DICOMweb STOW-RS.

    ``kinds``: which result kinds it receives (subset of :data:`ALL_KINDS`), so e.g. one PACS gets
    everything and a viewer only the secondary captures. For a DICOMweb destination ``host`` and
    ``port`` are the URL's and ``ae_title`` is empty (not used).
    """

    name: str
    ae_title: str
    host: str
    port: int
    kinds: frozenset[str] = ALL_KINDS
    tls: TlsSettings | None = None
    calling_ae_title: str = DEFAULT_CALLING_AE
    dicomweb: DicomWebTarget | None = None

    @classmethod
    def stow_rs(
        cls, name: str, target: DicomWebTarget, *, kinds: frozenset[str] = ALL_KINDS
    ) -> Destination:
        """A destination that receives result objects by DICOMweb STOW-RS at ``target``."""
        return cls(name, "", target.host, target.port, kinds=kinds, dicomweb=target)

    @property
    def protocol(self) -> str:
        """``dimse`` (C-STORE) or ``dicomweb`` (STOW-RS)."""
        return "dimse" if self.dicomweb is None else "dicomweb"

    @property
    def endpoint(self) -> str:
        """Where it is, for people: ``AE@host:port`` or the DICOMweb URL."""
        if self.dicomweb is not None:
            return self.dicomweb.url
        return f"{self.ae_title}@{self.host}:{self.port}"

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("destination name must not be empty")
        if self.dicomweb is not None:
            if self.ae_title or self.tls is not None:
                raise ValueError(
                    f"destination {self.name!r}: a DICOMweb destination has no AE title or "
                    "DICOM TLS settings (its TLS is dicomweb.tls)"
                )
        else:
            validate_ae_title(self.ae_title, f"destination {self.name!r} AE title")
        validate_ae_title(self.calling_ae_title, f"destination {self.name!r} calling AE title")
        if not self.host or not self.host.strip():
            raise ValueError(f"destination {self.name!r}: host must not be empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"destination {self.name!r}: port must be an integer")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"destination {self.name!r}: port {self.port} not in 1..65535")
        kinds = frozenset(self.kinds)
        unknown = kinds - ALL_KINDS
        if unknown:
            raise ValueError(
                f"destination {self.name!r}: unknown result kind(s) {sorted(unknown)}; "
                f"allowed: {sorted(ALL_KINDS)}"
            )
        if not kinds:
            raise ValueError(f"destination {self.name!r}: kinds must not be empty")
        object.__setattr__(self, "kinds", kinds)

    def accepts(self, kind: str) -> bool:
        return kind in self.kinds


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with a cap.

    After the n-th failed attempt (n >= 1) the next attempt waits
    ``min(max_delay_s, base_delay_s * multiplier ** (n - 1))``, optionally shortened by up to
    ``jitter`` (a fraction, 0..1) so many items do not retry in lock step. The jitter is derived
    from a hash of ``key`` and ``n``, so :meth:`next_delay` stays a pure, deterministic function.
    A transient failure (PACS down, network) is never given up: after ``max_attempts`` failed
    attempts the item is *overdue* (reported once at ERROR, counted by ``status``) and goes on
    being retried every ``max_delay_s``, so results arrive when the PACS is back. Only a
    permanent failure (the peer refuses the object itself) ends in ``failed``.
    """

    max_attempts: int = 10
    base_delay_s: float = 5.0
    max_delay_s: float = 600.0
    multiplier: float = 2.0
    jitter: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("retry max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must be >= 0")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("retry max_delay_s must be >= base_delay_s")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("retry jitter must be within 0..1")

    def next_delay(self, attempt: int, key: str = "") -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        exponent = min(attempt - 1, 1024)
        try:
            raw = self.base_delay_s * self.multiplier**exponent
        except OverflowError:
            raw = self.max_delay_s
        delay = min(self.max_delay_s, raw)
        if self.jitter > 0.0:
            digest = hashlib.sha256(f"{key}\x00{attempt}".encode()).digest()
            fraction = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
            delay *= 1.0 - self.jitter * fraction
        return delay

    def overdue(self, attempts: int) -> bool:
        """True when ``attempts`` failed attempts are beyond the retry window."""
        return attempts >= self.max_attempts


@dataclass(frozen=True)
class Timeouts:
    """Seconds; ``connect`` is the TCP connection timeout."""

    connect: float = 10.0
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 60.0


@dataclass(frozen=True)
class SenderSettings:
    """How an outbox sender works through its destinations' items.

    ``batch_size``: items claimed per destination and pass (a dead destination with a long backlog
    cannot starve the others); ``lease_s``: how long a claim holds before another sender may take
    the item over; ``poll_interval_s``: the longest idle wait between passes; ``timeouts``: of
    the associations it opens; ``recover_at_start``: items left ``sending`` go back to
    ``pending`` when the sender starts (False when another host's sender runs: its items are
    its own and come back when their lease expires).
    """

    batch_size: int = 200
    lease_s: float = 900.0
    poll_interval_s: float = 0.5
    timeouts: Timeouts = field(default_factory=Timeouts)
    recover_at_start: bool = True
