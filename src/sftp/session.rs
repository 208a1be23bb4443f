//! One SFTP session: reads requests from the SSH channel, answers each in order, and batches
//! answers into as few SSH packets as the pipeline allows (a client keeps many requests in
//! flight; answers are sent when no further complete request is already waiting). A
//! malformed or over-long packet ends this session only.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustix::fs::{Mode, OFlags, Stat};
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::account_lock::AccountLock;
use super::jail::{self, BadPath, Jail, JailPath};
use super::protocol::{self as p, Attrs, Code, Malformed, Reader, Writer, kind, pflags};
use super::{Shared, audit};
use crate::domain::ids::{SftpAccountId, TenantId};

/// Largest request accepted (OpenSSH's limit: 256 KiB), in bytes.
pub const MAX_PACKET: usize = 256 * 1024;
/// Largest read or write served per request.
pub const MAX_IO: usize = MAX_PACKET - 1024;
/// Most handles open at once in one session.
pub const MAX_HANDLES: usize = 512;
/// Requests of this process allowed on threads of their own at once.
const MAX_BLOCKING_REQUESTS: usize = 64;
/// Names per READDIR answer.
const NAMES_PER_READDIR: usize = 128;
/// Answers are sent once this many bytes wait, even if more requests are queued.
const FLUSH_AT: usize = 64 * 1024;

/// Who is logged in, and where.
pub struct Account {
    pub id: SftpAccountId,
    pub tenant: TenantId,
    pub username: String,
    pub client: Option<std::net::IpAddr>,
}

enum Handle {
    File {
        fd: OwnedFd,
        path: JailPath,
        writable: bool,
        append: bool,
        written: u64,
    },
    Dir(jail::Listing),
}

/// The state of one session.
pub struct Session {
    shared: Arc<Shared>,
    account: Account,
    jail: Jail,
    /// Orders this account's size-changing requests across sessions and processes.
    lock: Arc<AccountLock>,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session ended without `close_all` (its task was cut) still gives its handles back.
        self.shared
            .open_handles
            .fetch_sub(self.handles.len(), Ordering::SeqCst);
    }
}

/// Serves SFTP on a channel until the client leaves or breaks the protocol.
pub async fn serve<S>(stream: S, shared: Arc<Shared>, account: Account, jail: Jail)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let username = account.username.clone();
    let lock = match AccountLock::new(&shared.account_locks, &account.id, jail.home()) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::error!(user = %username, error = %e, "cannot open an SFTP home for locking");
            return;
        }
    };
    let mut session = Session {
        shared,
        account,
        jail,
        lock,
        handles: HashMap::new(),
        next_handle: 1,
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(MAX_PACKET + 16, rd);
    let mut body = Vec::with_capacity(64 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT * 2);
    let result: Result<(), String> = async {
        loop {
            let len = match reader.read_u32().await {
                Ok(len) => len as usize,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("reading: {e}")),
            };
            if len == 0 || len > MAX_PACKET + 64 {
                return Err(format!(
                    "packet of {len} bytes is outside 1..={}",
                    MAX_PACKET + 64
                ));
            }
            body.resize(len, 0);
            reader
                .read_exact(&mut body)
                .await
                .map_err(|e| format!("reading: {e}"))?;
            let answer = session
                .handle_off_async_threads(&body)
                .await
                .map_err(|e| e.to_string())?;
            out.extend_from_slice(&answer);
            if out.len() >= FLUSH_AT || !complete_packet_buffered(reader.buffer()) {
                wr.write_all(&out)
                    .await
                    .map_err(|e| format!("writing: {e}"))?;
                out.clear();
            }
        }
    }
    .await;
    session.close_all().await;
    session.shared.ledger.flush().await;
    match result {
        Ok(()) => tracing::debug!(user = %username, "SFTP session ended"),
        Err(e) => tracing::info!(user = %username, reason = %e, "SFTP session closed"),
    }
}

/// Whether `buf` starts with a whole packet.
fn complete_packet_buffered(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() >= 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The status answer for a system error.
fn errno_status(id: u32, e: Errno) -> Vec<u8> {
    let (code, text) = match e {
        Errno::NOENT | Errno::NOTDIR => (Code::NoSuchFile, "no such file or directory"),
        Errno::ACCESS | Errno::PERM | Errno::XDEV | Errno::LOOP | Errno::ROFS => {
            (Code::PermissionDenied, "permission denied")
        }
        Errno::EXIST => (Code::Failure, "the file already exists"),
        Errno::NOTEMPTY => (Code::Failure, "the directory is not empty"),
        Errno::ISDIR => (Code::Failure, "that is a directory"),
        Errno::NOSPC | Errno::DQUOT => (Code::Failure, "no space left on the server"),
        Errno::NAMETOOLONG => (Code::Failure, "the name is too long"),
        Errno::INVAL => (Code::Failure, "invalid argument"),
        _ => (Code::Failure, "the operation failed"),
    };
    p::status(id, code, text)
}

/// The status answer for a path the client may not even name.
fn bad_path_status(id: u32, e: BadPath) -> Vec<u8> {
    match e {
        BadPath::NotUtf8 => p::status(id, Code::NoSuchFile, "no such file: names must be UTF-8"),
        BadPath::Nul => p::status(
            id,
            Code::PermissionDenied,
            "permission denied: names may not contain NUL",
        ),
        BadPath::TooLong => p::status(id, Code::Failure, "the path is too long"),
    }
}

/// SFTP attributes of a stat.
fn attrs_of(st: &Stat) -> Attrs {
    Attrs {
        size: Some(st.st_size as u64),
        uid_gid: Some((st.st_uid, st.st_gid)),
        permissions: Some(st.st_mode),
        times: Some((st.st_atime as u32, st.st_mtime as u32)),
    }
}

/// An `ls -l` line, which some clients (FileZilla, WinSCP) parse.
fn longname(name: &str, st: &Stat, owner: &str) -> String {
    let mode = st.st_mode;
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o140000 => 's',
        0o020000 => 'c',
        0o060000 => 'b',
        _ => '-',
    };
    let mut perms = String::with_capacity(10);
    perms.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let when = chrono::DateTime::from_timestamp(st.st_mtime, 0).unwrap_or_default();
    let recent = (chrono::Utc::now() - when).num_days().abs() < 180;
    let date = if recent {
        when.format("%b %e %H:%M")
    } else {
        when.format("%b %e  %Y")
    };
    format!(
        "{perms} {:>4} {owner:<8} {owner:<8} {:>8} {date} {name}",
        st.st_nlink, st.st_size
    )
}

impl Session {
    /// Answers one request with its file calls (open, read, write, fsync, directory listing)
    /// where blocking cannot stall other connections: on a multi-threaded runtime this
    /// worker first hands its other tasks to the rest; on a single-threaded one (some tests)
    /// the request runs in place.
    async fn handle_off_async_threads(&mut self, body: &[u8]) -> Result<Vec<u8>, Malformed> {
        let t = body.first().copied().unwrap_or(0);
        // Requests that read a size, charge the quota and change files hold the account's
        // lock throughout, so no other session acts on the same stale size meanwhile.
        let changes = matches!(
            t,
            kind::OPEN
                | kind::WRITE
                | kind::SETSTAT
                | kind::FSETSTAT
                | kind::REMOVE
                | kind::RMDIR
                | kind::MKDIR
                | kind::RENAME
                | kind::SYMLINK
                | kind::EXTENDED
        );
        let lock = self.lock.clone();
        let _held = if changes {
            Some(lock.hold().await)
        } else {
            None
        };
        // Calls that can take long (opening, listing, unlinking or truncating big files,
        // fsync) run where they block no other connection: this worker first hands its other
        // tasks to the rest (multi-threaded runtime only, and a bounded number at once).
        // Reads and writes of the page cache stay in place: moving them costs more than
        // they take.
        let slow = matches!(
            t,
            kind::OPEN
                | kind::OPENDIR
                | kind::READDIR
                | kind::REMOVE
                | kind::RMDIR
                | kind::SETSTAT
                | kind::FSETSTAT
                | kind::EXTENDED
        );
        let runtime = tokio::runtime::Handle::current();
        let shared = self.shared.clone();
        let counter = &shared.blocking_requests;
        let off_thread = slow
            && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && counter.fetch_add(1, Ordering::SeqCst) < MAX_BLOCKING_REQUESTS;
        if !off_thread {
            if slow && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                counter.fetch_sub(1, Ordering::SeqCst);
            }
            return self.handle(body).await;
        }
        let answer = tokio::task::block_in_place(|| runtime.block_on(self.handle(body)));
        counter.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    /// Answers one request; Err ends the session.
    async fn handle(&mut self, body: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut r = Reader::new(body);
        let t = r.u8()?;
        if t == kind::INIT {
            return Ok(version());
        }
        let id = r.u32()?;
        Ok(match t {
            kind::OPEN => {
                let path = r.bytes()?;
                let flags = r.u32()?;
                let attrs = r.attrs()?;
                self.open(id, path, flags, &attrs).await
            }
            kind::CLOSE => {
                let h = r.bytes()?;
                self.close(id, h).await
            }
            kind::READ => {
                let h = r.bytes()?;
                let offset = r.u64()?;
                let len = r.u32()?;
                self.read(id, h, offset, len)
            }
            kind::WRITE => {
                let h = r.bytes()?;
                let offset = r.u64()?;
                let data = r.bytes()?;
                self.write(id, h, offset, data).await
            }
            kind::LSTAT | kind::STAT => {
                let path = r.bytes()?;
                self.stat(id, path, t == kind::STAT)
            }
            kind::FSTAT => {
                let h = r.bytes()?;
                match self.file_fd(h) {
                    Some(fd) => match rustix::fs::fstat(fd) {
                        Ok(st) => p::attrs(id, &attrs_of(&st)),
                        Err(e) => errno_status(id, e),
                    },
                    None => bad_handle(id),
                }
            }
            kind::SETSTAT => {
                let path = r.bytes()?;
                let attrs = r.attrs()?;
                self.setstat_path(id, path, &attrs).await
            }
            kind::FSETSTAT => {
                let h = r.bytes()?;
                let attrs = r.attrs()?;
                self.setstat_handle(id, h, &attrs).await
            }
            kind::OPENDIR => {
                let path = r.bytes()?;
                self.opendir(id, path)
            }
            kind::READDIR => {
                let h = r.bytes()?;
                self.readdir(id, h)
            }
            kind::REMOVE => {
                let path = r.bytes()?;
                self.remove(id, path).await
            }
            kind::MKDIR => {
                let path = r.bytes()?;
                let attrs = r.attrs()?;
                self.mkdir(id, path, &attrs).await
            }
            kind::RMDIR => {
                let path = r.bytes()?;
                self.rmdir(id, path).await
            }
            kind::REALPATH => {
                let path = r.bytes()?;
                match JailPath::parse(path) {
                    Ok(jp) => p::single_name(id, jp.display().as_bytes()),
                    Err(e) => bad_path_status(id, e),
                }
            }
            kind::RENAME => {
                let from = r.bytes()?;
                let to = r.bytes()?;
                self.rename(id, from, to, false).await
            }
            kind::READLINK => {
                let path = r.bytes()?;
                match JailPath::parse(path) {
                    Ok(jp) => match self.jail.readlink(&jp) {
                        Ok(target) => p::single_name(id, target.as_bytes()),
                        Err(e) => errno_status(id, e),
                    },
                    Err(e) => bad_path_status(id, e),
                }
            }
            kind::SYMLINK => {
                // OpenSSH's order: the link's target first, then the link's path.
                let target = r.bytes()?;
                let link = r.bytes()?;
                self.symlink(id, target, link).await
            }
            kind::EXTENDED => {
                let name = r.bytes()?;
                self.extended(id, name, &mut r).await?
            }
            _ => p::status(id, Code::OpUnsupported, "this request is not supported"),
        })
    }

    fn parse(&self, raw: &[u8]) -> Result<JailPath, BadPath> {
        JailPath::parse(raw)
    }

    fn new_handle(&mut self, handle: Handle) -> Option<Vec<u8>> {
        let open = &self.shared.open_handles;
        if self.handles.len() >= MAX_HANDLES
            || open.fetch_add(1, Ordering::SeqCst) >= self.shared.max_open_handles
        {
            if self.handles.len() < MAX_HANDLES {
                open.fetch_sub(1, Ordering::SeqCst);
            }
            return None;
        }
        let n = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        self.handles.insert(n, handle);
        Some(n.to_be_bytes().to_vec())
    }

    fn handle_id(h: &[u8]) -> Option<u32> {
        <[u8; 4]>::try_from(h).ok().map(u32::from_be_bytes)
    }

    fn file_fd(&self, h: &[u8]) -> Option<&OwnedFd> {
        match self.handles.get(&Self::handle_id(h)?) {
            Some(Handle::File { fd, .. }) => Some(fd),
            _ => None,
        }
    }

    /// Charges the tenant's quota (negative amounts release); all or nothing.
    async fn charge(&self, bytes: i64, files: i64) -> Result<(), super::quota::Exceeded> {
        self.shared
            .ledger
            .charge(&self.account.tenant, &self.account.id, bytes, files)
            .await
    }

    async fn open(&mut self, id: u32, raw: &[u8], flags: u32, attrs: &Attrs) -> Vec<u8> {
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

    async fn close(&mut self, id: u32, h: &[u8]) -> Vec<u8> {
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
    async fn close_all(&mut self) {
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

    fn read(&mut self, id: u32, h: &[u8], offset: u64, len: u32) -> Vec<u8> {
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

    async fn write(&mut self, id: u32, h: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
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

    fn stat(&self, id: u32, raw: &[u8], follow: bool) -> Vec<u8> {
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

    async fn setstat_path(&mut self, id: u32, raw: &[u8], attrs: &Attrs) -> Vec<u8> {
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

    async fn setstat_handle(&mut self, id: u32, h: &[u8], attrs: &Attrs) -> Vec<u8> {
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
    async fn apply_attrs(&self, id: u32, fd: &OwnedFd, attrs: &Attrs) -> Vec<u8> {
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

    fn opendir(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
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

    fn readdir(&mut self, id: u32, h: &[u8]) -> Vec<u8> {
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

    async fn remove(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
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
    async fn deleted(&self, path: &JailPath, bytes: i64) {
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
    async fn create_counted(
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

    async fn mkdir(&mut self, id: u32, raw: &[u8], attrs: &Attrs) -> Vec<u8> {
        let path = match self.parse(raw) {
            Ok(p) => p,
            Err(e) => return bad_path_status(id, e),
        };
        let mode = attrs.permissions.unwrap_or(0o755);
        self.create_counted(id, |jail| jail.mkdir(&path, mode))
            .await
    }

    async fn rmdir(&mut self, id: u32, raw: &[u8]) -> Vec<u8> {
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

    async fn rename(&mut self, id: u32, from: &[u8], to: &[u8], replace: bool) -> Vec<u8> {
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

    async fn symlink(&mut self, id: u32, target: &[u8], link: &[u8]) -> Vec<u8> {
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

    async fn extended(
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
    async fn statvfs(&self, id: u32) -> Vec<u8> {
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

/// The VERSION answer: SFTP 3 and the OpenSSH extensions carve serves.
fn version() -> Vec<u8> {
    let mut w = Writer::new(kind::VERSION, None);
    w.u32(3);
    for (name, v) in [
        ("posix-rename@openssh.com", "1"),
        ("statvfs@openssh.com", "2"),
        ("fstatvfs@openssh.com", "2"),
        ("hardlink@openssh.com", "1"),
        ("fsync@openssh.com", "1"),
        ("limits@openssh.com", "1"),
    ] {
        w.bytes(name.as_bytes()).bytes(v.as_bytes());
    }
    w.finish()
}

/// Bytes a file frees when its name goes: its size if this was its last link.
fn bytes_freed(st: &Stat) -> i64 {
    if jail::is_file(st) && st.st_nlink <= 1 {
        st.st_size
    } else {
        0
    }
}

fn bad_handle(id: u32) -> Vec<u8> {
    p::status(id, Code::Failure, "invalid handle")
}
