//! One VM's console shared by its viewers: a task pumps the guest's output to every viewer
//! (bounded: a viewer too far behind is dropped, never buffered for) and the writer's input
//! to the guest (bounded: a huge paste waits for the guest). One viewer at a time is the
//! writer; a new writer takes over and the old one is told.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use super::pty::Pty;

/// Output chunks a viewer may fall behind by before it is dropped (each at most 4 KiB).
const OUTPUT_BACKLOG: usize = 256;
/// Input chunks queued for the guest before the writer waits.
const INPUT_QUEUE: usize = 16;

/// Why a console ended for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The VM stopped (its pty closed).
    Stopped,
}

/// A VM's live console.
pub struct Hub {
    output: broadcast::Sender<Bytes>,
    input: mpsc::Sender<Bytes>,
    /// The viewer that may type (0: nobody).
    writer: watch::Sender<u64>,
    ended: watch::Receiver<Option<Ended>>,
    next_viewer: AtomicU64,
    /// The pump, ended with the hub (it may be waiting on a guest that does not read).
    pump: tokio::task::AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Hub {
    /// Starts pumping `pty` (on the current runtime) until the hub is dropped or the VM stops.
    pub fn start(pty: Pty) -> Arc<Self> {
        let (output, _) = broadcast::channel(OUTPUT_BACKLOG);
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (ended_tx, ended) = watch::channel(None);
        let pump = tokio::spawn(pump(pty, output.clone(), input_rx, ended_tx)).abort_handle();
        Arc::new(Self {
            output,
            input,
            writer: watch::channel(0).0,
            ended,
            next_viewer: AtomicU64::new(1),
            pump,
        })
    }

    /// Whether the console has ended (the VM stopped).
    pub fn ended(&self) -> Option<Ended> {
        *self.ended.borrow()
    }

    /// A new viewer; a writing one takes over from the writer before it.
    pub fn join(self: &Arc<Self>, write: bool) -> Viewer {
        let id = self.next_viewer.fetch_add(1, Ordering::Relaxed);
        let output = self.output.subscribe();
        let mut writer = self.writer.subscribe();
        if write {
            self.writer.send_replace(id);
        }
        writer.mark_unchanged();
        Viewer {
            hub: self.clone(),
            id,
            output,
            writer,
            ended: self.ended.clone(),
            writing: write,
        }
    }
}

/// What a viewer sees next.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// The guest printed this.
    Output(Bytes),
    /// Another viewer took over typing; this one only watches now.
    TakenOver,
    /// The viewer fell too far behind the output and is dropped.
    TooSlow,
    /// The console ended for everyone.
    Ended(Ended),
}

/// One viewer of a console.
pub struct Viewer {
    hub: Arc<Hub>,
    id: u64,
    output: broadcast::Receiver<Bytes>,
    writer: watch::Receiver<u64>,
    ended: watch::Receiver<Option<Ended>>,
    /// Whether this viewer joined to type and has not been taken over since.
    writing: bool,
}

impl Viewer {
    /// Whether this viewer may type.
    pub fn is_writer(&self) -> bool {
        *self.hub.writer.borrow() == self.id
    }

    /// Waits for what comes next.
    pub async fn next(&mut self) -> Seen {
        loop {
            tokio::select! {
                biased;
                out = self.output.recv() => return match out {
                    Ok(bytes) => Seen::Output(bytes),
                    Err(broadcast::error::RecvError::Lagged(_)) => Seen::TooSlow,
                    Err(broadcast::error::RecvError::Closed) => Seen::Ended(Ended::Stopped),
                },
                changed = self.writer.changed() => {
                    if changed.is_ok() && *self.writer.borrow_and_update() != self.id && self.writing {
                        self.writing = false;
                        return Seen::TakenOver;
                    }
                }
                _ = self.ended.changed() => {
                    if let Some(why) = *self.ended.borrow_and_update() {
                        return Seen::Ended(why);
                    }
                }
            }
        }
    }

    /// Sends keystrokes to the guest if this viewer is the writer (waits while the guest is
    /// behind); `false` when it is not the writer.
    pub async fn type_in(&self, bytes: Bytes) -> bool {
        if !self.is_writer() {
            return false;
        }
        self.hub.input.send(bytes).await.is_ok()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        // A leaving writer leaves nobody typing.
        self.hub.writer.send_if_modified(|w| {
            std::mem::replace(w, if *w == self.id { 0 } else { *w }) == self.id
        });
    }
}

/// Moves output to the viewers and input to the guest until the hub is dropped (its input
/// sender closes) or the pty closes (the VM stopped).
async fn pump(
    pty: Pty,
    output: broadcast::Sender<Bytes>,
    mut input: mpsc::Receiver<Bytes>,
    ended: watch::Sender<Option<Ended>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            read = pty.read(&mut buf) => match read {
                Ok(n @ 1..) => {
                    let _ = output.send(Bytes::copy_from_slice(&buf[..n]));
                }
                _ => break,
            },
            typed = input.recv() => match typed {
                Some(bytes) => {
                    if pty.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => return,
            },
        }
    }
    ended.send_replace(Some(Ended::Stopped));
}
