"""The connection under the store: opening (read-write or read-only), the schema
migrations, and storage failures (disk full, read-only media) turned into one line.

Every statement the store runs goes through `_Connection`, so a full disk is the same line
in every command.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.db import Table

BUSY_TIMEOUT_MS = 10_000

Params = Sequence[Any] | dict[str, Any] | None


class Database(Protocol):
    """What the store's parts use of a database: a `sqlite_utils.Database` where the store
    writes, a `Reader` where it only reads."""

    @property
    def conn(self) -> sqlite3.Connection: ...

    def execute(self, sql: str, parameters: Params = None) -> sqlite3.Cursor: ...

    def query(self, sql: str, params: Params = None) -> Iterator[dict[str, Any]]: ...

    def atomic(self) -> AbstractContextManager[Any]: ...

    def table(self, table_name: str) -> Table: ...

    def close(self) -> None: ...


class Reader:
    """A read-only store's database. Reading needs only sqlite_utils' `execute` and `query`,
    and importing sqlite_utils is about a third of what an analyst command (`hits`) costs
    to start, so a read-only store does without it; a table or a transaction, which only a
    writer asks for, is sqlite_utils' own, built on first use."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._writer: sqlite_utils.Database | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def execute(self, sql: str, parameters: Params = None) -> sqlite3.Cursor:
        return self._conn.execute(sql, () if parameters is None else parameters)

    def query(self, sql: str, params: Params = None) -> Iterator[dict[str, Any]]:
        # Executed now, rows fetched as iterated: as sqlite_utils' `query`.
        cursor = self.execute(sql, params)
        if cursor.description is None:
            raise ValueError("query() can only be used with SQL that returns rows")
        keys = [column[0] for column in cursor.description]
        return (dict(zip(keys, row, strict=True)) for row in cursor)

    def atomic(self) -> AbstractContextManager[Any]:
        return self._sqlite_utils().atomic()

    def table(self, table_name: str) -> Table:
        return self._sqlite_utils().table(table_name)

    def close(self) -> None:
        self._conn.close()

    def _sqlite_utils(self) -> sqlite_utils.Database:
        if self._writer is None:
            self._writer = writable(self._conn)
        return self._writer


def writable(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite_utils over the connection, without its plugins: loading them scans every
    installed package's entry points (~50 ms per process), and nothing here uses one."""
    _import_sqlite_utils()
    import sqlite_utils

    return sqlite_utils.Database(conn, execute_plugins=False)


def _import_sqlite_utils() -> None:
    """Import sqlite_utils without paying for what the store never uses: numpy and pandas,
    which it imports to map their scalar types to column types (the store never inserts
    one: fingerprint arrays go in as bytes), and dateutil's parser, imported for its
    `convert` recipes, loaded here lazily (on first use, should anything use it). Together
    they would make every writing command start ~0.15 s slower. Where another part has
    loaded them already, they are left alone."""
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None makes `import` fail
    try:
        if "dateutil.parser" not in sys.modules:
            spec = importlib.util.find_spec("dateutil.parser")
            if spec is not None and spec.loader is not None:
                spec.loader = importlib.util.LazyLoader(spec.loader)
                module = importlib.util.module_from_spec(spec)
                sys.modules["dateutil.parser"] = module
                spec.loader.exec_module(module)
                # As an import would, so `from dateutil import parser` finds it as it is.
                setattr(sys.modules["dateutil"], "parser", module)  # noqa: B010
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


class StoreError(Exception):
    """A database that cannot be opened or is newer than this program: one line naming
    the file and what to do."""


class StorageFailure(StoreError):
    """The storage under the database failed or cannot be written (disk full, read-only
    media, I/O error): not the user's mistake, and nothing committed before is lost."""


class NeedsMigration(StoreError):
    """A read-only open of a database an older weightwatch wrote: reading it as it is
    could misread it, and migrating it is a write."""


# SQLite's primary result codes that say the storage failed, not the statement.
SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 13, 14


def storage_error(path: Path, exc: sqlite3.Error) -> StorageFailure | None:
    """The one-line StoreError for a storage failure under `path`, or None if `exc` is
    about the statement (a syntax error, a constraint) and belongs to the caller.

    Every statement the store runs passes through here (`_Connection`), so a full disk
    is the same line in `crawl`, `run`, `register` or a triage command, and a caller
    that logs unexpected exceptions with their traceback never sees one for it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    # Growing the -shm or -wal on a full disk is reported as an I/O error.
    if primary == SQLITE_FULL or (primary == SQLITE_IOERR and _nearly_full(path)):
        return StorageFailure(f"{path}: disk full ({exc}); what was committed before is "
                              f"kept: free space on the filesystem holding it and run the "
                              f"command again")
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN) and on_readonly_media(path):
        return StorageFailure(f"{path}: cannot write: the database is on read-only media "
                              f"({exc}); run this command where it is writable (hits, search, "
                              f"report and the other reading commands work as it is)")
    if primary == SQLITE_READONLY:
        return StorageFailure(f"{path}: cannot write ({exc}); check the permissions of the "
                              f"file, its -wal and -shm files and its folder")
    if primary == SQLITE_IOERR:
        return StorageFailure(f"{path}: I/O error ({exc}); check the disk holding it, then "
                              f"run the command again")
    return None


# Less free space than this, and an I/O error is taken for the disk being full.
NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES


def on_readonly_media(path: Path) -> bool:
    """Whether the filesystem holding `path` is mounted read-only. Asked of the
    filesystem, not of permissions: root may write to any file it can reach, never to a
    read-only mount."""
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _translating(method: Any) -> Any:
    """`method` with its storage failures raised as StorageFailure (`storage_error`)."""

    def call(self: _Connection, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.Error as exc:
            error = storage_error(self.store_path, exc)
            if error is None:
                raise
            self.failure = error
            raise error from None

    return call


class _Connection(sqlite3.Connection):
    """A connection whose storage failures are StorageFailure (see `storage_error`).
    sqlite-utils runs every statement, BEGIN and COMMIT included, through `execute`."""

    store_path: Path
    # The last storage failure raised here: a caller that records a failed run and goes
    # on (the crawler) still lets the command end with the one line saying why.
    failure: StorageFailure | None = None

    execute = _translating(sqlite3.Connection.execute)
    executemany = _translating(sqlite3.Connection.executemany)
    executescript = _translating(sqlite3.Connection.executescript)
    commit = _translating(sqlite3.Connection.commit)


# The database holds watermark keys, tensor prints and the evidence of leaks: only its
# owner may read it. SQLite gives a new -wal, -shm or journal file the mode of the
# database file, so the database file created owner-only is enough for all of them.
DATABASE_MODE = 0o600


def create_private(path: Path) -> None:
    """Create `path` as an empty owner-only file, for SQLite to make a database of, unless
    something is there already. An existing database keeps its mode: an operator may have
    given a group read access on purpose (docs/deployment.md says how to tighten it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATABASE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _connect(path: Path, uri: str | None = None, *,
             factory: type[sqlite3.Connection] = _Connection, **kwargs: Any) -> Any:
    if uri is None:  # read-write: the only way a database is created
        create_private(path)
    conn = sqlite3.connect(uri or str(path), uri=uri is not None,
                           timeout=BUSY_TIMEOUT_MS / 1000, factory=factory, **kwargs)
    if isinstance(conn, _Connection):
        conn.store_path = path
    return conn


def connect_readonly(path: Path, **kwargs: Any) -> tuple[sqlite3.Connection, str | None]:
    """A connection that can only read `path`, and a note to tell the user how it was
    opened when that is not the usual way (None when it is).

    `mode=ro` reads a database the daemon is writing, WAL included, but needs the
    shared-memory file (-shm), which it can neither create nor grow on read-only media or
    a full disk. There the file is opened `immutable=1` (SQLite then neither locks nor
    looks at the WAL), which is exact only while there is no write-ahead log to miss: a
    non-empty -wal is refused. (A writer could start a log while it is read, but neither
    medium lets one write.)
    """
    if not path.exists():
        raise StoreError(f"{path}: no such database")
    # A URI built from the resolved path, so a `?` or `#` in the name stays in the name.
    base = path.resolve().as_uri()
    readonly_media = on_readonly_media(path)
    conn = _connect(path, f"{base}?mode=ro", **kwargs)
    try:
        conn.execute("PRAGMA user_version")  # the file is opened lazily, here
    except (sqlite3.Error, StoreError) as exc:
        conn.close()
        failed: BaseException = exc
    else:
        return conn, "database on read-only media: opened read-only" if readonly_media else None
    wal = path.with_name(path.name + "-wal")
    if not (readonly_media or isinstance(failed, StorageFailure)):
        if isinstance(failed, StoreError):
            raise failed
        raise StoreError(f"{path}: cannot open database: {failed}") from None
    why = "database on read-only media" if readonly_media else "no space for its -shm file"
    pending = wal.stat().st_size if wal.exists() else 0
    if pending:
        raise StorageFailure(f"{path}: {why}, and {pending} bytes of writes are still in "
                             f"{wal.name}, which cannot be read without it; copy the database "
                             f"with its -wal file to writable storage and read it there")
    conn = _connect(path, f"{base}?mode=ro&immutable=1", **kwargs)
    try:
        conn.execute("PRAGMA user_version")
    except (sqlite3.Error, StoreError) as exc:
        conn.close()
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    return conn, f"{why}: opened read-only (immutable)"



def statements(sql: str) -> list[str]:
    """Split a migration into whole statements, so it can run inside one transaction
    (executescript would commit first)."""
    found, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    if current.strip():
        found.append(current.strip())
    return found


def migrate(db: Database, path: Path, migrations: list[str]) -> None:
    """Bring the schema up to `migrations`, each migration in its own transaction."""
    version = schema_version(db)
    if version > len(migrations):
        raise StoreError(f"{path}: database schema {version} is newer than this "
                         f"weightwatch (knows {len(migrations)}); upgrade weightwatch")
    for number, sql in enumerate(migrations[version:], start=version + 1):
        with db.atomic():
            for statement in statements(sql):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")


def check_readable_schema(db: Database, path: Path, migrations: list[str]) -> None:
    """A read-only open reads only a schema exactly this weightwatch's."""
    version = schema_version(db)
    if version > len(migrations):
        raise StoreError(f"{path}: database schema {version} is newer than this "
                         f"weightwatch (knows {len(migrations)}); upgrade weightwatch")
    if version < len(migrations):
        where = ("it is on read-only media, so copy it to writable storage and run"
                 if on_readonly_media(path) else "run")
        raise NeedsMigration(f"{path}: database schema {version}, this weightwatch "
                             f"needs {len(migrations)}; {where} any command that writes "
                             f"(e.g. crawl) to migrate it")


def schema_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def write_transaction(db: Database) -> Iterator[None]:
    """A transaction that takes the write lock at once (BEGIN IMMEDIATE), waiting for
    it up to the busy timeout. One that reads first (a dedup lookup) and writes after
    would instead fail outright if another process (the daemon) wrote in between."""
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.conn.rollback()
        raise
    try:
        db.execute("COMMIT")
    except BaseException:
        db.conn.rollback()
        raise


def insert(db: Database, table: str, row: dict[str, Any]) -> int:
    """Insert `row` into `table`; the new row's id."""
    pk = db.table(table).insert(row).last_pk
    if pk is None:  # every table inserted into here has an integer key
        raise StoreError(f"{table}: insert returned no row id")
    return int(pk)


def marks(count: int) -> str:
    """`count` SQL parameter marks, comma-separated: the list in `IN (...)` or `VALUES (...)`."""
    return ", ".join("?" * count)


def insert_row(db: Database, table: str, row: dict[str, Any]) -> int:
    """`insert` in plain SQL, for the crawl's writes: sqlite_utils reads the table's schema
    on every insert, which costs more than the insert. `table` and the keys of `row` come
    from the store's code, never from input; values are SQLite's own types."""
    cursor = db.execute(f"INSERT INTO {table} ({', '.join(row)}) "
                        f"VALUES ({marks(len(row))})", list(row.values()))
    if cursor.lastrowid is None:
        raise StoreError(f"{table}: insert returned no row id")
    return int(cursor.lastrowid)
