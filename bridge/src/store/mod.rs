//! The durable store: one SQLite file in WAL mode with `synchronous=FULL`, written by a single
//! thread that commits requests arriving together in one transaction (group commit), so an
//! acknowledged request is on disk and throughput follows the disk's commit rate.

mod counts;
mod reader;
mod schema;
mod writer;

pub mod queries;

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

pub use counts::Counts;
pub use schema::latest_version;
pub use writer::{Ctx, Job, OpError, Reply, Store, WriterHandle, WriterState, remember};

/// Opens (creating if needed) the database for writing, migrated to the newest schema.
pub fn open_rw(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A WAL that grew under a burst is cut back to this size when it restarts.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Opens the database read-only, for the CLI's reports; safe while the daemon runs.
pub fn open_ro(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}
