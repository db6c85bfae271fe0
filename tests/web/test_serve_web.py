"""``osteo-node serve`` with ``web.enabled`` starts the FLS application as its own process on
127.0.0.1; a user made with ``osteo-node web-user add`` signs in over real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.node.support import REPO, NodeProcess, free_port, node_config, wait_until, write_config


def test_serve_starts_the_web_application(tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    cfg = node_config(tmp_path, port, web={"enabled": True, "bind_address": "127.0.0.1",
                                           "port": web_port})
    config = write_config(tmp_path, cfg)
    add = subprocess.run(
        [sys.executable, "-m", "osteo_node", "web-user", "add", "nurse", "--role", "editor",
         "--password-stdin", "--config", str(config)],
        input="a-long-enough-password\n", capture_output=True, text=True, cwd=REPO,
        timeout=120, check=False)
    assert add.returncode == 0, add.stderr
    assert "a-long-enough-password" not in add.stdout + add.stderr
    node = NodeProcess(config, tmp_path / "node.log").start(port)
    try:
        base = f"http://127.0.0.1:{web_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).text == "ok\n"
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, what="web /healthz")
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        with httpx.Client(base_url=base, timeout=10) as client:
            login = client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
            r = client.post("/login", data={"name": "nurse", "password":
                                            "a-long-enough-password", "csrf": token})
            assert r.status_code == 303
            page = client.get("/")
            assert page.status_code == 200 and "0 studies" in page.text
    finally:
        assert node.stop() == 0
    assert "a-long-enough-password" not in (tmp_path / "node.log").read_text()
