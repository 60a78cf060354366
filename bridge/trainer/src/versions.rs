//! Adapter versions on disk: `<root>/v1`, `<root>/v2`, … each a PEFT folder plus
//! `metadata.json`, and an `active` pointer file.
//!
//! Every write goes to a temporary name first, every file is fsynced, the folder (or pointer)
//! is renamed into place and the parent folder fsynced, so a failed or killed run never
//! touches the active adapter and never leaves a half-written `vN`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::adapter::{CONFIG_FILE, LoraWeights, WEIGHTS_FILE};
use crate::error::{Result, TrainerError};

pub const METADATA_FILE: &str = "metadata.json";
pub const ACTIVE_FILE: &str = "active";
const TMP_PREFIX: &str = ".tmp-";

/// What is recorded with a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionMetadata {
    pub version: String,
    pub parent: Option<String>,
    /// Turn ids of the ratings this version was trained on.
    pub ratings: Vec<String>,
    pub metrics: serde_json::Value,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// The same instant, RFC 3339 in UTC.
    pub created: String,
    pub base_model: String,
    /// What the evaluation gate measured before the version was kept (`eval::GateReport`,
    /// plus `compared_with`: the version that served then, null for the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<serde_json::Value>,
    /// Set when the version was imported rather than trained here (`import::ForeignInfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<serde_json::Value>,
    /// Set when an admin made it serve although the gate held it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<ForcedPromotion>,
}

/// An admin's decision to serve a version the gate held back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForcedPromotion {
    /// Who: `cli`, or the chat sender's id.
    pub by: String,
    pub created_unix: u64,
    pub created: String,
}

/// Recorded with a new version besides its weights (all optional).
#[derive(Debug, Clone, Default)]
pub struct VersionNotes {
    pub gate: Option<serde_json::Value>,
    pub imported: Option<serde_json::Value>,
}

impl VersionMetadata {
    /// The gate's report, when the version has one that this build can read.
    pub fn gate_report(&self) -> Option<crate::eval::GateReport> {
        serde_json::from_value(self.gate.clone()?).ok()
    }

    /// The version the gate compared it with (None: the base model, or no gate record).
    pub fn compared_with(&self) -> Option<String> {
        self.gate.as_ref()?["compared_with"]
            .as_str()
            .map(str::to_string)
    }

    /// The gate held it back and no admin has forced it since.
    pub fn held_back(&self) -> bool {
        self.forced.is_none()
            && self
                .gate_report()
                .is_some_and(|g| g.verdict == crate::eval::Verdict::Hold)
    }
}

/// What the caller supplies for a new version.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub parent: Option<String>,
    pub ratings: Vec<String>,
    pub metrics: serde_json::Value,
    pub base_model: String,
}

/// A complete version on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub name: String,
    pub number: u64,
    pub path: PathBuf,
    pub metadata: VersionMetadata,
}

/// Versions in one folder (`<data>/adapters/`).
#[derive(Debug, Clone)]
pub struct AdapterStore {
    root: PathBuf,
}

fn parse_version(name: &str) -> Option<u64> {
    let n = name.strip_prefix('v')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainerError::io(path, e))
}

fn now() -> (u64, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (secs, s)
}

fn write_metadata(path: &Path, metadata: &VersionMetadata) -> Result<()> {
    let json = serde_json::to_vec_pretty(metadata).map_err(|source| TrainerError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = File::create(path).map_err(|e| TrainerError::io(path, e))?;
    f.write_all(&json)
        .and_then(|_| f.sync_all())
        .map_err(|e| TrainerError::io(path, e))
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        return proc_root.join(pid.to_string()).exists();
    }
    // Without /proc we cannot tell: keep it.
    true
}

impl AdapterStore {
    /// Opens (creating if needed) a store and removes temporary folders left by dead writers.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| TrainerError::io(&root, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
                .map_err(|e| TrainerError::io(&root, e))?;
        }
        let store = Self { root };
        store.remove_stale_temporaries()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, version: &str) -> PathBuf {
        self.root.join(version)
    }

    fn remove_stale_temporaries(&self) -> Result<()> {
        let rd = fs::read_dir(&self.root).map_err(|e| TrainerError::io(&self.root, e))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(pid_alive) {
                continue;
            }
            let p = entry.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| TrainerError::io(&p, e))?;
        }
        Ok(())
    }

    /// Highest `vN` folder name in use, complete or not.
    fn highest_number(&self) -> Result<u64> {
        let rd = fs::read_dir(&self.root).map_err(|e| TrainerError::io(&self.root, e))?;
        Ok(rd
            .flatten()
            .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
            .max()
            .unwrap_or(0))
    }

    /// Writes a new version (not activated) and returns it.
    pub fn save(&self, adapter: &LoraWeights, new: NewVersion) -> Result<VersionInfo> {
        self.save_with_notes(adapter, new, VersionNotes::default())
    }

    /// Writes a new version with its gate report or import record (not activated).
    pub fn save_with_notes(
        &self,
        adapter: &LoraWeights,
        new: NewVersion,
        notes: VersionNotes,
    ) -> Result<VersionInfo> {
        if let Some(p) = &new.parent {
            self.get(p)?;
        }
        let number = self.highest_number()? + 1;
        let name = format!("v{number}");
        let tmp = self
            .root
            .join(format!("{TMP_PREFIX}{}-{name}", unique_suffix()));
        fs::create_dir(&tmp).map_err(|e| TrainerError::io(&tmp, e))?;
        let result = (|| -> Result<VersionInfo> {
            adapter.write_peft(&tmp, &new.base_model)?;
            let (created_unix, created) = now();
            let metadata = VersionMetadata {
                version: name.clone(),
                parent: new.parent.clone(),
                ratings: new.ratings.clone(),
                metrics: new.metrics.clone(),
                created_unix,
                created,
                base_model: new.base_model.clone(),
                gate: notes.gate.clone(),
                imported: notes.imported.clone(),
                forced: None,
            };
            write_metadata(&tmp.join(METADATA_FILE), &metadata)?;
            fsync_dir(&tmp)?;
            let dest = self.root.join(&name);
            if dest.exists() {
                return Err(TrainerError::store(&dest, "version folder already exists"));
            }
            fs::rename(&tmp, &dest).map_err(|e| TrainerError::io(&dest, e))?;
            fsync_dir(&self.root)?;
            Ok(VersionInfo {
                name: name.clone(),
                number,
                path: dest,
                metadata,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// A complete version, or a clear error if it is missing or corrupt.
    pub fn get(&self, version: &str) -> Result<VersionInfo> {
        let number = parse_version(version).ok_or_else(|| {
            TrainerError::store(
                &self.root,
                format!("{version:?} is not a version name (v1, v2, …)"),
            )
        })?;
        let path = self.root.join(version);
        if !path.is_dir() {
            return Err(TrainerError::store(&path, "no such version"));
        }
        for f in [CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE] {
            if !path.join(f).is_file() {
                return Err(TrainerError::store(
                    &path,
                    format!("incomplete version: {f} is missing"),
                ));
            }
        }
        let meta_path = path.join(METADATA_FILE);
        let text = fs::read_to_string(&meta_path).map_err(|e| TrainerError::io(&meta_path, e))?;
        let metadata: VersionMetadata = serde_json::from_str(&text)
            .map_err(|e| TrainerError::store(&meta_path, format!("corrupt metadata: {e}")))?;
        Ok(VersionInfo {
            name: version.to_string(),
            number,
            path,
            metadata,
        })
    }

    /// Reads a version's LoRA weights (checks the PEFT files).
    pub fn load(&self, version: &str) -> Result<LoraWeights> {
        let info = self.get(version)?;
        Ok(LoraWeights::read_peft(&info.path)?.0)
    }

    /// Complete versions, oldest first. Incomplete or corrupt folders are left out.
    pub fn list(&self) -> Result<Vec<VersionInfo>> {
        let rd = fs::read_dir(&self.root).map_err(|e| TrainerError::io(&self.root, e))?;
        let mut names: Vec<(u64, String)> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                parse_version(&n).map(|k| (k, n))
            })
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .filter_map(|(_, n)| self.get(&n).ok())
            .collect())
    }

    /// The active version, or None when the base model serves.
    pub fn active(&self) -> Result<Option<VersionInfo>> {
        let p = self.root.join(ACTIVE_FILE);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TrainerError::io(&p, e)),
        };
        let name = text.trim();
        if name.is_empty() {
            return Ok(None);
        }
        self.get(name).map(Some)
    }

    fn write_pointer(&self, content: &str) -> Result<()> {
        let tmp = self
            .root
            .join(format!("{TMP_PREFIX}{}-{ACTIVE_FILE}", unique_suffix()));
        let r = (|| -> Result<()> {
            let mut f = File::create(&tmp).map_err(|e| TrainerError::io(&tmp, e))?;
            f.write_all(content.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| TrainerError::io(&tmp, e))?;
            let dest = self.root.join(ACTIVE_FILE);
            fs::rename(&tmp, &dest).map_err(|e| TrainerError::io(&dest, e))?;
            fsync_dir(&self.root)
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }

    /// Makes a complete version active.
    pub fn promote(&self, version: &str) -> Result<VersionInfo> {
        let info = self.get(version)?;
        LoraWeights::read_peft(&info.path)
            .map_err(|e| TrainerError::store(&info.path, format!("cannot promote: {e}")))?;
        self.write_pointer(&format!("{version}\n"))?;
        Ok(info)
    }

    /// Makes a version serve that the gate held back, recording who decided so. A version the
    /// gate did not hold back is simply promoted.
    pub fn force_promote(&self, version: &str, by: &str) -> Result<VersionInfo> {
        let mut info = self.get(version)?;
        if info.metadata.held_back() {
            let (created_unix, created) = now();
            info.metadata.forced = Some(ForcedPromotion {
                by: by.to_string(),
                created_unix,
                created,
            });
            // The new metadata goes to a temporary file in the version folder, then replaces
            // the old one; a crash leaves one or the other whole.
            let tmp = info
                .path
                .join(format!("{TMP_PREFIX}{}-{METADATA_FILE}", unique_suffix()));
            let r = write_metadata(&tmp, &info.metadata).and_then(|()| {
                let dest = info.path.join(METADATA_FILE);
                fs::rename(&tmp, &dest).map_err(|e| TrainerError::io(&dest, e))?;
                fsync_dir(&info.path)
            });
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r?;
        }
        self.promote(version)?;
        Ok(info)
    }

    /// The newest version after the active one that the gate held back, if any.
    pub fn latest_candidate(&self) -> Result<Option<VersionInfo>> {
        let active = self.active()?.map_or(0, |a| a.number);
        Ok(self
            .list()?
            .into_iter()
            .rev()
            .take_while(|v| v.number > active)
            .find(|v| v.metadata.held_back()))
    }

    /// Rolls back to `to`, or by default to the active version's parent (the base when it has
    /// none). Returns the new active version.
    pub fn rollback(&self, to: Option<&str>) -> Result<Option<VersionInfo>> {
        match to {
            Some(v) => self.promote(v).map(Some),
            None => {
                let Some(active) = self.active()? else {
                    return Err(TrainerError::store(
                        &self.root,
                        "nothing to roll back: the base model is active",
                    ));
                };
                match active.metadata.parent.as_deref() {
                    Some(p) => self.promote(p).map(Some),
                    None => {
                        self.reset()?;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// No active adapter: the base model serves. Versions are kept.
    pub fn reset(&self) -> Result<()> {
        self.write_pointer("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_parse_strictly() {
        assert_eq!(parse_version("v1"), Some(1));
        assert_eq!(parse_version("v12"), Some(12));
        for bad in ["v", "v0", "v01", "1", "v1a", ".tmp-1-v2"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let (secs, s) = now();
        assert!(secs > 1_700_000_000);
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }
}
