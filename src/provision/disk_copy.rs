//! Copies a volume from one host to another through libvirt streams, reading and writing at
//! once (no copy lands anywhere in between); a qcow2 overlay is pointed at its base on the
//! target as its first bytes pass.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context as _, anyhow};

use super::disks::HostStore;
use crate::hypervisor::qcow2_backing;

/// Chunks in flight between the two hosts.
const IN_FLIGHT: usize = 16;

/// The reading end: sends what the source streams, rewriting the head first if asked.
struct Sender {
    tx: SyncSender<Vec<u8>>,
    head: Vec<u8>,
    repoint: Option<String>,
    /// Bytes of the head still to gather before it is rewritten and sent.
    gathering: usize,
}

impl Sender {
    fn flush_head(&mut self) -> std::io::Result<()> {
        if self.head.is_empty() {
            // Nothing came (libvirt's test driver keeps no bytes): nothing to point.
            self.repoint = None;
            self.gathering = 0;
            return Ok(());
        }
        if let Some(base) = self.repoint.take() {
            qcow2_backing::repoint(&mut self.head, &base).map_err(|e| {
                std::io::Error::other(format!("pointing the disk at its base: {e}"))
            })?;
        }
        let head = std::mem::take(&mut self.head);
        self.gathering = 0;
        if !head.is_empty() {
            self.tx
                .send(head)
                .map_err(|_| std::io::Error::other("the target stopped taking the copy"))?;
        }
        Ok(())
    }
}

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.gathering > 0 {
            let take = buf.len().min(self.gathering);
            self.head.extend_from_slice(&buf[..take]);
            self.gathering -= take;
            if self.gathering == 0 {
                self.flush_head()?;
            }
            if take < buf.len() {
                self.tx
                    .send(buf[take..].to_vec())
                    .map_err(|_| std::io::Error::other("the target stopped taking the copy"))?;
            }
            return Ok(buf.len());
        }
        self.tx
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::other("the target stopped taking the copy"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writing end: reads what the source sent.
struct Receiving {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Receiving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.chunk = next;
                    self.at = 0;
                }
                // The source ended (or failed): the upload sees a short source.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Copies volume `name` of `from`'s pool into `to`'s pool under the same name (replacing
/// one there), pointing a qcow2 overlay at `repoint` (its base's path on `to`) on the way.
/// Returns the bytes copied.
pub async fn copy_volume(
    from: &HostStore,
    to: &HostStore,
    name: &str,
    repoint: Option<String>,
) -> anyhow::Result<u64> {
    let (pool, n) = (from.pool.clone(), name.to_string());
    let source = from
        .hv
        .call(move |h| h.volume(&pool, &n))
        .await?
        .ok_or_else(|| anyhow!("volume {name} is missing on the old host"))?;
    let len = source.length_bytes;
    let (tx, rx) = sync_channel(IN_FLIGHT);
    let gathering = if repoint.is_some() {
        qcow2_backing::HEAD_LEN.min(len as usize)
    } else {
        0
    };
    let mut sender = Sender {
        tx,
        head: Vec::with_capacity(gathering),
        repoint,
        gathering,
    };
    let (pool, n) = (from.pool.clone(), name.to_string());
    let reading = from.hv.call(move |h| {
        let read = h.download(&pool, &n, 0, len, &mut sender)?;
        // A file shorter than the head: what was gathered goes now.
        sender
            .flush_head()
            .map_err(|e| crate::hypervisor::HypervisorError::Libvirt(e.to_string()))?;
        Ok(read)
    });
    let mut receiving = Receiving {
        rx,
        chunk: Vec::new(),
        at: 0,
    };
    let (pool, n) = (to.pool.clone(), name.to_string());
    let writing = to
        .hv
        .call(move |h| h.upload(&pool, &n, &mut receiving, len, false));
    let (read, written) = tokio::join!(reading, writing);
    let read = read.with_context(|| format!("reading {name} on the old host"))?;
    written.with_context(|| format!("writing {name} on the new host"))?;
    // libvirt learns the copy's format (a qcow2 overlay, not raw) when it looks again.
    let pool = to.pool.clone();
    to.hv.call(move |h| h.pool_facts(&pool)).await?;
    Ok(read)
}
