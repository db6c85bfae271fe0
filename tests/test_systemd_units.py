"""The systemd units (issue 14): the per-role template ``osteo-node@.service`` runs ``serve
--roles %i`` after ``osteo-node-migrate.service`` (``db upgrade``); each command line parses with
the real command-line parser and each role is one ``serve`` accepts; ``systemd-analyze verify``
finds nothing wrong (when installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from osteo_node.cli.main import build_parser
from osteo_node.config.node_section import parse_roles
from osteo_node.config.sections import ALL_ROLES

UNITS = Path(__file__).resolve().parents[1] / "systemd"
EXE = "/opt/osteo-node/bin/osteo-node"


def _directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _argv(exec_line: str) -> list[str]:
    argv = shlex.split(exec_line)
    assert argv[0] == EXE
    return argv[1:]


def test_role_template_serves_its_instance_role_after_the_migration() -> None:
    unit = _directives(UNITS / "osteo-node@.service")
    assert unit["Requires"] == ["osteo-node-migrate.service"]
    assert "osteo-node-migrate.service" in unit["After"][0].split()
    (start,) = unit["ExecStart"]
    for role in ALL_ROLES:
        args = build_parser().parse_args(_argv(start.replace("%i", role)))
        assert args.command == "serve" and args.config == "/etc/osteo-node/osteo_node.yaml"
        assert parse_roles(args.roles) == (role,)


def test_migration_unit_upgrades_once_before_the_roles() -> None:
    unit = _directives(UNITS / "osteo-node-migrate.service")
    assert unit["Type"] == ["oneshot"] and unit["RemainAfterExit"] == ["yes"]
    (start,) = unit["ExecStart"]
    args = build_parser().parse_args(_argv(start))
    assert (args.command, args.db_command, args.config) == (
        "db", "upgrade", "/etc/osteo-node/osteo_node.yaml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_verify(tmp_path: Path) -> None:
    exe = shutil.which("osteo-node") or shutil.which("true")
    assert exe is not None
    names = ["osteo-node.service", "osteo-node-migrate.service", "osteo-node@.service"]
    for name in names:
        text = (UNITS / name).read_text().replace(EXE, exe)
        (tmp_path / name).write_text(text)
    (tmp_path / "osteo-node@worker.service").write_text(
        (tmp_path / "osteo-node@.service").read_text())
    r = subprocess.run(["systemd-analyze", "verify", "--recursive-errors=no",
                        *(str(tmp_path / n) for n in ("osteo-node.service",
                                                       "osteo-node-migrate.service",
                                                       "osteo-node@worker.service"))],
                       capture_output=True, text=True, timeout=120, check=False)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if "osteo-node" in ln and "not executable" not in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
