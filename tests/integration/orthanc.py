"""A real Orthanc (Debian package, ``/usr/sbin/Orthanc``) as the destination PACS in tests.

Orthanc binds all interfaces, so it runs inside a private network namespace made for the test.
The namespace is joined to the host by one veth pair with a /30 link-local address on each end
(``169.254.X.Y``): the host side is the only peer; the namespace has no default route, so
nothing else can reach Orthanc (or get an answer from it). The test process (and any node or
dcmtk process it starts on the host) talks to ``server.host`` (the namespace end).

Usage in a test module::

    from tests.integration.orthanc import orthanc_fixture  # noqa: F401  (registers `orthanc`)

    def test_x(orthanc: OrthancServer) -> None:
        dest = orthanc.destination()          # an outbox Destination pointing at it
        ...
        assert orthanc.instance_count() == 3

or ``with running_orthanc(tmp_dir) as server: ...``. ``stop()``/``start()`` restart it on the
same storage (the PACS-down case). Readiness is waited for by polling ``/system``. Needs root
and ``ip netns``; tests skip with a reason otherwise (:func:`unavailable_reason`).

Orthanc is started without plugins (``"Plugins": []``, unless ``extra_config`` says otherwise)
and with a small Lua
``ReceivedInstanceFilter`` that appends the SOP Instance UID of every received instance to a
file, so a test can tell "stored once" from "sent twice, deduplicated by Orthanc"
(:meth:`OrthancServer.received_sop_uids`).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
DEBIAN_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")

_LUA_RECEIVED = """
function ReceivedInstanceFilter(dicom, origin, info)
  local f = io.open("{log}", "a")
  if f ~= nil then
    f:write(tostring(dicom.SOPInstanceUID) .. "\\n")
    f:close()
  end
  return true
end
"""


def unavailable_reason() -> str | None:
    """Why a namespaced Orthanc cannot be started here, or None."""
    if not (ORTHANC_BIN.is_file() and os.access(ORTHANC_BIN, os.X_OK)):
        return f"Orthanc not installed ({ORTHANC_BIN}; Debian package 'orthanc')"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not found (needed for a private network namespace)"
    if os.geteuid() != 0:
        return "creating a network namespace for Orthanc needs root"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"'ip netns' unavailable: {probe.stderr.strip()}"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


@dataclass
class PrivateLink:
    """A network namespace joined to the host by a veth pair on a private /30."""

    ns: str
    host_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls) -> PrivateLink:
        token = secrets.token_hex(4)
        ns, host_if, ns_if = f"osteo-{token}", f"vo{token}h", f"vo{token}n"
        used = _used_ipv4_networks()
        rng = random.Random()
        for _ in range(50):
            third = rng.choice([n for n in range(1, 255) if n != 169])  # not 169.254.169.x
            base = rng.randrange(0, 64) * 4
            net = ipaddress.ip_network(f"169.254.{third}.{base}/30")
            if not any(net.overlaps(u) for u in used):
                break
        else:
            raise OSError("no free 169.254.x.y/30 for the test link")
        host_ip, ns_ip = (str(h) for h in net.hosts())
        _ip("netns", "add", ns)
        link = cls(ns, host_if, host_ip, ns_ip)
        try:
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("addr", "add", f"{ns_ip}/30", "dev", ns_if, ns=ns)
            _ip("link", "set", ns_if, "up", ns=ns)
        except OSError:
            link.delete()
            raise
        return link

    def delete(self) -> None:
        """Remove the namespace (its veth end goes with it, taking the host end along)."""
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)

    def exists(self) -> bool:
        out = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        return any(line.split()[0] == self.ns for line in out.splitlines() if line.strip())


@dataclass
class OrthancServer:
    """One Orthanc in its own namespace with storage under ``workdir`` (kept across restarts)."""

    workdir: Path
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=lambda: random.randrange(20000, 60000))
    http_port: int = field(default_factory=lambda: random.randrange(20000, 60000))
    user: str = "osteo-test"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    start_timeout_s: float = 60.0
    #: merged over the generated configuration (e.g. the DICOMweb plugin, see orthanc_dicomweb)
    extra_config: dict[str, Any] = field(default_factory=dict)
    link: PrivateLink | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.http_port == self.dicom_port:
            self.http_port += 1

    # -- addresses --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """Address of Orthanc as seen from the host (the namespace end of the veth pair)."""
        if self.link is None:
            raise RuntimeError("Orthanc network namespace not created (call start())")
        return self.link.ns_ip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    @property
    def received_log(self) -> Path:
        return self.workdir / "received.txt"

    def destination(self, name: str = "orthanc", **kwargs: Any) -> Any:
        """An outbox :class:`~osteo_node.outbox.policy.Destination` pointing at this Orthanc."""
        from osteo_node.outbox.policy import Destination

        return Destination(name, self.aet, self.host, self.dicom_port, **kwargs)

    # -- life cycle -------------------------------------------------------------------------
    def _write_config(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        lua = self.workdir / "received.lua"
        lua.write_text(_LUA_RECEIVED.format(log=self.received_log.as_posix()))
        config = {
            "Name": "osteo-node-test-orthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [],  # none of the Debian plugins in /usr/share/orthanc/plugins
            "LuaScripts": [str(lua)],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            # The REST API is reached over the private veth link, which Orthanc counts as
            # remote: allow it, behind a per-run random password. Nothing else can reach it.
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,  # any calling AE may store (no modality list)
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "UnknownSopClassAccepted": False,
            "OverwriteInstances": False,
            "DicomScpTimeout": 30,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
            "SaveJobs": False,
            "StableAge": 2,
            "DeidentifyLogs": True,
        }
        config.update(self.extra_config)
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> OrthancServer:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.link is None:
            self.link = PrivateLink.create()
        config = self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["ip", "netns", "exec", self.link.ns, str(ORTHANC_BIN), str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            if self._http_ok() and self._dicom_port_open():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc not ready after {self.start_timeout_s} s")
            time.sleep(0.1)

    def _http_ok(self) -> bool:
        try:
            return isinstance(self.get_json("/system", timeout=2.0), dict)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _dicom_port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.dicom_port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 30 s); the namespace and storage stay."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        """PID of the Orthanc process (``ip netns exec`` execs into it), if running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop Orthanc and delete the namespace and veth pair."""
        self.stop()
        if self.link is not None:
            self.link.delete()
            self.link = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- REST -------------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, timeout: float = 30.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=data)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body: bytes = resp.read()
        return body

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self._request(path, timeout=timeout))

    def post_json(self, path: str, body: bytes) -> Any:
        return json.loads(self._request(path, data=body))

    def studies(self) -> list[str]:
        """Orthanc IDs of all studies."""
        return list(self.get_json("/studies"))

    def study_uid(self, study_id: str) -> str:
        return str(self.get_json(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"])

    def series_of(self, study_id: str) -> list[dict[str, Any]]:
        """The series of a study (Orthanc's expanded JSON: MainDicomTags, Instances, ...)."""
        return list(self.get_json(f"/studies/{study_id}/series"))

    def instances(self) -> list[str]:
        """Orthanc IDs of all instances."""
        return list(self.get_json("/instances"))

    def instance_count(self) -> int:
        return int(self.get_json("/statistics")["CountInstances"])

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        return dict(self.get_json(f"/instances/{instance_id}/simplified-tags"))

    def lookup(self, dicom_uid: str) -> list[dict[str, Any]]:
        """Resources with this DICOM UID (``/tools/lookup``), e.g. a SOP Instance UID."""
        return list(self.post_json("/tools/lookup", dicom_uid.encode()))

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of every stored instance (one per stored instance)."""
        return [str(self.instance_tags(i)["SOPInstanceUID"]) for i in self.instances()]

    def fetch_instance(self, instance_id: str) -> Dataset:
        """The stored DICOM file, parsed with pydicom."""
        return dcmread(BytesIO(self._request(f"/instances/{instance_id}/file")))

    def received_sop_uids(self) -> list[str]:
        """SOP Instance UIDs of every instance Orthanc received, one line per C-STORE
        (duplicates included, across restarts)."""
        try:
            return [ln for ln in self.received_log.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []


@contextlib.contextmanager
def running_orthanc(workdir: Path, **kwargs: Any) -> Iterator[OrthancServer]:
    server = OrthancServer(workdir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(name="orthanc")
def orthanc_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A running Orthanc reachable only from this host (see the module docstring)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    try:
        try:
            server.link = PrivateLink.create()
        except OSError as exc:
            pytest.skip(f"cannot create a private network namespace: {exc}")
        server.start()
        yield server
    finally:
        server.close()
