"""A TLS-terminating TCP proxy for tests: HTTPS in front of a namespaced Orthanc.

Orthanc's own HTTPS (``"SslEnabled": true``) cannot be used with Debian bookworm's packages:
Orthanc 1.10.1 with libcivetweb1 crashes (SIGSEGV in a civetweb worker calling a null function
pointer) on the first TLS connection. Hospitals often terminate TLS at a reverse proxy in front
of the PACS anyway; this is such a proxy, started *inside* Orthanc's network namespace::

    python -m tests.integration.tls_proxy LISTEN_IP LISTEN_PORT TARGET_PORT CERT KEY [CLIENT_CA]

It accepts TLS 1.2+ on LISTEN_IP:LISTEN_PORT with CERT/KEY (requiring a client certificate
signed by CLIENT_CA when given) and forwards the decrypted bytes to 127.0.0.1:TARGET_PORT.
:func:`running_tls_proxy` starts it (a :class:`TlsFront`) in a namespace and waits until it
accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError, RuntimeError):
            writer.close()


async def _serve(listen_ip: str, listen_port: int, target_port: int, ctx: ssl.SSLContext) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen_ip, listen_port, ssl=ctx)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_ip, listen_port, target_port, cert, key, *client_ca = argv
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca[0])
        ctx.verify_mode = ssl.CERT_REQUIRED
    asyncio.run(_serve(listen_ip, int(listen_port), int(target_port), ctx))


@dataclass(frozen=True)
class TlsFront:
    """Where the proxy listens (``listen_ip:listen_port``, inside namespace ``ns``), where it
    forwards to (``127.0.0.1:target_port`` in the namespace), its certificate and key, and the
    CA a client certificate must be signed by (None: no client certificate asked for)."""

    ns: str
    listen_ip: str
    listen_port: int
    target_port: int
    cert: Path
    key: Path
    client_ca: Path | None = None

    def argv(self) -> list[str]:
        args = [self.listen_ip, str(self.listen_port), str(self.target_port), str(self.cert),
                str(self.key)]
        return [*args, str(self.client_ca)] if self.client_ca is not None else args


@contextlib.contextmanager
def running_tls_proxy(
    front: TlsFront, log: Path, timeout_s: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """The proxy running, accepting connections (its stderr, e.g. refused handshakes, goes to
    ``log``)."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", front.ns, sys.executable, "-m",
             "tests.integration.tls_proxy", *front.argv()],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"TLS proxy exited with {proc.returncode}: {tail}")
            try:
                with socket.create_connection((front.listen_ip, front.listen_port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("TLS proxy not accepting connections") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1:])
