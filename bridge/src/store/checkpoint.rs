//! WAL checkpoints off the request path. The writer runs with SQLite's auto-checkpoint off,
//! because an inline checkpoint fsyncs the database file while every queued request waits;
//! this thread copies the WAL back into the database on its own connection instead. A passive
//! checkpoint never blocks the writer.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back.
const EVERY: Duration = Duration::from_millis(500);
/// Under sustained load a passive checkpoint never catches up with the writer, so the WAL
/// could only grow; past this many frames (about 16 MB of 4 KiB pages) the checkpoint waits
/// for the writer once and restarts the WAL from its beginning.
const RESTART_AFTER_FRAMES: i64 = 4_096;

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
        match checkpoint(&conn, "PASSIVE") {
            Ok(frames) if frames > RESTART_AFTER_FRAMES => {
                if let Err(e) = checkpoint(&conn, "RESTART") {
                    tracing::warn!("a restarting WAL checkpoint failed: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("a WAL checkpoint failed: {e}"),
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

/// Returns the number of frames in the WAL when the checkpoint ran.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}
