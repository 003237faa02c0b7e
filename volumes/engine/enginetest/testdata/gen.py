#!/usr/bin/env python3
"""Regenerates the dagql-cache.db fixtures that enginetest embeds.

Each file is written by real SQLite with the tables exactly as dagger declares them, then
closed, as a cleanly stopped engine leaves it (the WAL checkpointed and removed):

  calls.db          v0.19.4 - v0.20.x: engine/cache/db/schema.sql, one table `calls`
  meta16-clean.db   v0.21.x, v1.0.0-beta.1 - beta.7: dagql/persistdb/schema.sql,
                    meta.schema_version "16", meta.clean_shutdown "1"
  meta16-dirty.db   the same with clean_shutdown "0" (what the engine writes at start)
  meta16-noclean.db the same with no clean_shutdown row
  meta17-clean.db   v1.0.0-beta.8+: schema_version "17", clean_shutdown "1"
  meta17-dirty.db   the same with clean_shutdown "0"

Run from this directory: python3 gen.py
"""
import os, sqlite3

CALLS = """CREATE TABLE IF NOT EXISTS calls (
    call_key TEXT PRIMARY KEY,
    storage_key TEXT NOT NULL,
    expiration INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS calls_exp_idx ON calls(expiration);"""

META = """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    call_frame_json TEXT NOT NULL,
    self_payload BLOB NOT NULL,
    output_effect_ids_json TEXT NOT NULL DEFAULT '[]',
    expires_at_unix INTEGER NOT NULL DEFAULT 0,
    created_at_unix_nano INTEGER NOT NULL,
    last_used_at_unix_nano INTEGER NOT NULL,
    record_type TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
) STRICT;"""
UPSERT = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def connect(name):
    if os.path.exists(name):
        os.remove(name)
    c = sqlite3.connect(name)
    c.execute("PRAGMA page_size=4096")
    c.execute("PRAGMA journal_mode=WAL")  # as the engine opens it
    return c


c = connect("calls.db")
c.executescript(CALLS)
for i in range(300):
    c.execute("INSERT INTO calls VALUES (?, ?, ?)", ("call-%04d" % i, "storage-%04d" % i, 1700000000 + i))
c.commit()
c.close()


def meta(name, schema, clean):
    c = connect(name)
    c.executescript(META)
    # Like the engine (dagql/cache.go NewCache): schema_version, then clean_shutdown=0 at start.
    c.execute(UPSERT, ("schema_version", schema))
    c.execute(UPSERT, ("clean_shutdown", "0"))
    c.commit()
    for i in range(100):
        c.execute("INSERT INTO results (id, call_frame_json, self_payload, created_at_unix_nano, last_used_at_unix_nano) VALUES (?, ?, ?, ?, ?)",
                  (i, '{"field":"f%d"}' % i, bytes([i % 256]) * 64, i, i))
    c.commit()
    # (*Cache).Close writes "1" after the state was persisted.
    if clean is None:
        c.execute("DELETE FROM meta WHERE key = 'clean_shutdown'")
    else:
        c.execute(UPSERT, ("clean_shutdown", clean))
    c.commit()
    c.close()


meta("meta16-clean.db", "16", "1")
meta("meta16-dirty.db", "16", "0")
meta("meta16-noclean.db", "16", None)
meta("meta17-clean.db", "17", "1")
meta("meta17-dirty.db", "17", "0")
