"""The schema is made by the migrations only (``osteo_node.store.schema``), on SQLite and
PostgreSQL: the newest revision holds exactly the tables the code declares, upgrades are
idempotent and safe to run at once, a database made before migrations existed is adopted
without losing a row, and a database that is not current is refused with what to do."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, insert, inspect, select, text

from osteo_node.cli.main import main
from osteo_node.store.db import make_engine
from osteo_node.store.schema import (
    BASELINE,
    SchemaError,
    SchemaNotCurrentError,
    baseline_tables,
    current_revision,
    ensure_schema,
    head_revision,
    require_current,
    upgrade,
)


def load_table_modules() -> MetaData:
    """Import every module that declares a node table on the shared metadata; returns it (the
    migrations must produce exactly these tables). Here, not in the package: ``store`` must not
    import the packages above it (the list is what the test compares the migrations with)."""
    import osteo_node.node.processes
    import osteo_node.outbox.tables
    import osteo_node.queue.jobs
    import osteo_node.retention.tables
    import osteo_node.store.index
    import osteo_node.web.audit
    import osteo_node.web.users
    import osteo_node.worklist.assessments
    import osteo_node.worklist.store  # noqa: F401
    from osteo_node.store.db import METADATA

    return METADATA


def test_new_database_gets_exactly_the_declared_tables(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        result = upgrade(engine)
        assert (result.before, result.after, result.adopted) == (None, head_revision(), False)
        declared = load_table_modules()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    declared)
        assert diff == []
        assert set(inspect(engine).get_table_names()) == {*declared.tables, "alembic_version"}
        again = upgrade(engine)
        assert (again.before, again.after, again.adopted) == (head_revision(),) * 2 + (False,)
    finally:
        engine.dispose()


def test_concurrent_upgrades_of_a_new_database_all_succeed(empty_db_url: str) -> None:
    """Several processes may start on an empty database at once (serve on SQLite, several
    `db upgrade` runs): each waits for the other's transaction, none fails."""
    engine = make_engine(empty_db_url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def _make_pre_migration_database(url: str) -> None:
    """The node's tables as an earlier version made them with create_all: no alembic_version,
    no web tables (made only once the web application started), a worklist without the later
    ``level_uncertain`` column; with rows in them."""
    old = MetaData()
    tables = {t.name: t for t in baseline_tables(old)}
    for name in ("web_users", "web_audit"):
        old.remove(tables.pop(name))
    engine = make_engine(url)
    try:
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE fls_worklist DROP COLUMN level_uncertain"))
            conn.execute(insert(tables["studies"]).values(
                id=1, study_instance_uid="1.2.3", created_at=1.0))
            conn.execute(insert(tables["series"]).values(
                id=1, study_id=1, series_instance_uid="1.2.3.4", modality="CT",
                first_received_at=1.0, last_received_at=2.0, instance_count=3, generation=1,
                job_generation=1))
            conn.execute(insert(tables["jobs"]).values(
                id=7, series_id=1, generation=1, state="done", attempts=1, objects=4,
                created_at=3.0))
            conn.execute(text(
                "INSERT INTO fls_worklist (study_instance_uid, series_instance_uid, patient_id,"
                " patient_name, patient_birth_date, patient_sex, study_date, accession_number,"
                " modality, trigger, vcf_levels, findings_summary, red_flags, vertebrae_json,"
                " created_at, updated_at, status) VALUES ('1.2.3', '1.2.3.4', 'P1', 'A^B', '',"
                " '', '', '', 'CT', 'vcf', 'L1', 'L1 G2', '', '[]', :t, :t, 'new')"),
                {"t": "2026-01-01 00:00:00+00:00"})
    finally:
        engine.dispose()


def test_database_made_before_migrations_is_adopted_without_data_loss(
        empty_db_url: str) -> None:
    _make_pre_migration_database(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with pytest.raises(SchemaNotCurrentError, match="osteo-node db upgrade"):
            require_current(engine)
        result = upgrade(engine)
        assert result.adopted and result.before is None and result.after == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state, objects FROM jobs WHERE id = 7")).one() == (
                "done", 4)
            assert conn.execute(text("SELECT instance_count FROM series")).scalar_one() == 3
            row = conn.execute(text(
                "SELECT patient_id, vcf_levels, level_uncertain FROM fls_worklist")).one()
            assert tuple(row) == ("P1", "L1", None)  # the added column: "not assessed"
            diff = compare_metadata(MigrationContext.configure(conn), load_table_modules())
        assert diff == []  # missing tables made, missing column added
        # the node's own tables work on the adopted database (web tables were missing)
        from osteo_node.web.users import add_user, list_users

        add_user(engine, "admin1", "admin", "a long enough password")
        assert [u.name for u in list_users(engine)] == ["admin1"]
    finally:
        engine.dispose()


def test_adoption_refuses_a_table_lacking_a_required_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE studies (id INTEGER PRIMARY KEY)"))
        with pytest.raises(SchemaError, match="studies lacks required columns"):
            upgrade(engine)
        assert current_revision(engine) is None  # nothing stamped, nothing half done
        assert set(inspect(engine).get_table_names()) == {"studies"}
    finally:
        engine.dispose()


def test_not_current_database_is_refused_with_what_to_do(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        with pytest.raises(SchemaNotCurrentError, match=r"run `osteo-node db upgrade"):
            require_current(engine)
        upgrade(engine, BASELINE)
        if head_revision() != BASELINE:
            with pytest.raises(SchemaNotCurrentError, match=f"at revision {BASELINE}"):
                require_current(engine)
        upgrade(engine)
        assert require_current(engine) == head_revision()
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaNotCurrentError, match="newer version"):
            require_current(engine)
        with pytest.raises(SchemaError, match="newer version"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_ensure_schema_upgrades_sqlite_but_only_checks_postgresql(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        if engine.dialect.name == "sqlite":
            ensure_schema(engine)
            assert current_revision(engine) == head_revision()
        else:
            with pytest.raises(SchemaNotCurrentError, match="osteo-node db upgrade"):
                ensure_schema(engine)
            assert inspect(engine).get_table_names() == []  # created nothing
    finally:
        engine.dispose()


def test_db_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    assert main(["db", "current", "--db", url]) == 1
    assert "no database file" in capsys.readouterr().err
    assert not (tmp_path / "node.sqlite").exists()  # `current` creates nothing
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"to {head_revision()} (newest)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "already at revision" in capsys.readouterr().out
    assert main(["db", "current", "--db", url]) == 0
    assert capsys.readouterr().out.strip() == f"{head_revision()} (newest)"
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(text("count(*)")).select_from(text("jobs"))).scalar() == 0
    engine.dispose()
