//! A command's file outputs, all or nothing: [`Outputs`] checks every output location before
//! any work starts, stages each file as a synced temporary file beside its target, and renames
//! them all at the end. A command that fails before [`Outputs::commit`] leaves every previous
//! file as it was; a reader (or a crash) sees an old file or a new one, never half of one.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// One planned output: the flag that names it, its path, and what identifies its file.
struct Planned {
    flag: String,
    path: PathBuf,
    file: FileId,
}

/// What identifies a file whatever its spelling: its canonical path and, for an existing
/// file on Unix, its device and inode (so a hard link to another output is that output).
#[derive(PartialEq)]
struct FileId {
    canonical: PathBuf,
    inode: Option<(u64, u64)>,
}

impl FileId {
    fn of(path: &Path) -> Result<Self> {
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
        };
        #[cfg(not(unix))]
        let inode = None;
        Ok(Self {
            canonical: canonical(path)?,
            inode,
        })
    }

    /// Whether both name the same file.
    fn same(&self, other: &Self) -> bool {
        self.canonical == other.canonical || (self.inode.is_some() && self.inode == other.inode)
    }
}

/// The file outputs of one command, checked up front and committed together.
///
/// [`Outputs::plan`] every output (and [`Outputs::refuse_input`] every input file) before
/// starting the work, [`Outputs::stage`] the bytes of each as they are ready, then
/// [`Outputs::commit`]. Dropping it uncommitted removes the staged temporary files.
#[derive(Default)]
pub struct Outputs {
    planned: Vec<Planned>,
    staged: Vec<(PathBuf, NamedTempFile)>,
}

/// The directory a file path lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `path` with its directory resolved (symbolic links, `..`), so that two spellings of one
/// file compare equal; an existing file is resolved whole (a link to another output counts as
/// that output).
fn canonical(path: &Path) -> Result<PathBuf> {
    if let Ok(full) = std::fs::canonicalize(path) {
        return Ok(full);
    }
    let dir = parent_of(path);
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("resolving the directory {}", dir.display()))?;
    Ok(dir.join(name))
}

/// Checks that a file can be written at `path`, naming `flag` in every message: its directory
/// exists (it is not created, as with `cp` or `curl -o`) and is writable, and `path` is not
/// an existing directory, device or FIFO (the rename would put a regular file in its place).
///
/// # Errors
/// The first of these that fails, in words.
pub fn check_output(flag: &str, path: &Path) -> Result<()> {
    let dir = parent_of(path);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!(
            "{flag} {}: {} is not a directory",
            path.display(),
            dir.display()
        ),
        Err(_) => bail!(
            "{flag} {}: the directory {} does not exist (create it first)",
            path.display(),
            dir.display()
        ),
    }
    if path.file_name().is_none() {
        bail!(
            "{flag} {}: give a file name, not a directory",
            path.display()
        );
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            bail!(
                "{flag} {}: it exists and is not a regular file; give a file path",
                path.display()
            );
        }
    }
    // The directory must take a new file: the output is written there, then renamed.
    let probe = dir.join(format!(".tmp-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            // Only a probe: it goes at once.
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // A probe left by a killed process of the same id: the directory took files.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => bail!(
            "{flag} {}: cannot create a file in {}: {e}",
            path.display(),
            dir.display()
        ),
    }
}

/// Checks that files can be written into the directory `dir` of `flag`: it is a writable
/// directory, or it does not exist yet and its parent is a writable directory (it may then be
/// created with [`create_output_dir`], but not its parents).
///
/// # Errors
/// If `dir` is not a directory, or neither it nor its parent can take new files.
pub fn check_output_dir(flag: &str, dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => check_output(flag, &dir.join("probe")),
        Ok(_) => bail!("{flag} {}: it exists and is not a directory", dir.display()),
        Err(_) => check_output(flag, dir),
    }
}

/// Creates the output directory `dir` if it is missing, not its parents (see
/// [`check_output_dir`]).
///
/// # Errors
/// If it cannot be created.
pub fn create_output_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the output `path` of `flag` (see [`check_output`]) and refuses a path already
    /// planned for another output.
    ///
    /// # Errors
    /// An unwritable location, or the same file given to two outputs.
    pub fn plan(&mut self, flag: &str, path: &Path) -> Result<()> {
        check_output(flag, path)?;
        let file = FileId::of(path)?;
        if let Some(other) = self.planned.iter().find(|p| p.file.same(&file)) {
            bail!(
                "{} {} and {flag} {} are the same file; give each output its own path",
                other.flag,
                other.path.display(),
                path.display()
            );
        }
        self.planned.push(Planned {
            flag: flag.to_owned(),
            path: path.to_owned(),
            file,
        });
        Ok(())
    }

    /// Refuses an input file (`flag` `path`) that is also a planned output: the command would
    /// overwrite what it reads.
    ///
    /// # Errors
    /// If `path` is one of the planned outputs.
    pub fn refuse_input(&self, flag: &str, path: &Path) -> Result<()> {
        let Ok(file) = FileId::of(path) else {
            return Ok(());
        };
        match self.planned.iter().find(|p| p.file.same(&file)) {
            Some(out) => bail!(
                "{} {} would overwrite the input {flag} {}; write the output elsewhere",
                out.flag,
                out.path.display(),
                path.display()
            ),
            None => Ok(()),
        }
    }

    /// Writes `bytes` for the planned output `path` into a temporary file beside it, synced to
    /// disk; [`Outputs::commit`] puts it in place.
    ///
    /// # Errors
    /// If `path` was not planned (a bug), or the file cannot be written (disk full).
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        anyhow::ensure!(
            self.planned.iter().any(|p| p.path == path),
            "internal error: {} was not checked before the work started",
            path.display()
        );
        let dir = parent_of(path);
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
        self.staged.push((path.to_owned(), tmp));
        Ok(())
    }

    /// Renames every staged file onto its path, in the order staged.
    ///
    /// # Errors
    /// If a planned output was never staged (nothing is renamed then), or a rename fails
    /// (the files renamed before it stay renamed; the rest keep their previous content).
    pub fn commit(self) -> Result<()> {
        for p in &self.planned {
            anyhow::ensure!(
                self.staged.iter().any(|(path, _)| *path == p.path),
                "{} {} was not written; nothing written",
                p.flag,
                p.path.display()
            );
        }
        for (path, tmp) in self.staged {
            tmp.persist(&path)
                .map_err(|e| e.error)
                .with_context(|| format!("renaming the new file onto {}", path.display()))?;
            if let Ok(d) = std::fs::File::open(parent_of(&path)) {
                // Persist the rename itself; failure here only weakens durability.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: one output, checked, staged and committed (see
/// [`Outputs`]). The directory of `path` must exist.
///
/// # Errors
/// If the directory is missing or not writable, or the disk is full; the message names the
/// path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut outputs = Outputs::new();
    outputs.plan("output", path)?;
    outputs.stage(path, bytes)?;
    outputs.commit()
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
        // A directory where the file should go is refused.
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn outputs_are_committed_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"old a").unwrap();
        let mut outputs = Outputs::new();
        outputs.plan("--a", &a).unwrap();
        outputs.plan("--b", &b).unwrap();
        outputs.stage(&a, b"new a").unwrap();
        // b never staged: the commit fails and a keeps its content.
        let err = outputs.commit().unwrap_err().to_string();
        assert!(err.contains("--b"), "{err}");
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert!(!b.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_same_file_twice_and_an_input_as_output_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let mut outputs = Outputs::new();
        outputs.plan("--out", &a).unwrap();
        let again = dir.path().join(".").join("a");
        let err = outputs
            .plan("--save-float", &again)
            .unwrap_err()
            .to_string();
        assert!(err.contains("same file"), "{err}");
        std::fs::write(&a, b"input").unwrap();
        let err = outputs.refuse_input("--float", &again).unwrap_err();
        assert!(err.to_string().contains("would overwrite"), "{err}");
        // A hard link is the same file under another name.
        let mut outputs = Outputs::new();
        outputs.plan("--out", &a).unwrap();
        let link = dir.path().join("link");
        std::fs::hard_link(&a, &link).unwrap();
        let err = outputs.refuse_input("--float", &link).unwrap_err();
        assert!(err.to_string().contains("would overwrite"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("model.bin");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.path().join("missing").exists());
    }
}
