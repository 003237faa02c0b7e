#!/usr/bin/env python3
"""Regenerates the SQLite fixtures for sqlite_test.go and engine_test.go.

Each directory is an engine state dir holding dagql-cache.db (and a -wal for
the WAL cases), written by real SQLite with the meta table exactly as dagger
declares it (dagql/persistdb/schema.sql) and schema_version "16" as v0.21.x
writes it (dagql/cache.go). Run from this directory:
    python3 gen.py
"""
import os, shutil, sqlite3, tempfile

META = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID"
RESULTS = ("CREATE TABLE results (id INTEGER PRIMARY KEY, call_frame_json TEXT NOT NULL, "
           "self_payload BLOB NOT NULL) STRICT")
UPSERT = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def fresh(name):
    shutil.rmtree(name, ignore_errors=True)
    os.makedirs(name)
    return os.path.join(name, "dagql-cache.db")


def engine_like(path, final, journal="DELETE"):
    c = sqlite3.connect(path)
    c.execute("PRAGMA page_size=4096")
    c.execute("PRAGMA journal_mode=%s" % journal)
    c.execute(META)
    c.execute(RESULTS)
    c.execute(UPSERT, ("schema_version", "16"))
    # Like the engine: mark dirty at start, then rewrite at close.
    c.execute(UPSERT, ("clean_shutdown", "0"))
    c.commit()
    for i in range(200):
        c.execute("INSERT INTO results VALUES (?, ?, ?)", (i, '{"field":"f%d"}' % i, os.urandom(64)))
    c.commit()
    if final is not None:
        c.execute(UPSERT, ("clean_shutdown", final))
    c.commit()
    c.close()


engine_like(fresh("clean"), "1")
engine_like(fresh("unclean"), "0")
engine_like(fresh("nokey"), None)
c = sqlite3.connect(os.path.join("nokey", "dagql-cache.db"))
c.execute("DELETE FROM meta WHERE key = 'clean_shutdown'")
c.commit(); c.close()

# A meta table spanning many pages: interior index pages and overflow chains.
p = fresh("big")
c = sqlite3.connect(p)
c.execute("PRAGMA page_size=1024")
c.execute(META)
for i in range(3000):
    c.execute(UPSERT, ("key%05d" % i, str(i) * (i % 50 + 1)))
c.execute(UPSERT, ("clean_shutdown", "1"))
c.execute(UPSERT, ("big", "0123456789" * 2000 + "end"))
c.commit(); c.close()

# An ordinary rowid table, as an older schema might have had.
p = fresh("rowid")
c = sqlite3.connect(p)
c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
c.execute(UPSERT, ("clean_shutdown", "1"))
c.commit(); c.close()


def wal_case(name, checkpointed, in_wal):
    """The database file says checkpointed; a committed WAL frame says in_wal."""
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "dagql-cache.db")
    c = sqlite3.connect(src)
    c.execute("PRAGMA page_size=4096")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute(META)
    c.execute(UPSERT, ("schema_version", "16"))
    c.execute(UPSERT, ("clean_shutdown", checkpointed))
    c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute(UPSERT, ("clean_shutdown", in_wal))
    c.commit()
    p = fresh(name)
    # Copy while the connection is open: closing would checkpoint and delete the WAL.
    shutil.copy(src, p)
    shutil.copy(src + "-wal", p + "-wal")
    c.close()
    shutil.rmtree(tmp)


wal_case("walclean", "0", "1")
wal_case("walunclean", "1", "0")
