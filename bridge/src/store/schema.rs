//! Versioned migrations. Each entry runs once, in order, inside one transaction; the database's
//! `user_version` records how many have run. Add new migrations at the end, never edit old ones.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: turns, ratings, nonces, idempotency, audit, training state.
    r#"
    CREATE TABLE turns (
        seq        INTEGER PRIMARY KEY,            -- capture order
        turn_id    TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,                  -- 'turn' | 'rollout'
        session    TEXT NOT NULL,
        channel    TEXT NOT NULL,
        account    TEXT,
        chat       TEXT,
        sender     TEXT NOT NULL,
        is_group   INTEGER NOT NULL,
        prompt     TEXT NOT NULL,
        response   TEXT NOT NULL,
        context    TEXT NOT NULL,                  -- JSON array of {role, content}
        model      TEXT,
        at         INTEGER NOT NULL,               -- Unix ms
        worker     TEXT,
        measures   TEXT,                           -- JSON: duration_s, tokens, errors
        digest     TEXT NOT NULL                   -- hash of the request's fields, for retries
    );
    CREATE INDEX turns_latest ON turns(session, sender, at, seq);

    CREATE TABLE turn_messages (
        channel    TEXT NOT NULL,
        message_id TEXT NOT NULL,
        turn_seq   INTEGER NOT NULL REFERENCES turns(seq),
        PRIMARY KEY (channel, message_id, turn_seq)
    ) WITHOUT ROWID;

    CREATE TABLE ratings (
        id          INTEGER PRIMARY KEY,
        turn_seq    INTEGER NOT NULL REFERENCES turns(seq),
        rater       TEXT NOT NULL,
        value       REAL NOT NULL,
        source      TEXT NOT NULL,
        emoji       TEXT,
        reason      TEXT,
        event_id    TEXT NOT NULL,
        created_at  INTEGER NOT NULL,              -- Unix ms
        removed_at  INTEGER,                       -- NULL while live
        trained_run INTEGER                        -- NULL until a training run used it
    );
    CREATE UNIQUE INDEX ratings_live ON ratings(turn_seq, rater) WHERE removed_at IS NULL;
    CREATE INDEX ratings_untrained ON ratings(trained_run) WHERE removed_at IS NULL;

    CREATE TABLE nonces (
        nonce   TEXT PRIMARY KEY,
        seen_at INTEGER NOT NULL                   -- Unix s
    ) WITHOUT ROWID;

    CREATE TABLE answers (
        endpoint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status   INTEGER NOT NULL,
        body     TEXT NOT NULL,
        PRIMARY KEY (endpoint, event_id)
    ) WITHOUT ROWID;

    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        sender  TEXT NOT NULL,
        session TEXT,
        name    TEXT NOT NULL,
        args    TEXT NOT NULL,
        outcome TEXT NOT NULL
    );

    CREATE TABLE training (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        paused INTEGER NOT NULL DEFAULT 0,
        queued INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO training (id) VALUES (1);

    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        outcome     TEXT NOT NULL,                 -- running | ok | failed | interrupted
        adapter     TEXT,
        detail      TEXT
    );
    "#,
    // 2: the reward baseline per model; a generation the trainer bumps when it marks ratings
    // trained, so the daemon's writer knows to reload its counts.
    r#"
    CREATE TABLE baselines (
        model TEXT PRIMARY KEY,
        value REAL NOT NULL,
        count INTEGER NOT NULL
    );
    ALTER TABLE training ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN samples INTEGER;
    ALTER TABLE runs ADD COLUMN metrics TEXT;
    "#,
    // 3: expired nonces are pruned a few at a time, found by age.
    r#"
    CREATE INDEX nonces_seen ON nonces(seen_at);
    "#,
    // 4: the machine reward sources, each kept on its own beside the ratings (the human source):
    // one score per turn and source, marked with the run that trained on it like a rating; and
    // every call to the judge, for its hourly budget and the failures `status` counts.
    r#"
    CREATE TABLE turn_scores (
        turn_seq    INTEGER NOT NULL REFERENCES turns(seq),
        source      TEXT NOT NULL,                 -- 'automatic' | 'judge'
        score       REAL NOT NULL,                 -- in [0, 1]
        detail      TEXT,                          -- JSON: the judge's three figures
        at          INTEGER NOT NULL,              -- Unix ms
        trained_run INTEGER,                       -- NULL until a training run used it
        PRIMARY KEY (turn_seq, source)
    ) WITHOUT ROWID;
    CREATE INDEX turn_scores_untrained ON turn_scores(turn_seq) WHERE trained_run IS NULL;

    CREATE TABLE judge_calls (
        id       INTEGER PRIMARY KEY,
        turn_seq INTEGER NOT NULL REFERENCES turns(seq),
        at       INTEGER NOT NULL,                 -- Unix ms
        outcome  TEXT NOT NULL,                    -- ok | malformed | timeout | error | unreachable
        detail   TEXT
    );
    CREATE INDEX judge_calls_at ON judge_calls(at);
    CREATE INDEX judge_calls_turn ON judge_calls(turn_seq);
    "#,
];

/// Brings the database up to the newest schema.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The newest schema version this build knows.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}
