"""``osteo-node worklist export --since``: a date or an ISO date-time; anything else is a usage
error (exit 2) that names the expected format."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from osteo_node.cli.main import main as cli_main
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.worklist import export_csv, store


def test_since_in_another_format_is_a_usage_error_naming_the_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    for bad in ("22/11/2026", "2026-13-01", "yesterday", ""):
        with pytest.raises(SystemExit) as exc:
            cli_main(["worklist", "export", "--since", bad, "--db", url])
        assert exc.value.code == 2, bad
        err = capsys.readouterr().err
        assert f"argument --since: {bad!r} is not a date: expected YYYY-MM-DD" in err, err
        assert "ISO 8601 date-time" in err and "fromisoformat" not in err
    assert not (tmp_path / "node.db").exists()  # nothing opened or created
    proc = subprocess.run(
        [sys.executable, "-c", "from osteo_node.cli.main import entry; entry()", "worklist",
         "export", "--since", "22/11/2026", "--db", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "expected YYYY-MM-DD (a UTC day) or an ISO 8601 date-time" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.shared_data
def test_since_date_and_date_time_select_rows(tmp_path: Path,
                                              ct20_output: AnalysisOutput) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    first = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
    store.add_from_result(engine, ct20_output, now=first)
    later = AnalysisOutput(dataclasses.replace(ct20_output.result,
                                               series_instance_uid="1.2.3.4.5.6"),
                           ct20_output.volume, ct20_output.labels)
    store.add_from_result(engine, later, now=first + timedelta(days=30))  # 2024-02-09 12:00Z
    engine.dispose()

    def exported(since: str) -> list[str]:
        out = tmp_path / "wl.csv"
        assert cli_main(["worklist", "export", "--since", since, "--db", url,
                         "--out", str(out)]) == 0, since
        return [r.series_instance_uid for r in export_csv.parse_csv(out.read_text())]

    assert len(exported("2024-01-10")) == 2
    assert exported("2024-02-09") == ["1.2.3.4.5.6"]
    assert exported("2024-02-09T11:00") == ["1.2.3.4.5.6"]  # no offset: UTC
    assert exported("2024-02-09T13:00") == []
    assert exported("2024-02-09T13:30+02:00") == ["1.2.3.4.5.6"]  # 11:30 UTC
    assert exported("2024-02-09T12:30:00Z") == []


def test_readme_worklist_command_lines_parse_with_their_required_options() -> None:
    """Each ``worklist`` command line of the README, with its placeholders filled in and its
    optional parts left out, is accepted by the real parser: the required ``--by`` of
    set-status and the database option are shown."""
    from osteo_node.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"`(worklist [^`]+)`", readme)
    assert {ln.split()[1] for ln in lines} == {"export", "push-fhir", "set-status"}, lines
    fill = {"ROW": "1", "STATUS": "contacted", "NAME": "fls.nurse", "URL": "sqlite:///x.db"}
    for line in lines:
        text = line.replace("\\|", "|")
        text = re.sub(r"\[[^\]]*\]", "", text)  # optional parts
        text = re.sub(r"\(([^|)]*)\|[^)]*\)", r"\1", text)  # first of a required choice
        text = text.replace("csv|fhir", "csv")
        argv = [fill.get(tok, tok) for tok in text.split()]
        args = build_parser().parse_args(argv)  # SystemExit (usage error) fails the test
        if args.worklist_command == "set-status":
            assert args.by == "fls.nurse", line
