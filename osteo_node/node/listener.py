"""The listener process: a pynetdicom AE serving C-ECHO and C-STORE."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any, cast

import structlog
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from osteo_node.config import DicomSettings, ListenerTls, Settings
from osteo_node.node.handlers import (
    AssociationPolicy,
    PeerBudget,
    StoreHandler,
    answer_invalid_store,
    handle_echo,
)
from osteo_node.node.sop_classes import TRANSFER_SYNTAXES, storage_sop_classes
from osteo_node.store.db import make_engine
from osteo_node.store.index_writer import IndexWriter
from osteo_node.store.reconcile import reconcile_spool
from osteo_node.store.spool import Spool
from osteo_node.store.sql import immediate_transactions, relax_commit_durability

log = structlog.get_logger(__name__)


def build_ae(settings: DicomSettings) -> AE:
    # pynetdicom's "standard" handlers only log PDU and DIMSE contents at DEBUG (patient data;
    # this node logs pynetdicom at WARNING), and the DIMSE one raises on a C-STORE request
    # without an Affected SOP Instance UID, which stops every later handler of the event
    # (answer_invalid_store). Documented setting: pynetdicom._config.LOG_HANDLER_LEVEL.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    # pynetdicom counts every open connection, associated or not: our own limit of callers
    # served is AssociationPolicy's; this one only bounds the threads
    ae.maximum_associations = settings.max_associations + settings.pre_association_budget
    ae.acse_timeout = settings.association_request_timeout_s  # the ARTIM timer
    ae.dimse_timeout = 60
    ae.network_timeout = 120
    ae.add_supported_context(Verification)
    for uid in storage_sop_classes(settings.accepted_modalities):
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    # Calling AE title (and host) are checked by AssociationPolicy; the called AE title only
    # when configured (dicom.check_called_ae_title).
    ae.require_called_aet = settings.check_called_ae_title
    return ae


class BudgetedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a per-peer budget of not-yet-associated connections
    checked at TCP accept (socketserver's ``verify_request``): a refused connection is closed
    before an association thread exists."""

    budget: PeerBudget | None = None

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.budget is None:
            return True
        return self.budget.admit(str(client_address[0]), self.ae)


def server_ssl_context(tls: ListenerTls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    if tls.ca_file is not None and not tls.require_client_cert:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class Listener:
    """Owns the AE server; :meth:`start` returns once the port is bound."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.storage.database_url)
        relax_commit_durability(self.engine)
        immediate_transactions(self.engine)
        self.spool = Spool(settings.storage.spool_dir, owner=settings.node.name)
        self.indexer = IndexWriter(self.engine)
        self.ae = build_ae(settings.dicom)
        self._server: Any = None
        self._upkeep_stop = threading.Event()
        self._upkeep = threading.Thread(target=self._upkeep_loop, name="spool-upkeep",
                                        daemon=True)

    def _upkeep_loop(self) -> None:
        # Slot refills are needed promptly; directory fsyncs only bound how long recovery may
        # have to look at slots (every rename is already safe), so they can be infrequent.
        while not self._upkeep_stop.wait(0.5):
            self.spool.maintain()

    def prepare(self, check_spool: bool = True) -> None:
        """Create tables, remove crash leftovers and index spooled files the index lacks.

        ``check_spool=False``: that was just done by the supervisor
        (:func:`osteo_node.node.supervisor.prepare_state`); only take up the free slots.
        """
        if not check_spool:
            self.spool.open()
            return
        filed, discarded = self.spool.recover()
        added = reconcile_spool(self.engine, self.spool)
        log.info("spool checked", slots_recovered=filed, torn_slots_discarded=discarded,
                 instances_reindexed=added)

    def start(self) -> None:
        d = self.settings.dicom
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, AssociationPolicy(d)),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_DIMSE_RECV, answer_invalid_store),
            (evt.EVT_C_STORE, StoreHandler(self.spool, self.indexer, d.accepted_modalities)),
        ]
        ssl_ctx = server_ssl_context(d.tls) if d.tls else None
        self._upkeep.start()
        self.indexer.start()
        server = cast(BudgetedServer, self.ae.make_server(
            (d.bind_address, d.port), evt_handlers=handlers, ssl_context=ssl_ctx,
            server_class=BudgetedServer))
        server.budget = PeerBudget(d)
        threading.Thread(target=server.serve_forever, name="listener-accept",
                         daemon=True).start()
        # as AE.start_server does: the AE knows its servers (server.shutdown() unregisters)
        self.ae._servers.append(server)
        self._server = server
        log.info("listening", ae_title=d.ae_title, address=d.bind_address, port=d.port,
                 tls=ssl_ctx is not None, modalities=list(d.accepted_modalities))

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let running associations finish for ``grace_seconds``, abort the
        rest (their unacknowledged instances are the sender's to retry), release resources."""
        if self._server is not None:
            server, self._server = self._server, None
            # Do not block on request threads (e.g. a TCP probe that never sends an
            # A-ASSOCIATE-RQ would hold shutdown for the ACSE timeout).
            server.block_on_close = False
            server.shutdown()
            deadline = time.monotonic() + grace_seconds
            # Only established associations may be mid-transfer; a connection still waiting
            # for its A-ASSOCIATE-RQ (e.g. a port probe) is aborted at once.
            while (any(a.is_established for a in self.ae.active_associations)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            for assoc in list(self.ae.active_associations):
                if assoc.is_established:
                    assoc.abort()
                else:
                    # Still negotiating (e.g. a peer that never sent its A-ASSOCIATE-RQ):
                    # abort() would wait for a reactor that never runs; stop its DUL thread
                    # (not a daemon thread, it would keep the process alive).
                    assoc.dul.kill_dul()
        if self._upkeep.is_alive():
            self._upkeep_stop.set()
            self._upkeep.join()
        self.spool.sync_dirty()
        self.indexer.stop(timeout=grace_seconds)
        self.engine.dispose()


def run_listener(settings: Settings, stop: threading.Event | None = None,
                 prepared: bool = False) -> None:
    """Run until ``stop`` is set (or forever). ``prepared``: the tables exist and the spool was
    just checked and reconciled (by the supervisor), so it is not done again here."""
    listener = Listener(settings)
    listener.prepare(check_spool=not prepared)
    listener.start()
    try:
        event = stop or threading.Event()
        # Wake up regularly: a signal delivered to another thread only runs its Python
        # handler (which sets ``stop``) once the main thread gets control again.
        while not event.wait(0.5):
            pass
    finally:
        listener.stop()
