"""The frozen dataclasses of the node configuration, one per YAML section, and :class:`Settings`.

Built and validated by :func:`osteo_node.config.settings.settings_from_mapping`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from osteo_node.outbox.policy import Destination, RetryPolicy


@dataclass(frozen=True)
class AllowedCaller:
    """A calling AE title that may associate; ``hosts`` (IPs) restrict it further if not empty."""

    ae_title: str
    hosts: tuple[str, ...] = ()

    def permits(self, ae_title: str, host: str) -> bool:
        return ae_title == self.ae_title and (not self.hosts or host in self.hosts)


@dataclass(frozen=True)
class ListenerTls:
    """TLS for incoming associations. With ``ca_file`` and ``require_client_cert`` the peer
    must present a certificate signed by that CA (mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = "OSTEO_NODE"
    bind_address: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: tuple[AllowedCaller, ...] = ()
    accepted_modalities: tuple[str, ...] = ("CT", "MR", "CR", "DX")
    tls: ListenerTls | None = None
    max_pdu: int = 262144
    #: associations served at once (callers that passed the AE title / host check)
    max_associations: int = 16
    #: seconds a new connection may take to send its A-ASSOCIATE-RQ (DICOM ARTIM timer)
    association_request_timeout_s: float = 5.0
    #: connections that have not (yet) sent a valid A-ASSOCIATE-RQ: at most this many per peer
    #: address, and this many in all on top of max_associations (idle or garbage connections
    #: cannot take the slots that callers need)
    pre_association_per_peer: int = 4
    pre_association_budget: int = 32
    #: refuse associations addressed to another AE title than ours (A-ASSOCIATE-RJ "called AE
    #: title not recognised"); off by default (some modalities send a site-wide title)
    check_called_ae_title: bool = False

    def caller_permitted(self, ae_title: str, host: str) -> bool:
        return any(c.permits(ae_title.strip(), host) for c in self.allowed_callers)


@dataclass(frozen=True)
class StorageSettings:
    spool_dir: Path = Path("var/spool")
    outbox_dir: Path = Path("var/outbox")
    database_url: str = "sqlite:///var/osteo_node.db"


@dataclass(frozen=True)
class QueueSettings:
    series_quiet_seconds: float = 30.0
    workers: int = 1
    job_lease_seconds: float = 300.0
    max_job_attempts: int = 3
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class ResultsSettings:
    """What the node produces from an analysis (see the exporters and the FLS worklist)."""

    #: UID root for every object the node creates (your organisation's registered root);
    #: None: UUID-derived ``2.25.`` UIDs. Deterministic per job either way.
    uid_root: str | None = None
    #: InstitutionName written into the result objects (None: copied from the source).
    institution_name: str | None = None
    #: add analysed patients with a positive finding to the fracture liaison worklist
    worklist: bool = True


@dataclass(frozen=True)
class FhirSettings:
    """The FHIR R4 server the FLS worklist is pushed to (``osteo-node worklist push-fhir``)."""

    #: FHIR base URL (http/https), e.g. https://ehr.example.org/fhir; None: no push
    base_url: str | None = None
    #: the hospital's patient-identifier system (URI, e.g. ``urn:oid:<MRN assigning authority>``)
    #: written into Patient.identifier.system and used for the conditional create
    patient_identifier_system: str | None = None
    #: file holding the bearer token (one line; keep it mode 0600); None: no Authorization
    token_file: Path | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class WebSettings:
    """The FLS web application (``osteo_node.web``); started by ``serve`` when ``enabled``."""

    enabled: bool = False
    bind_address: str = "127.0.0.1"  # loopback by default: put TLS / a proxy in front
    port: int = 8080
    #: signs the session cookies; None: a random key per start (sessions end on restart)
    secret_key_file: Path | None = None
    session_seconds: int = 8 * 3600
    #: TLS: both set -> HTTPS (cookies then only over HTTPS)
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    #: link from a study page to the hospital's viewer, "{study_uid}" replaced, e.g.
    #: https://pacs.example.org/ohif/viewer?StudyInstanceUIDs={study_uid}
    viewer_url: str | None = None
    #: sign-in by a trusted reverse proxy (e.g. the hospital's SSO): the user name in this
    #: header, believed only from ``trusted_proxies`` (the user must exist in web_users, which
    #: gives the role); None: local sign-in only
    trusted_user_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()


#: the roles a ``serve`` can run (``node.roles``, ``serve --roles``); ``web`` also needs
#: ``web.enabled``, ``outbox`` starts only when destinations are configured, ``retention`` only
#: when ``retention.enabled`` (run it on one host that has the spool and outbox folders)
ALL_ROLES: tuple[str, ...] = ("listener", "assembler", "worker", "outbox", "web", "retention")


@dataclass(frozen=True)
class NodeSettings:
    """This ``serve``: its name among the hosts sharing one database and spool, its roles."""

    #: tells hosts apart (heart-beats, job claims, spool slots); default: the host name
    name: str = field(default_factory=socket.gethostname)
    roles: tuple[str, ...] = ALL_ROLES
    #: each process records a heart-beat this often (stale after 3 missed beats)
    heartbeat_seconds: float = 10.0


@dataclass(frozen=True)
class RetentionSettings:
    """Deleting received images and sent results once settled (``osteo_node.retention``).
    A limit that is None does not apply; ages in hours, sizes in GB (10^9 bytes)."""

    enabled: bool = True
    spool_max_age_hours: float | None = 72.0
    outbox_max_age_hours: float | None = 168.0
    spool_max_total_gb: float | None = None
    outbox_max_total_gb: float | None = None
    interval_seconds: float = 300.0


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "auto"  # auto | json | console


@dataclass(frozen=True)
class Settings:
    dicom: DicomSettings = field(default_factory=DicomSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    destinations: tuple[Destination, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    results: ResultsSettings = field(default_factory=ResultsSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    web: WebSettings = field(default_factory=WebSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    #: modality -> "module:callable" analyser factory used INSTEAD of the registry entry
    #: (site-specific analysers, tests). Empty: the registry decides.
    analysers: Mapping[str, str] = field(default_factory=dict)
    #: "module:callable" turning an AnalysisOutput into DICOM datasets (the exporters).
    publisher: str = "osteo_node.worker.publish:exporters_publisher"
    source: str = ""
