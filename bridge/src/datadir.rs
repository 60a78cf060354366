//! The private data folder: created 0700, the key file 0600, everything of the bridge inside it.
//!
//! Permissions are set when a file is created, never by reopening a file by path afterwards:
//! closing any descriptor of a file SQLite holds drops SQLite's locks on it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::keys::Key;

pub const KEY_FILE: &str = "key";
pub const PREVIOUS_KEY_FILE: &str = "key.previous";
pub const DB_FILE: &str = "rlclaw.db";
pub const CONFIG_FILE: &str = "config.toml";

/// The data folder: `--data-dir`, else `$RLCLAW_DATA_DIR`, else the XDG data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The default data folder (`$XDG_DATA_HOME/rlclaw`, `~/.local/share/rlclaw` on Linux).
pub fn default_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("rlclaw")
}

impl DataDir {
    /// Opens the folder, creating it (0700) when missing and tightening a looser mode.
    pub fn open(root: &Path) -> Result<DataDir> {
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .with_context(|| format!("cannot create the data folder {}", root.display()))?;
        }
        let meta = fs::metadata(root)
            .with_context(|| format!("cannot read the data folder {}", root.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a folder", root.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700)).with_context(|| {
                format!("cannot make the data folder {} private", root.display())
            })?;
            eprintln!(
                "rlclaw: the data folder {} had mode {mode:o}; tightened it to 700",
                root.display()
            );
        }
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path(DB_FILE)
    }

    /// Reads the current key, creating a fresh one (0600) when the file is missing.
    pub fn load_or_create_key(&self) -> Result<Key> {
        let path = self.path(KEY_FILE);
        if path.exists() {
            return read_key(&path);
        }
        let key = Key::generate()?;
        write_private(&path, format!("{}\n", key.to_hex()).as_bytes())?;
        eprintln!(
            "rlclaw: created a new key in {} (key id {})",
            path.display(),
            key.id()
        );
        Ok(key)
    }

    /// Reads the current key; an error when there is none.
    pub fn load_key(&self) -> Result<Key> {
        let path = self.path(KEY_FILE);
        if !path.exists() {
            bail!(
                "no key in {}: run `rlclaw init` or `rlclaw serve` first",
                self.root.display()
            );
        }
        read_key(&path)
    }

    /// The key that was current before the last rotation, if it is still kept.
    pub fn load_previous_key(&self) -> Result<Option<Key>> {
        let path = self.path(PREVIOUS_KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        read_key(&path).map(Some)
    }

    /// Makes a new current key; the old one becomes `key.previous`. Returns the new key.
    pub fn rotate_key(&self) -> Result<Key> {
        let old = self.load_key()?;
        let new = Key::generate()?;
        write_private(
            &self.path(PREVIOUS_KEY_FILE),
            format!("{}\n", old.to_hex()).as_bytes(),
        )?;
        write_private(
            &self.path(KEY_FILE),
            format!("{}\n", new.to_hex()).as_bytes(),
        )?;
        Ok(new)
    }
}

fn read_key(path: &Path) -> Result<Key> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Key::from_hex(&text).with_context(|| format!("the key file {} is malformed", path.display()))
}

/// Writes a file readable only by its owner: a temp file (0600), fsync, rename, fsync the folder.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("rlclaw")
    ));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_a_private_folder_and_tightens_a_loose_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        DataDir::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        DataDir::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn key_is_created_once_private_and_rotation_keeps_the_previous() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let first = dir.load_or_create_key().unwrap();
        let mode = fs::metadata(dir.path(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(dir.load_or_create_key().unwrap().id(), first.id());
        let second = dir.rotate_key().unwrap();
        assert_ne!(second.id(), first.id());
        assert_eq!(dir.load_previous_key().unwrap().unwrap().id(), first.id());
    }
}
