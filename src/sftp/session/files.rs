//! File contents and attributes: open, read, write, close, stat and setstat, each charged
//! to the quota before it lands.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::answers::*;
use super::{Handle, MAX_IO, Session};
use crate::sftp::audit;
use crate::sftp::jail;
use crate::sftp::protocol::{self as p, Attrs, Code, kind, pflags};

impl Session {
    pub(super) async fn open(&mut self, id: u32, raw: &[u8], flags: u32, attrs: &Attrs) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let write = flags & (pflags::WRITE | pflags::APPEND) != 0;
        let read = flags & pflags::READ != 0 || !write;
        let access = match (read, write) {
            (true, true) => OFlags::RDWR,
            (false, true) => OFlags::WRONLY,
            _ => OFlags::RDONLY,
        };
        let mode = Mode::from_raw_mode(attrs.permissions.unwrap_or(0o644) & 0o777);
        let base = access | OFlags::NONBLOCK;
        let create = flags & pflags::CREAT != 0 && write;
        let exclusive = flags & pflags::EXCL != 0;
        let fd = if create {
            // Create first (one directory lookup for the usual upload of a new file); the new
            // file is charged to the files quota before it exists.
            let charged = self.charge(0, 1).await;
            let created = match &charged {
                Ok(()) => self
                    .jail
                    .open_path(&path, base | OFlags::CREATE | OFlags::EXCL, mode),
                Err(_) => Err(Errno::EXIST),
            };
            match created {
                Ok(fd) => fd,
                Err(e) => {
                    if charged.is_ok() {
                        let _ = self.charge(0, -1).await;
                    }
                    match (e, exclusive) {
                        (Errno::EXIST, true) if charged.is_ok() => return errno_status(id, e),
                        // It exists (or the files quota is full): open what is there.
                        (Errno::EXIST, _) => {
                            match self.jail.open_path(&path, base, Mode::empty()) {
                                Ok(fd) if !exclusive => fd,
                                Ok(_) => return errno_status(id, Errno::EXIST),
                                Err(Errno::NOENT) => {
                                    let message =
                                        charged.err().map(|q| q.to_string()).unwrap_or_default();
                                    return p::status(id, Code::Failure, &message);
                                }
                                Err(e) => return errno_status(id, e),
                            }
                        }
                        (e, _) => return errno_status(id, e),
                    }
                }
            }
        } else {
            match self.jail.open_path(&path, base, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) => return errno_status(id, e),
            }
        };
        let st = match rustix::fs::fstat(&fd) {
            Ok(st) => st,
            Err(e) => return errno_status(id, e),
        };
        if !jail::is_file(&st) {
            return if jail::is_dir(&st) {
                p::status(
                    id,
                    Code::Failure,
                    "that is a directory; open it with opendir",
                )
            } else {
                p::status(
                    id,
                    Code::PermissionDenied,
                    "permission denied: not a regular file",
                )
            };
        }
        // O_NONBLOCK (which kept a FIFO from blocking the open) means nothing for regular files.
        if flags & pflags::TRUNC != 0 && write && st.st_size > 0 {
            if let Err(e) = rustix::fs::ftruncate(&fd, 0) {
                return errno_status(id, e);
            }
            let _ = self.charge(-st.st_size, 0).await;
        }
        let handle = Handle::File {
            fd,
            path,
            writable: write,
            append: flags & pflags::APPEND != 0,
            written: 0,
        };
        match self.new_handle(handle) {
            Some(h) => p::handle(id, &h),
            None => p::status(
                id,
                Code::Failure,
                "too many open files in this session; close some",
            ),
        }
    }

    pub(super) async fn close(&mut self, id: u32, h: &[u8]) -> Vec<u8> {
        let removed = Self::handle_id(h).and_then(|n| self.handles.remove(&n));
        if removed.is_some() {
            self.shared.open_handles.fetch_sub(1, Ordering::SeqCst);
        }
        match removed {
            Some(Handle::File { path, written, .. }) => {
                if written > 0 {
                    audit(
                        &self.shared,
                        &self.account,
                        "sftp upload",
                        &path.display(),
                        Some(written),
                    )
                    .await;
                }
                p::status(id, Code::Ok, "")
            }
            Some(Handle::Dir(_)) => p::status(id, Code::Ok, ""),
            None => bad_handle(id),
        }
    }

    /// Closes every handle (session end), auditing uploads.
    pub(super) async fn close_all(&mut self) {
        let handles = std::mem::take(&mut self.handles);
        self.shared
            .open_handles
            .fetch_sub(handles.len(), Ordering::SeqCst);
        for (_, handle) in handles {
            if let Handle::File { path, written, .. } = handle
                && written > 0
            {
                audit(
                    &self.shared,
                    &self.account,
                    "sftp upload",
                    &path.display(),
                    Some(written),
                )
                .await;
            }
        }
    }

    pub(super) fn read(&mut self, id: u32, h: &[u8], offset: u64, len: u32) -> Vec<u8> {
        let Some(fd) = self.file_fd(h) else {
            return bad_handle(id);
        };
        let len = (len as usize).min(MAX_IO);
        // DATA packet: length, type, id, then the data as a string.
        let mut packet = vec![0u8; 13 + len];
        let n = match rustix::io::pread(fd, &mut packet[13..], offset) {
            Ok(0) => return p::status(id, Code::Eof, "end of file"),
            Ok(n) => n,
            Err(e) => return errno_status(id, e),
        };
        packet.truncate(13 + n);
        packet[..4].copy_from_slice(&((9 + n) as u32).to_be_bytes());
        packet[4] = kind::DATA;
        packet[5..9].copy_from_slice(&id.to_be_bytes());
        packet[9..13].copy_from_slice(&(n as u32).to_be_bytes());
        packet
    }

    pub(super) async fn write(&mut self, id: u32, h: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
        let Some(n) = Self::handle_id(h) else {
            return bad_handle(id);
        };
        let (size, append) = match self.handles.get(&n) {
            Some(Handle::File {
                fd,
                writable: true,
                append,
                ..
            }) => match rustix::fs::fstat(fd) {
                Ok(st) => (st.st_size.max(0) as u64, *append),
                Err(e) => return errno_status(id, e),
            },
            Some(Handle::File { .. }) => {
                return p::status(id, Code::PermissionDenied, "the file was opened read-only");
            }
            _ => return bad_handle(id),
        };
        let offset = if append { size } else { offset };
        let Some(end) = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64)
        else {
            return p::status(id, Code::Failure, "the offset is too large");
        };
        let growth = end.saturating_sub(size) as i64;
        let mut refused = None;
        let mut len = data.len();
        if growth > 0
            && let Err(e) = self.charge(growth, 0).await
        {
            // Keep what fits, byte for byte, then refuse the rest.
            let fit = self
                .shared
                .ledger
                .charge_up_to(&self.account.tenant, &self.account.id, growth)
                .await;
            let allowed_end = size + fit as u64;
            len = allowed_end.saturating_sub(offset).min(len as u64) as usize;
            if fit > 0 && len == 0 {
                let _ = self.charge(-fit, 0).await;
            }
            refused = Some(e);
        }
        let Some(Handle::File { fd, written, .. }) = self.handles.get_mut(&n) else {
            return bad_handle(id);
        };
        let mut done = 0;
        while done < len {
            match rustix::io::pwrite(&*fd, &data[done..len], offset + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) => return errno_status(id, e),
            }
        }
        *written += done as u64;
        match refused {
            Some(e) => p::status(id, Code::Failure, &e.to_string()),
            None => p::status(id, Code::Ok, ""),
        }
    }

    pub(super) fn stat(&self, id: u32, raw: &[u8], follow: bool) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let st = if follow {
            self.jail.stat(&path)
        } else {
            self.jail.lstat(&path)
        };
        match st {
            Ok(st) => p::attrs(id, &attrs_of(&st)),
            Err(e) => errno_status(id, e),
        }
    }

    pub(super) async fn setstat_path(&mut self, id: u32, raw: &[u8], attrs: &Attrs) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let access = if attrs.size.is_some() {
            OFlags::WRONLY
        } else {
            OFlags::RDONLY
        };
        match self
            .jail
            .open_path(&path, access | OFlags::NONBLOCK, Mode::empty())
        {
            Ok(fd) => self.apply_attrs(id, &fd, attrs).await,
            Err(e) => errno_status(id, e),
        }
    }

    pub(super) async fn setstat_handle(&mut self, id: u32, h: &[u8], attrs: &Attrs) -> Vec<u8> {
        let Some(n) = Self::handle_id(h) else {
            return bad_handle(id);
        };
        let fd = match self.handles.get(&n) {
            Some(Handle::File { fd, .. }) => match fd.try_clone() {
                Ok(fd) => fd,
                Err(e) => return p::status(id, Code::Failure, &e.to_string()),
            },
            _ => return bad_handle(id),
        };
        self.apply_attrs(id, &fd, attrs).await
    }

    /// Applies size (charged or released), permissions and times to an open file.
    pub(super) async fn apply_attrs(&self, id: u32, fd: &OwnedFd, attrs: &Attrs) -> Vec<u8> {
        let st = match rustix::fs::fstat(fd) {
            Ok(st) => st,
            Err(e) => return errno_status(id, e),
        };
        if let Some((uid, gid)) = attrs.uid_gid
            && (uid != st.st_uid || gid != st.st_gid)
        {
            return p::status(
                id,
                Code::PermissionDenied,
                "permission denied: ownership cannot be changed",
            );
        }
        if let Some(size) = attrs.size {
            if !jail::is_file(&st) {
                return p::status(id, Code::Failure, "only a regular file has a size to set");
            }
            let Ok(size_signed) = i64::try_from(size) else {
                return p::status(id, Code::Failure, "the size is too large");
            };
            let delta = size_signed - st.st_size;
            if delta > 0
                && let Err(e) = self.charge(delta, 0).await
            {
                return p::status(id, Code::Failure, &e.to_string());
            }
            if let Err(e) = rustix::fs::ftruncate(fd, size) {
                if delta > 0 {
                    let _ = self.charge(-delta, 0).await;
                }
                return errno_status(id, e);
            }
            if delta < 0 {
                let _ = self.charge(delta, 0).await;
            }
        }
        if let Some(mode) = attrs.permissions
            // Permission bits only: the files belong to carve's user, so setuid, setgid and
            // sticky bits are never the client's to set.
            && let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o777))
        {
            return errno_status(id, e);
        }
        if let Some((atime, mtime)) = attrs.times {
            let ts = |s: u32| rustix::fs::Timespec {
                tv_sec: i64::from(s),
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: ts(atime),
                last_modification: ts(mtime),
            };
            if let Err(e) = rustix::fs::futimens(fd, &times) {
                return errno_status(id, e);
            }
        }
        p::status(id, Code::Ok, "")
    }
}
