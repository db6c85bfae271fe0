"""The ``node`` section: which host this is and which of the node's roles it runs.

Several ``serve`` processes, on one host or several, can share one PostgreSQL database and one
spool (docs/deployment.md, "Several hosts"); each runs the roles it is given. ``name`` tells the
hosts apart (heart-beats, job claims, spool slots) and defaults to the host name.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from osteo_node.config.reader import Reader
from osteo_node.config.sections import ALL_ROLES, NodeSettings
from osteo_node.config.values import positive_float


class RoleError(ValueError):
    """An unknown role name (the message lists the valid ones)."""


def parse_roles(value: Any) -> tuple[str, ...]:
    """Roles from a list or a comma-separated string: known names, no duplicates, at least one;
    returned in the order of :data:`ALL_ROLES`."""
    if isinstance(value, str):
        names: Iterable[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        names = value
    else:
        raise TypeError("must be a list of roles or a comma-separated string")
    chosen = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = sorted(set(chosen) - set(ALL_ROLES))
    if unknown:
        raise RoleError(f"unknown role(s) {', '.join(unknown)}; valid roles: "
                        f"{', '.join(ALL_ROLES)}")
    if not chosen:
        raise RoleError(f"at least one role is needed; valid roles: {', '.join(ALL_ROLES)}")
    return tuple(r for r in ALL_ROLES if r in chosen)


def node_name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError("must be a non-empty string")
    name = v.strip()
    if len(name) > 64 or any(c in name for c in "/:\\") or name.startswith("."):
        raise ValueError("at most 64 characters, no '/', ':' or '\\', not starting with '.'")
    return name


def read_node(top: Reader) -> NodeSettings:
    n = top.section("node")
    node = NodeSettings(
        name=n.get("name", node_name(socket.gethostname()), node_name),
        roles=n.get("roles", ALL_ROLES, parse_roles),
        heartbeat_seconds=n.get("heartbeat_seconds", 10.0, positive_float),
    )
    n.finish()
    return node
