//! The jailed filesystem of one SFTP account. Every path is resolved by the kernel beneath the
//! account's home (`openat2` with `RESOLVE_IN_ROOT`, as if the home were `/`), never by string
//! prefix: `..`, absolute paths and symlinks (already there or made through SFTP) cannot leave
//! it. Operations on a name (remove, rename, mkdir, lstat…) act on a directory opened that way
//! plus one plain name, so the kernel never follows a symlink outside either.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// How every path is resolved: inside the home, no magic links, no other filesystem.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// A path as the client sees it, lexically normalised inside the jail (`..` stops at `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPath {
    parts: Vec<String>,
}

/// Why a client path was refused before touching the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadPath {
    /// Not UTF-8.
    NotUtf8,
    /// Holds a NUL byte.
    Nul,
    /// Longer than 4096 bytes.
    TooLong,
}

impl JailPath {
    /// The jail's root (`/`).
    pub fn root() -> Self {
        Self { parts: Vec::new() }
    }

    /// Parses a client path; relative paths are relative to the root (the home).
    pub fn parse(raw: &[u8]) -> Result<Self, BadPath> {
        if raw.len() > 4096 {
            return Err(BadPath::TooLong);
        }
        if raw.contains(&0) {
            return Err(BadPath::Nul);
        }
        let text = std::str::from_utf8(raw).map_err(|_| BadPath::NotUtf8)?;
        let mut parts: Vec<String> = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name.to_string()),
            }
        }
        Ok(Self { parts })
    }

    /// The path as the client sees it, e.g. `/site/index.html`.
    pub fn display(&self) -> String {
        format!("/{}", self.parts.join("/"))
    }

    /// The path relative to the root, `.` for the root itself.
    fn relative(&self) -> String {
        if self.parts.is_empty() {
            ".".into()
        } else {
            self.parts.join("/")
        }
    }

    /// The parent directory and the last name; None for the root.
    pub fn split_last(&self) -> Option<(JailPath, &str)> {
        let (last, rest) = self.parts.split_last()?;
        Some((
            JailPath {
                parts: rest.to_vec(),
            },
            last.as_str(),
        ))
    }

    /// Whether a symlink at this path with `target` stays inside the jail: the target must be
    /// relative and must not climb above the root.
    pub fn link_target_stays_inside(&self, target: &str) -> bool {
        if target.starts_with('/') || target.is_empty() || target.contains('\0') {
            return false;
        }
        let mut depth = self.parts.len().saturating_sub(1) as i64;
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    if depth < 0 {
                        return false;
                    }
                }
                _ => depth += 1,
            }
        }
        true
    }
}

/// One account's home, opened once; all access goes through it.
pub struct Jail {
    root: OwnedFd,
    home: PathBuf,
}

/// What a directory listing holds for one entry.
pub struct Entry {
    pub name: Vec<u8>,
    pub stat: Stat,
}

impl Jail {
    /// Opens the home directory (which must exist).
    pub fn open(home: &Path) -> std::io::Result<Self> {
        let root = rustix::fs::open(
            home,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            home: home.to_path_buf(),
        })
    }

    /// The home directory on the host (never shown to clients).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Opens a path inside the jail, following symlinks within it.
    pub fn open_path(&self, path: &JailPath, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        // openat2 refuses flags that mean nothing for O_PATH, so NOCTTY only goes with real opens.
        let extra = if flags.contains(OFlags::PATH) {
            OFlags::CLOEXEC
        } else {
            OFlags::CLOEXEC | OFlags::NOCTTY
        };
        rustix::fs::openat2(&self.root, path.relative(), flags | extra, mode, RESOLVE)
    }

    /// The directory holding the path's last name, and that name. The root has no parent.
    fn parent(&self, path: &JailPath) -> Result<(OwnedFd, String), Errno> {
        let (dir, name) = path.split_last().ok_or(Errno::ACCESS)?;
        let fd = self.open_path(&dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name.to_string()))
    }

    /// stat, following symlinks inside the jail.
    pub fn stat(&self, path: &JailPath) -> Result<Stat, Errno> {
        let fd = self.open_path(path, OFlags::PATH, Mode::empty())?;
        rustix::fs::fstat(&fd)
    }

    /// lstat: the name itself, even if it is a symlink.
    pub fn lstat(&self, path: &JailPath) -> Result<Stat, Errno> {
        match self.parent(path) {
            Ok((dir, name)) => rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW),
            Err(_) if path.split_last().is_none() => rustix::fs::fstat(&self.root),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &JailPath, mode: u32) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(mode & 0o777))
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: &JailPath) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR)
    }

    /// Removes a name (not a directory).
    pub fn unlink(&self, path: &JailPath) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty())
    }

    /// Renames; with `replace` false an existing target is an error (SFTP v3 rename).
    pub fn rename(&self, from: &JailPath, to: &JailPath, replace: bool) -> Result<(), Errno> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(
            &from_dir,
            from_name.as_str(),
            &to_dir,
            to_name.as_str(),
            flags,
        )
    }

    /// Makes a hard link; both names are in the jail, so the file is too.
    pub fn hardlink(&self, from: &JailPath, to: &JailPath) -> Result<(), Errno> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        rustix::fs::linkat(
            &from_dir,
            from_name.as_str(),
            &to_dir,
            to_name.as_str(),
            AtFlags::empty(),
        )
    }

    /// Makes a symlink whose target stays inside the jail.
    pub fn symlink(&self, link: &JailPath, target: &str) -> Result<(), Errno> {
        if !link.link_target_stays_inside(target) {
            return Err(Errno::ACCESS);
        }
        let (dir, name) = self.parent(link)?;
        rustix::fs::symlinkat(target, &dir, name.as_str())
    }

    /// Reads a symlink; a target that leads outside the jail (or is absolute, so would show a
    /// host path) is refused.
    pub fn readlink(&self, path: &JailPath) -> Result<String, Errno> {
        let (dir, name) = self.parent(path)?;
        let target = rustix::fs::readlinkat(&dir, name.as_str(), Vec::new())?;
        let target = target.into_string().map_err(|_| Errno::ACCESS)?;
        if path.link_target_stays_inside(&target) {
            Ok(target)
        } else {
            Err(Errno::ACCESS)
        }
    }

    /// Opens a directory for listing; entries are read a batch at a time, so a huge
    /// directory never sits in memory whole.
    pub fn open_dir(&self, path: &JailPath) -> Result<Listing, Errno> {
        let fd = self.open_path(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        // One descriptor per listing: the directory stream owns it.
        Ok(Listing {
            dir: rustix::fs::Dir::new(fd)?,
        })
    }

    /// Free space of the filesystem holding the jail.
    pub fn statvfs(&self) -> Result<rustix::fs::StatVfs, Errno> {
        rustix::fs::fstatvfs(self.root.as_fd())
    }
}

/// A directory being listed.
pub struct Listing {
    dir: rustix::fs::Dir,
}

impl Listing {
    /// Up to `max` more entries (without `.` and `..`), with lstat of each; empty at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, Errno> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(entry) = self.dir.next() else {
                break;
            };
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // A name removed since it was read is skipped.
            if let Ok(stat) =
                rustix::fs::statat(self.dir.fd()?, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            {
                out.push(Entry {
                    name: name.to_vec(),
                    stat,
                });
            }
        }
        Ok(out)
    }
}

/// Whether a stat is of a regular file.
pub fn is_file(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Whether a stat is of a directory.
pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_inside_the_root() {
        let p = |s: &str| JailPath::parse(s.as_bytes()).unwrap().display();
        assert_eq!(p(""), "/");
        assert_eq!(p("."), "/");
        assert_eq!(p("/a/./b//c/"), "/a/b/c");
        assert_eq!(p("../../etc/passwd"), "/etc/passwd");
        assert_eq!(p("/a/../../.."), "/");
        assert_eq!(JailPath::parse(b"a\0b"), Err(BadPath::Nul));
        assert_eq!(JailPath::parse(b"a\xffb"), Err(BadPath::NotUtf8));
        assert_eq!(JailPath::parse(&[b'a'; 5000]), Err(BadPath::TooLong));
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let link = JailPath::parse(b"/site/current").unwrap();
        assert!(link.link_target_stays_inside("releases/1"));
        assert!(link.link_target_stays_inside("../other"));
        assert!(!link.link_target_stays_inside("../../etc"));
        assert!(!link.link_target_stays_inside("/etc/passwd"));
        assert!(!link.link_target_stays_inside(""));
        let top = JailPath::parse(b"/link").unwrap();
        assert!(!top.link_target_stays_inside(".."));
        assert!(top.link_target_stays_inside("a/../b"));
    }

    #[test]
    fn the_kernel_keeps_symlinks_and_dotdot_inside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let base = tempfile::tempdir().unwrap();
        let home = base.path().join("u1");
        let sibling = base.path().join("u10");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(sibling.join("data"), "other account").unwrap();
        std::fs::write(home.join("mine"), "mine").unwrap();
        // Links planted by someone else, pointing out of the home.
        std::os::unix::fs::symlink(outside.path().join("secret"), home.join("abs")).unwrap();
        std::os::unix::fs::symlink("../u10/data", home.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join("dir")).unwrap();
        let jail = Jail::open(&home).unwrap();
        let p = |s: &str| JailPath::parse(s.as_bytes()).unwrap();
        assert!(jail.stat(&p("mine")).is_ok(), "{:?}", jail.stat(&p("mine")));
        for escape in ["abs", "rel", "dir/secret", "../u10/data", "/../u10/data"] {
            let r = jail.open_path(&p(escape), OFlags::RDONLY, Mode::empty());
            assert!(r.is_err(), "{escape} escaped the jail");
        }
        assert_eq!(
            jail.readlink(&p("abs")),
            Err(Errno::ACCESS),
            "no host path is revealed"
        );
        assert_eq!(jail.readlink(&p("rel")), Err(Errno::ACCESS));
        assert_eq!(jail.symlink(&p("evil"), "/etc/passwd"), Err(Errno::ACCESS));
        assert_eq!(jail.symlink(&p("evil"), "../u10/data"), Err(Errno::ACCESS));
        jail.symlink(&p("ok"), "mine").unwrap();
        assert_eq!(jail.readlink(&p("ok")).unwrap(), "mine");
        // Removing through a symlinked directory cannot touch the outside.
        assert!(jail.unlink(&p("dir/secret")).is_err());
        assert!(outside.path().join("secret").exists());
        // Renaming onto the outside is impossible: the target resolves inside.
        assert!(jail.rename(&p("mine"), &p("dir/stolen"), true).is_err());
        assert!(!outside.path().join("stolen").exists());
        assert_eq!(jail.mkdir(&p("/"), 0o755), Err(Errno::ACCESS));
        jail.mkdir(&p("made"), 0o755).unwrap();
        jail.mkdir(&p("made/inner"), 0o755).unwrap();
        assert!(is_dir(&jail.lstat(&p("made/inner")).unwrap()));
        jail.rename(&p("made/inner"), &p("moved"), false).unwrap();
        jail.rmdir(&p("moved")).unwrap();
    }
}
