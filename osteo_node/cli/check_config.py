"""``osteo-node check-config --config FILE``: validate a configuration without starting."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("check-config", help="validate a configuration file and exit")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osteo_node.config import ConfigError, load_settings

    try:
        s = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    d = s.dicom
    print(f"configuration OK: {args.config}")
    print(f"  AE {d.ae_title} on {d.bind_address}:{d.port} (TLS {'on' if d.tls else 'off'}), "
          f"callers {[c.ae_title for c in d.allowed_callers]}, "
          f"modalities {list(d.accepted_modalities)}")
    print(f"  spool {s.storage.spool_dir}, database {_without_password(s.storage.database_url)}")
    print(f"  node {s.node.name}, roles {', '.join(s.node.roles)}")
    print(f"  series quiet {s.queue.series_quiet_seconds:g} s, workers {s.queue.workers}")
    print(f"  destinations {[f'{x.name}={x.protocol}:{x.endpoint}' for x in s.destinations]}")
    print(f"  retention {_retention(s.retention)}")
    return 0


def _retention(r: Any) -> str:
    if not r.enabled:
        return "off (nothing is deleted)"

    def limit(hours: float | None, gb: float | None) -> str:
        parts = [f"after {hours:g} h" if hours is not None else "",
                 f"above {gb:g} GB" if gb is not None else ""]
        return " or ".join(p for p in parts if p) or "kept"

    return (f"spool {limit(r.spool_max_age_hours, r.spool_max_total_gb)}, outbox "
            f"{limit(r.outbox_max_age_hours, r.outbox_max_total_gb)}, every "
            f"{r.interval_seconds:g} s")


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
