"""The ``web`` child of ``osteo-node serve``: the FLS application under uvicorn until stopped."""

from __future__ import annotations

import threading

import structlog
import uvicorn

from osteo_node.config import Settings
from osteo_node.store.db import make_engine
from osteo_node.web.app import WebContext, create_app

log = structlog.get_logger(__name__)


def run_web(settings: Settings, stop: threading.Event) -> None:
    web = settings.web
    secret = (web.secret_key_file.read_text(encoding="utf-8").strip()
              if web.secret_key_file is not None else None)
    tls = web.tls_certificate is not None and web.tls_private_key is not None
    engine = make_engine(settings.storage.database_url)
    app = create_app(WebContext(engine, spool_dir=settings.storage.spool_dir,
                                outbox_dir=settings.storage.outbox_dir,
                                viewer_url=web.viewer_url,
                                patient_identifier_system=(
                                    settings.fhir.patient_identifier_system),
                                trusted_user_header=web.trusted_user_header,
                                trusted_proxies=web.trusted_proxies,
                                session_seconds=web.session_seconds, https_only=tls),
                     secret_key=secret)
    config = uvicorn.Config(
        app, host=web.bind_address, port=web.port, log_config=None, access_log=False,
        ssl_certfile=str(web.tls_certificate) if tls else None,
        ssl_keyfile=str(web.tls_private_key) if tls else None,
        h11_max_incomplete_event_size=16 * 1024)
    server = uvicorn.Server(config)

    def stop_when_asked() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=stop_when_asked, daemon=True).start()
    log.info("web_started", host=web.bind_address, port=web.port, tls=tls)
    try:
        server.run()
    finally:
        engine.dispose()
        log.info("web_stopped")
