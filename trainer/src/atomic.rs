//! Atomic file output: a reader (or a crash) sees the old file or the new one, never half.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is
/// written, flushed to disk, then renamed over `path`. If anything fails, or the process
/// is killed midway, the previous content of `path` is untouched.
///
/// # Errors
/// If the directory is not writable or the disk is full; the message names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "creating a temporary file in {} to write {}",
                dir.display(),
                path.display()
            )
        })?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    set_permissions(tmp.as_file(), path)?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("flushing {} to disk", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the new file onto {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Persist the rename itself; failure here only weakens durability, not atomicity.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Gives the new file the mode of the file it replaces, or `rw-r--r--` for a new one
/// (temporary files are created owner-only).
#[cfg(unix)]
fn set_permissions(file: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn set_permissions(_file: &std::fs::File, _path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new content").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model.bin")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
        }
    }

    #[test]
    fn failure_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write_atomic(&path, b"precious").unwrap();
        // A directory where the file should go makes the rename fail.
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
