//! The keys the bridge accepts: the current one and, while keys rotate, the previous one.
//! After `rlclaw key rotate` a running bridge picks the new key up from disk the first time a
//! request names it, so a rotation needs no restart.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::datadir::DataDir;
use crate::keys::Key;

/// At most one reload from disk per this interval, however many unknown key ids arrive.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Keys {
    current: Key,
    previous: Option<Key>,
}

pub struct KeyRing {
    dir: Option<DataDir>,
    keys: RwLock<Arc<Keys>>,
    last_reload: Mutex<Option<Instant>>,
}

impl KeyRing {
    /// Keys read from (and reloaded from) a data folder.
    pub fn from_dir(dir: DataDir, current: Key, previous: Option<Key>) -> KeyRing {
        KeyRing {
            dir: Some(dir),
            keys: RwLock::new(Arc::new(Keys { current, previous })),
            last_reload: Mutex::new(None),
        }
    }

    fn snapshot(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The key that signs responses to requests no key verified.
    pub fn current(&self) -> Key {
        self.snapshot().current.clone()
    }

    /// The key with this id, reloading the key files once if none matches.
    pub fn lookup(&self, id: &str) -> Option<Key> {
        if let Some(key) = find(&self.snapshot(), id) {
            return Some(key);
        }
        self.reload();
        find(&self.snapshot(), id)
    }

    fn reload(&self) {
        let Some(dir) = &self.dir else { return };
        {
            let Ok(mut last) = self.last_reload.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (Ok(current), Ok(previous)) = (dir.load_key(), dir.load_previous_key()) else {
            tracing::warn!("could not reload the key files");
            return;
        };
        if let Ok(mut keys) = self.keys.write() {
            if keys.current.id() != current.id() {
                tracing::info!("now using key id {}", current.id());
            }
            *keys = Arc::new(Keys { current, previous });
        }
    }
}

fn find(keys: &Keys, id: &str) -> Option<Key> {
    std::iter::once(&keys.current)
        .chain(keys.previous.as_ref())
        .find(|k| k.id() == id)
        .cloned()
}
