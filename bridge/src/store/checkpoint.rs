//! WAL checkpoints mostly off the request path. SQLite's auto-checkpoint runs inline in the
//! writer (every 1,000 pages) and copies pages while every queued request waits; this thread
//! copies the WAL back on its own connection twice a second (a passive checkpoint never blocks
//! the writer), so the writer's own pass finds most pages done. The writer's pass is kept:
//! only a checkpoint that finishes while nobody writes lets the WAL restart from its beginning.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back.
const EVERY: Duration = Duration::from_millis(500);

/// Runs until `stop` is dropped (when the writer ends).
pub fn run(path: &Path, stop: Receiver<()>) {
    let conn = match open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(
                "cannot open the database for checkpoints, the writer will grow the WAL: {e}"
            );
            return;
        }
    };
    while let Ok(()) | Err(RecvTimeoutError::Timeout) = stop.recv_timeout(EVERY) {
        if let Err(e) = checkpoint(&conn, "PASSIVE") {
            tracing::warn!("a WAL checkpoint failed: {e}");
        }
    }
    // The last one, so that a stopped bridge leaves a small WAL behind.
    if let Err(e) = checkpoint(&conn, "TRUNCATE") {
        tracing::debug!("the final WAL checkpoint did not finish: {e}");
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
}
