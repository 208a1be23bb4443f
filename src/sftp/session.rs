//! One SFTP session: reads requests from the SSH channel, answers each in order, and batches
//! answers into as few SSH packets as the pipeline allows (a client keeps many requests in
//! flight; answers are sent when no further complete request is already waiting). A
//! malformed or over-long packet ends this session only.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::Shared;
use super::account_lock::AccountLock;
use super::jail::{self, BadPath, Jail, JailPath};
use super::protocol::{self as p, Code, Malformed, Reader, kind};
use crate::domain::ids::{SftpAccountId, TenantId};

mod answers;
mod files;
mod names;

use answers::*;

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
        // Calls that can take long (listing, unlinking or truncating big files, fsync) run where they block no other connection: this worker first hands its other
        // tasks to the rest (multi-threaded runtime only, and a bounded number at once).
        // Reads and writes of the page cache stay in place: moving them costs more than
        // they take.
        let slow = matches!(
            t,
            kind::OPENDIR
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
}
