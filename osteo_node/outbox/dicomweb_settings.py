"""Where a DICOMweb (STOW-RS) destination is and how to authenticate: immutable settings.

A :class:`~osteo_node.outbox.policy.Destination` with ``dicomweb`` set is sent to by STOW-RS
(:mod:`.stow`) instead of C-STORE. Secrets are never held here: :class:`WebAuth` names the files
that hold them and :meth:`WebAuth.credentials` reads them when a request is made, so a rotated
password or token is used without a restart. Nothing here does I/O at construction.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from osteo_node.secret_files import read_secret_file

#: ``auth.type`` values.
AUTH_TYPES: tuple[str, ...] = ("none", "basic", "bearer")


@dataclass(frozen=True)
class Credentials:
    """What one request sends: the ``Authorization`` header value (None: none) and a digest of
    the secret (to tell whether it changed since the server rejected it; never logged)."""

    authorization: str | None
    fingerprint: str

    def __repr__(self) -> str:  # never show the header value in a traceback or a log
        shown = "set" if self.authorization else "none"
        return f"Credentials(authorization={shown})"


@dataclass(frozen=True)
class WebAuth:
    """HTTP authentication of a DICOMweb destination.

    ``type``: ``none``; ``basic`` (``username`` + ``password_file``, RFC 7617); ``bearer``
    (``token_file``, RFC 6750). A secret file holds the secret on its first line (a trailing
    newline is ignored); keep it readable only by the node's user.
    """

    type: str = "none"
    username: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None

    def __post_init__(self) -> None:
        if self.type not in AUTH_TYPES:
            raise ValueError(f"auth type must be one of {', '.join(AUTH_TYPES)}, got {self.type!r}")
        if self.type == "basic":
            if not self.username or not self.password_file:
                raise ValueError("basic auth needs username and password_file")
            if ":" in self.username:
                raise ValueError("basic auth username must not contain ':'")
        if self.type == "bearer" and not self.token_file:
            raise ValueError("bearer auth needs token_file")
        extra = {
            "none": ("username", "password_file", "token_file"),
            "basic": ("token_file",),
            "bearer": ("username", "password_file"),
        }[self.type]
        given = [k for k in extra if getattr(self, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} not used with auth type {self.type}")

    @property
    def sends_secret(self) -> bool:
        return self.type != "none"

    def credentials(self) -> Credentials:
        """Read the secret file now. Raises ``OSError`` (unreadable) or ``ValueError`` (empty,
        several lines) with a reason that names the file, never its content."""
        if self.type == "none":
            return Credentials(None, "none")
        secret_file = self.password_file if self.type == "basic" else self.token_file
        assert secret_file is not None  # __post_init__
        secret = read_secret_file(secret_file)
        if self.type == "basic":
            raw = f"{self.username}:{secret}".encode()
            header = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            header = f"Bearer {secret}"
        digest = hashlib.sha256(f"{self.type}\x00{header}".encode()).hexdigest()
        return Credentials(header, digest)


@dataclass(frozen=True)
class WebTls:
    """TLS of an ``https://`` DICOMweb destination.

    ``ca_file``: CA bundle that signed the server's certificate (None: the system trust store);
    ``verify``: check the server's certificate and name (default; false only for a test bench);
    ``cert_file``/``key_file``: our client certificate, if the server requires mutual TLS.
    """

    ca_file: Path | None = None
    verify: bool = True
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS cert_file and key_file must be given together")

    def ssl_context(self) -> ssl.SSLContext:
        """Client-side SSL context (reads the certificate files; may raise OSError or
        ssl.SSLError)."""
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


@dataclass(frozen=True)
class DicomWebTarget:
    """A DICOMweb service that receives result objects by STOW-RS (PS3.18 10.5).

    ``url``: the service's base URL (the part before ``/studies``), e.g.
    ``https://pacs.example.org/dicom-web``; ``allow_plain_http_auth``: send credentials over
    ``http://`` anyway (off: refused at configuration, the secret would cross the network in
    clear text).
    """

    url: str
    auth: WebAuth = field(default_factory=WebAuth)
    tls: WebTls = field(default_factory=WebTls)
    allow_plain_http_auth: bool = False

    def __post_init__(self) -> None:
        url = self.url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL with a host, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not hold credentials (user:password@); use auth")
        if parts.query or parts.fragment:
            raise ValueError("url must not have a query or a fragment")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"url has an invalid port: {exc}") from None
        if parts.scheme == "http" and self.auth.sends_secret and not self.allow_plain_http_auth:
            raise ValueError(
                f"{self.auth.type} credentials over http:// would cross the network in clear "
                "text; use https:// (or set auth.allow_plain_http: true on a private link)"
            )
        object.__setattr__(self, "url", url)

    @property
    def host(self) -> str:
        return str(urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def is_https(self) -> bool:
        return self.url.startswith("https://")

    def studies_url(self, study_instance_uid: str | None) -> str:
        """``{url}/studies`` or, for instances of one study, ``{url}/studies/{uid}`` (the
        server then refuses an instance of another study)."""
        if study_instance_uid:
            return f"{self.url}/studies/{study_instance_uid}"
        return f"{self.url}/studies"
