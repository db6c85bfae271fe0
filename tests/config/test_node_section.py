"""The ``node`` section (issue 14): the node's name among hosts and the roles it runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from osteo_node.config import ConfigError, settings_from_mapping
from osteo_node.config.node_section import RoleError, parse_roles
from osteo_node.config.sections import ALL_ROLES
from osteo_node.node.supervisor import plan_children

DEST = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242, "send": ["sr"]}
CALLERS = {"dicom": {"allowed_callers": ["SCANNER"]}}


def test_defaults_run_every_role_under_the_host_name(tmp_path: Path) -> None:
    node = settings_from_mapping(CALLERS, tmp_path).node
    assert node.name == socket.gethostname()
    assert node.roles == ALL_ROLES
    assert node.heartbeat_seconds == 10.0


def test_roles_from_a_list_or_a_comma_separated_string_in_canonical_order() -> None:
    assert parse_roles(["worker", "listener"]) == ("listener", "worker")
    assert parse_roles(" outbox, Worker ,worker") == ("worker", "outbox")


@pytest.mark.parametrize(("value", "message"), [
    ("listener,wroker", "unknown role(s) wroker; valid roles: listener, assembler, worker"),
    ("", "at least one role is needed"),
    ([], "at least one role is needed"),
])
def test_bad_roles_say_what_is_valid(value: object, message: str) -> None:
    with pytest.raises(RoleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_roles(value)


def test_problems_are_reported_with_their_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({**CALLERS, "node": {
            "name": "a/b", "roles": ["listener", "x"], "heartbeat_seconds": 0,
            "colour": 1}}, tmp_path)
    text = str(err.value)
    assert "node.name: at most 64 characters, no '/'" in text
    assert "node.roles: unknown role(s) x" in text
    assert "node.heartbeat_seconds: must be > 0" in text
    assert "node.colour: unknown setting" in text


def test_the_supervisor_plans_only_the_chosen_roles(tmp_path: Path) -> None:
    def names(raw: dict[str, object]) -> list[str]:
        settings = settings_from_mapping({**CALLERS, **raw}, tmp_path)
        return [c.name for c in plan_children(settings) if c.role != "retention"]

    base: dict[str, object] = {"queue": {"workers": 2}, "destinations": [DEST]}
    assert names(base) == ["listener", "assembler", "worker-0", "worker-1", "outbox"]
    assert names({**base, "node": {"roles": "listener,worker"}}) == [
        "listener", "worker-0", "worker-1"]
    assert names({**base, "node": {"roles": ["outbox"]}}) == ["outbox"]
    assert names({"node": {"roles": ["outbox"]}}) == []  # no destinations: nothing to send
    assert names({"web": {"enabled": True}, "node": {"roles": ["assembler", "web"]}}) == [
        "assembler", "web"]
    assert names({"node": {"roles": ["assembler", "web"]}}) == ["assembler"]  # web disabled


def test_check_config_shows_the_node_and_hides_the_database_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from osteo_node.cli.main import main

    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        **CALLERS, "node": {"name": "ct-b", "roles": "worker,listener"},
        "storage": {"database_url": "postgresql+psycopg://osteo:s3cret@db.example/osteo"}}))
    assert main(["check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "  node ct-b, roles listener, worker" in out
    assert "postgresql+psycopg://osteo:***@db.example/osteo" in out and "s3cret" not in out
