//! Editing other programs' files safely: follow symlinks to the real file, keep its mode, keep
//! the first original as a backup, write a temp file and rename it over.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where a file really is: a symlink (or a chain of them) is followed so that writing replaces
/// the target and leaves the link in place.
pub fn real_path(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        match fs::read_link(&current) {
            Ok(target) => {
                current = if target.is_absolute() {
                    target
                } else {
                    current.parent().unwrap_or(Path::new("/")).join(target)
                };
            }
            Err(_) => return current,
        }
    }
    current
}

/// The permission bits of an existing file.
pub fn mode_of(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Writes `contents` to `path` atomically with the given mode, creating the parent folder
/// (with the default mode) when missing.
pub fn atomic_write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let path = real_path(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("rlclaw");
    let tmp = dir.join(format!(".{name}.rlclaw-tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The umask may have narrowed the mode at creation; a file we create gets exactly `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all()?;
    drop(file);
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Copies an existing file to `<file>.rlclaw-backup` the first time rlclaw changes it, so the
/// person's original survives any number of installs. Returns the backup's path when made now.
pub fn backup_once(path: &Path) -> Result<Option<PathBuf>> {
    let path = real_path(path);
    if !path.exists() {
        return Ok(None);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rlclaw-backup");
    let backup = path.with_file_name(name);
    if backup.exists() {
        return Ok(None);
    }
    let contents = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // 0600 whatever the original's mode: the files rlclaw edits may hold secrets.
    atomic_write(&backup, &contents, 0o600)?;
    Ok(Some(backup))
}

/// Reads a JSON object file: `None` when it does not exist, an error naming the line when it
/// is not a JSON object (a JSON5 file with comments is refused rather than rewritten without
/// them).
pub fn read_json_object(path: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Some(serde_json::Map::new()));
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(_) => bail!(
            "{} is not a JSON object; rlclaw changed nothing",
            path.display()
        ),
        Err(e) => bail!(
            "{} is not plain JSON (line {}, column {}: {e}); rlclaw edits it only when it is, so \
             as not to drop comments or formatting. Changed nothing: fix the file or remove its \
             comments, then run this again",
            path.display(),
            e.line(),
            e.column()
        ),
    }
}

/// Writes a JSON value pretty-printed with a trailing newline, keeping the existing file's
/// mode (or `new_mode` for a new file), and with `private` also dropping group/other bits.
/// Keys that were in the file keep their order; new keys follow them.
pub fn write_json(
    path: &Path,
    value: &serde_json::Value,
    new_mode: u32,
    private: bool,
) -> Result<()> {
    let template: Option<Ordered> = fs::read_to_string(real_path(path))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut text = serde_json::to_string_pretty(&reorder(value, template.as_ref()))?;
    text.push('\n');
    let mut mode = mode_of(&real_path(path)).unwrap_or(new_mode);
    if private {
        mode &= 0o700;
        mode |= 0o600;
    }
    atomic_write(path, text.as_bytes(), mode)
}

/// A JSON value that keeps its object keys in file order (serde_json's own map sorts them).
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Ordered::Null, Ordered::Number))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
                Ok(Ordered::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut pairs: Vec<(String, Ordered)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Ordered>()? {
                    pairs.retain(|(old, _)| *old != k);
                    pairs.push((k, v));
                }
                Ok(Ordered::Object(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Ordered::Null => s.serialize_unit(),
            Ordered::Bool(b) => s.serialize_bool(*b),
            Ordered::Number(n) => n.serialize(s),
            Ordered::String(t) => s.serialize_str(t),
            Ordered::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Ordered::Object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// `value` with its object keys in the order `template` has them (new keys after).
pub fn reorder(value: &serde_json::Value, template: Option<&Ordered>) -> Ordered {
    use serde_json::Value;
    match value {
        Value::Null => Ordered::Null,
        Value::Bool(b) => Ordered::Bool(*b),
        Value::Number(n) => Ordered::Number(n.clone()),
        Value::String(t) => Ordered::String(t.clone()),
        Value::Array(items) => {
            let old = match template {
                Some(Ordered::Array(old)) => old.as_slice(),
                _ => &[],
            };
            Ordered::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| reorder(v, old.get(i)))
                    .collect(),
            )
        }
        Value::Object(map) => {
            let old = match template {
                Some(Ordered::Object(old)) => old.as_slice(),
                _ => &[],
            };
            let mut pairs = Vec::with_capacity(map.len());
            for (k, t) in old {
                if let Some(v) = map.get(k) {
                    pairs.push((k.clone(), reorder(v, Some(t))));
                }
            }
            for (k, v) in map {
                if !old.iter().any(|(o, _)| o == k) {
                    pairs.push((k.clone(), reorder(v, None)));
                }
            }
            Ordered::Object(pairs)
        }
    }
}

/// Quotes a word for a POSIX shell (single quotes), as hook commands are run by a shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/usr/bin/rlclaw"), "/usr/bin/rlclaw");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn writing_through_a_symlink_replaces_the_target_and_keeps_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("real.json");
        fs::write(&target, "{}").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_json(&link, &serde_json::json!({"a": 1}), 0o600, false).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(fs::read_to_string(&target).unwrap().contains("\"a\": 1"));
        assert_eq!(mode_of(&target), Some(0o640));
        write_json(&link, &serde_json::json!({"a": 2}), 0o600, true).unwrap();
        assert_eq!(mode_of(&target), Some(0o600));
    }

    #[test]
    fn rewriting_keeps_the_key_order_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.json");
        fs::write(
            &path,
            r#"{"zeta": 1, "alpha": {"y": [{"b": 1, "a": 2}], "x": 2}}"#,
        )
        .unwrap();
        let mut value = read_json_object(&path).unwrap().unwrap();
        value.insert("new".into(), serde_json::json!(true));
        write_json(&path, &serde_json::Value::Object(value), 0o600, false).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert_eq!(
            compact,
            r#"{"zeta":1,"alpha":{"y":[{"b":1,"a":2}],"x":2},"new":true}"#
        );
    }

    #[test]
    fn a_backup_is_made_once_and_json5_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.json");
        fs::write(&path, "{\"x\": 1}").unwrap();
        assert!(backup_once(&path).unwrap().is_some());
        fs::write(&path, "{\"x\": 2}").unwrap();
        assert!(backup_once(&path).unwrap().is_none());
        let backup = tmp.path().join("c.json.rlclaw-backup");
        assert_eq!(fs::read_to_string(backup).unwrap(), "{\"x\": 1}");
        fs::write(&path, "{ // comment\n x: 1 }").unwrap();
        let err = read_json_object(&path).unwrap_err().to_string();
        assert!(err.contains("not plain JSON"), "{err}");
    }
}
