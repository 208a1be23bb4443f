//! Names: listings, remove, mkdir, rmdir, rename, links, the OpenSSH extensions and statvfs.

use rustix::io::Errno;

use super::answers::*;
use super::{Handle, MAX_HANDLES, MAX_IO, MAX_PACKET, NAMES_PER_READDIR, Session};
use crate::sftp::audit;
use crate::sftp::jail::{self, Jail, JailPath};
use crate::sftp::protocol::{self as p, Attrs, Code, Malformed, Reader, Writer, kind};

impl Session {
    pub(super) fn opendir(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        match self.jail.open_dir(&path) {
            Ok(listing) => match self.new_handle(Handle::Dir(listing)) {
                Some(h) => p::handle(id, &h),
                None => p::status(
                    id,
                    Code::Failure,
                    "too many open handles; close some and try again",
                ),
            },
            Err(e) => errno_status(id, e),
        }
    }

    pub(super) fn readdir(&mut self, id: u32, h: &[u8]) -> Vec<u8> {
        let owner = self.account.username.clone();
        let Some(Handle::Dir(listing)) = Self::handle_id(h).and_then(|n| self.handles.get_mut(&n))
        else {
            return bad_handle(id);
        };
        let batch = match listing.next_batch(NAMES_PER_READDIR) {
            Ok(b) => b,
            Err(e) => return errno_status(id, e),
        };
        if batch.is_empty() {
            return p::status(id, Code::Eof, "no more entries");
        }
        let mut w = Writer::new(kind::NAME, Some(id));
        w.u32(batch.len() as u32);
        for e in &batch {
            let name = String::from_utf8_lossy(&e.name);
            w.bytes(&e.name)
                .bytes(longname(&name, &e.stat, &owner).as_bytes())
                .attrs(&attrs_of(&e.stat));
        }
        w.finish()
    }

    pub(super) async fn remove(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let st = match self.jail.lstat(&path) {
            Ok(st) => st,
            Err(e) => return errno_status(id, e),
        };
        if jail::is_dir(&st) {
            return p::status(
                id,
                Code::Failure,
                "that is a directory; remove it with rmdir",
            );
        }
        if let Err(e) = self.jail.unlink(&path) {
            return errno_status(id, e);
        }
        self.deleted(&path, bytes_freed(&st)).await;
        p::status(id, Code::Ok, "")
    }

    /// Releases a removed name (and the bytes it freed) and audits the deletion.
    pub(super) async fn deleted(&self, path: &JailPath, bytes: i64) {
        let _ = self.charge(-bytes, -1).await;
        audit(
            &self.shared,
            &self.account,
            "sftp delete",
            &path.display(),
            None,
        )
        .await;
    }

    /// Makes one new name (directory, link): charged to the files quota first, released
    /// again if making it fails.
    pub(super) async fn create_counted(
        &self,
        id: u32,
        make: impl FnOnce(&Jail) -> Result<(), Errno>,
    ) -> Vec<u8> {
        if let Err(e) = self.charge(0, 1).await {
            return p::status(id, Code::Failure, &e.to_string());
        }
        match make(&self.jail) {
            Ok(()) => p::status(id, Code::Ok, ""),
            Err(e) => {
                let _ = self.charge(0, -1).await;
                errno_status(id, e)
            }
        }
    }

    pub(super) async fn mkdir(&mut self, id: u32, raw: &[u8], attrs: &Attrs) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let mode = attrs.permissions.unwrap_or(0o755);
        self.create_counted(id, |jail| jail.mkdir(&path, mode))
            .await
    }

    pub(super) async fn rmdir(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        match self.jail.rmdir(&path) {
            Ok(()) => {
                self.deleted(&path, 0).await;
                p::status(id, Code::Ok, "")
            }
            Err(e) => errno_status(id, e),
        }
    }

    pub(super) async fn rename(
        &mut self,
        id: u32,
        from: &[u8],
        to: &[u8],
        replace: bool,
    ) -> Vec<u8> {
        let (from, to) = match (self.parse(from), self.parse(to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return bad_path_status(id, e),
        };
        // What the rename replaces is released from the quota, unless both names are links to
        // one file (a rename onto itself or onto another of its hard links): the kernel then
        // changes nothing, so nothing is freed.
        let replaced = if replace {
            match (self.jail.lstat(&from), self.jail.lstat(&to)) {
                (Ok(f), Ok(t)) if (f.st_dev, f.st_ino) == (t.st_dev, t.st_ino) => None,
                (_, t) => t.ok(),
            }
        } else {
            None
        };
        match self.jail.rename(&from, &to, replace) {
            Ok(()) => {
                if let Some(st) = replaced {
                    let _ = self.charge(-bytes_freed(&st), -1).await;
                }
                p::status(id, Code::Ok, "")
            }
            Err(e) => errno_status(id, e),
        }
    }

    pub(super) async fn symlink(&mut self, id: u32, target: &[u8], link: &[u8]) -> Vec<u8> {
        let link = match self.parse(link) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let Ok(target) = std::str::from_utf8(target) else {
            return p::status(
                id,
                Code::PermissionDenied,
                "permission denied: link targets must be UTF-8",
            );
        };
        if !link.link_target_stays_inside(target) {
            return p::status(
                id,
                Code::PermissionDenied,
                "permission denied: a link must be relative and stay inside your home",
            );
        }
        self.create_counted(id, |jail| jail.symlink(&link, target))
            .await
    }

    pub(super) async fn extended(
        &mut self,
        id: u32,
        name: &[u8],
        r: &mut Reader<'_>,
    ) -> Result<Vec<u8>, Malformed> {
        Ok(match name {
            b"posix-rename@openssh.com" => {
                let from = r.bytes()?;
                let to = r.bytes()?;
                self.rename(id, from, to, true).await
            }
            b"hardlink@openssh.com" => {
                let from = r.bytes()?;
                let to = r.bytes()?;
                match (self.parse(from), self.parse(to)) {
                    (Ok(from), Ok(to)) => {
                        self.create_counted(id, |jail| jail.hardlink(&from, &to))
                            .await
                    }
                    (Err(e), _) | (_, Err(e)) => bad_path_status(id, e),
                }
            }
            b"fsync@openssh.com" => {
                let h = r.bytes()?;
                match self.file_fd(h) {
                    Some(fd) => match rustix::fs::fsync(fd) {
                        Ok(()) => p::status(id, Code::Ok, ""),
                        Err(e) => errno_status(id, e),
                    },
                    None => bad_handle(id),
                }
            }
            b"statvfs@openssh.com" | b"fstatvfs@openssh.com" => {
                r.bytes()?;
                self.statvfs(id).await
            }
            b"limits@openssh.com" => {
                let mut w = Writer::new(kind::EXTENDED_REPLY, Some(id));
                w.u64(MAX_PACKET as u64)
                    .u64(MAX_IO as u64)
                    .u64(MAX_IO as u64)
                    .u64(MAX_HANDLES as u64);
                w.finish()
            }
            _ => p::status(id, Code::OpUnsupported, "this extension is not supported"),
        })
    }

    /// The filesystem's figures, capped by the tenant's quota (so `df` shows the quota).
    pub(super) async fn statvfs(&self, id: u32) -> Vec<u8> {
        let vfs = match self.jail.statvfs() {
            Ok(v) => v,
            Err(e) => return errno_status(id, e),
        };
        let (max_bytes, used_bytes, max_files, used_files) =
            self.shared.ledger.limits(&self.account.tenant).await;
        let frsize = vfs.f_frsize.max(1);
        let quota_blocks = (max_bytes.max(0) as u64) / frsize;
        let free_blocks = (max_bytes - used_bytes).max(0) as u64 / frsize;
        let blocks = vfs.f_blocks.min(quota_blocks);
        let bfree = vfs.f_bfree.min(free_blocks);
        let bavail = vfs.f_bavail.min(free_blocks);
        let files = vfs.f_files.min(max_files.max(0) as u64);
        let ffree = vfs.f_ffree.min((max_files - used_files).max(0) as u64);
        let mut w = Writer::new(kind::EXTENDED_REPLY, Some(id));
        w.u64(vfs.f_bsize)
            .u64(frsize)
            .u64(blocks)
            .u64(bfree)
            .u64(bavail)
            .u64(files)
            .u64(ffree)
            .u64(ffree);
        w.u64(vfs.f_fsid).u64(0).u64(vfs.f_namemax);
        w.finish()
    }
}
