"""Apply the Alembic migrations at start, so an upgraded install keeps every job.

The API and each worker call `upgrade` when they start; a lock makes the first one migrate and
the others wait and find nothing left to do (a PostgreSQL advisory lock for a fleet, a file lock
beside the SQLite file on one machine). The same lock guards the making of Optuna's tables
(`schema_lock`): Optuna creates them on first use with no lock of its own, and two workers
starting together on a new PostgreSQL database raced to CREATE TYPE studydirection.

regtrain records its revision in a version table of its own, `regtrain_alembic_version`: the
same database holds the sweeps' Optuna studies, and Optuna's RDB storage keeps its own Alembic
revision in the default `alembic_version`. A database made before records regtrain's revision
there; the first upgrade moves it across, so that database keeps its jobs.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "regtrain_alembic_version"
SHARED_VERSION_TABLE = "alembic_version"  # Alembic's default, which Optuna's storage uses
_PG_LOCK_KEY = 0x7265677472  # "regtr": any constant shared by every regtrain process


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with _schema_lock(engine), engine.connect() as conn:
        _move_revision(conn)
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def _move_revision(conn: sa.Connection) -> None:
    """A database migrated before regtrain had a version table of its own: stamp its revision
    in `regtrain_alembic_version` and take it out of `alembic_version` (dropped once empty,
    so that Optuna finds a database it can initialise)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(SHARED_VERSION_TABLE) or inspector.has_table(VERSION_TABLE):
        return
    script = ScriptDirectory.from_config(_config())
    ours = {rev.revision for rev in script.walk_revisions()}
    shared = sa.table(SHARED_VERSION_TABLE, sa.column("version_num"))
    recorded = [v for v in conn.execute(sa.select(shared.c.version_num)).scalars() if v in ours]
    if not recorded:
        return
    MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).stamp(script, recorded[0])
    conn.execute(shared.delete().where(shared.c.version_num.in_(recorded)))
    if conn.execute(sa.select(sa.func.count()).select_from(shared)).scalar() == 0:
        conn.execute(sa.text(f"DROP TABLE {SHARED_VERSION_TABLE}"))


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Held while this process makes a schema that others may be making at the same moment
    (Optuna's tables: worker/search.py storage): the others wait, then find it made."""
    engine = sa.create_engine(url, poolclass=NullPool)  # one connection, closed on release
    try:
        with _schema_lock(engine):
            yield
    finally:
        engine.dispose()


@contextmanager
def _schema_lock(engine: sa.Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    db = engine.url.database
    if not db or db == ":memory:":
        yield
        return
    with open(Path(db).with_suffix(".migrate.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
