"""The ``dicom`` section: listener AE title, address, allowed callers, TLS, limits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from osteo_node.config.reader import Reader
from osteo_node.config.sections import AllowedCaller, DicomSettings, ListenerTls
from osteo_node.config.values import (
    ae_title,
    boolean,
    existing_file,
    int_in,
    ip_address,
    ip_list,
    modality_list,
    positive_float,
)


def read_dicom(top: Reader, base: Path) -> DicomSettings:
    """The ``dicom`` section of ``top``; an empty ``allowed_callers`` is a problem."""
    d = top.section("dicom")
    dicom = DicomSettings(
        ae_title=d.get("ae_title", "OSTEO_NODE", ae_title),
        bind_address=d.get("bind_address", "127.0.0.1", ip_address),
        port=d.get("port", 11112, int_in(1, 65535)),
        allowed_callers=read_callers(d),
        accepted_modalities=d.get("accepted_modalities", ("CT", "MR", "CR", "DX"),
                                  modality_list),
        tls=read_listener_tls(d, base),
        max_pdu=d.get("max_pdu", 262144, int_in(0, 2**32 - 1)),
        max_associations=d.get("max_associations", 16, int_in(1, 1000)),
        check_called_ae_title=d.get("check_called_ae_title", False, boolean),
        association_request_timeout_s=d.get("association_request_timeout_s", 5.0,
                                            positive_float),
        pre_association_per_peer=d.get("pre_association_per_peer", 4, int_in(1, 1000)),
        pre_association_budget=d.get("pre_association_budget", 32, int_in(1, 10000)),
    )
    d.finish()
    if not dicom.allowed_callers:
        top.problems.append("dicom.allowed_callers: list at least one calling AE title "
                            "(unknown callers are refused)")
    return dicom


def read_callers(r: Reader) -> tuple[AllowedCaller, ...]:
    r.used.add("allowed_callers")
    raw = r.data.get("allowed_callers")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("allowed_callers", "must be a list of AE titles or {ae_title, hosts}")
        return ()
    out: list[AllowedCaller] = []
    for i, item in enumerate(raw):
        where = f"allowed_callers[{i}]"
        entry = {"ae_title": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping):
            r.problem(where, "must be an AE title or a mapping {ae_title, hosts}")
            continue
        sub = Reader(entry, r.where(where), r.problems)
        ae = sub.get("ae_title", "", ae_title)
        hosts: list[str] = sub.get("hosts", [], ip_list)
        sub.finish()
        if ae:
            out.append(AllowedCaller(ae, tuple(hosts)))
        elif "ae_title" not in entry:
            sub.problem("ae_title", "is required")
    return tuple(out)


def read_listener_tls(r: Reader, base: Path) -> ListenerTls | None:
    t = r.section("tls")
    enabled = t.get("enabled", False, boolean)
    cert = t.get("cert_file", None, existing_file(base)) if enabled else None
    key = t.get("key_file", None, existing_file(base)) if enabled else None
    ca = t.get("ca_file", None, existing_file(base)) if enabled else None
    require = t.get("require_client_cert", False, boolean)
    if not enabled:
        t.used.update({"cert_file", "key_file", "ca_file"})
    t.finish()
    if not enabled:
        return None
    if cert is None or key is None:
        if "cert_file" not in t.data:
            t.problem("cert_file", "is required when tls.enabled is true")
        if "key_file" not in t.data:
            t.problem("key_file", "is required when tls.enabled is true")
        return None
    if require and ca is None:
        t.problem("require_client_cert", "needs ca_file to verify client certificates")
    return ListenerTls(cert, key, ca, require)
