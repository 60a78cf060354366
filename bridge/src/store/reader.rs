//! The reader: a read-only connection for reports (status) that scan many rows. They run on
//! tokio's blocking pool after the writer has committed the request's nonce, so that a status
//! check at 100,000 turns never holds up the ratings queued behind it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::Reply;
use crate::config::Config;
use crate::endpoints::status::{self, Read};
use crate::protocol::ApiError;
use crate::training::TrainingControl;

pub struct Reader {
    path: PathBuf,
    /// Opened on the first report: an idle daemon keeps no second connection's memory.
    conn: Arc<Mutex<Option<Connection>>>,
    config: Arc<Config>,
    control: Arc<dyn TrainingControl>,
}

impl Reader {
    pub fn new(path: &Path, config: Arc<Config>, control: Arc<dyn TrainingControl>) -> Reader {
        Reader {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(None)),
            config,
            control,
        }
    }

    /// Reads the report a committed request asked for.
    pub async fn read(&self, read: Read) -> Result<Reply, ApiError> {
        let (path, conn, config, control) = (
            self.path.clone(),
            self.conn.clone(),
            self.config.clone(),
            self.control.clone(),
        );
        let answer = tokio::task::spawn_blocking(move || {
            // A panic in an earlier report leaves nothing half-written: reads change nothing.
            let mut slot = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let conn = match &mut *slot {
                Some(open) => open,
                empty @ None => empty.insert(super::open_ro(&path)?),
            };
            // One read transaction: every figure of the report comes from the same snapshot,
            // even while the judge or a training run commits between its queries.
            let snapshot = conn.transaction()?;
            status::read(&read, &snapshot, &config, &*control, crate::now_ms())
        })
        .await
        .map_err(|e| ApiError::internal(format!("The report failed: {e}.")))?;
        answer.map_err(|e| {
            tracing::error!("a report could not be read: {e}");
            ApiError::internal("The bridge could not read its database for this report.")
        })
    }
}
