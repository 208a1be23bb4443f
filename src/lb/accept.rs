//! Taking clients in: a pool's listening socket, shared by the data-plane threads, and the
//! accept loop each of them runs, which bounds the pool's connections and hands a new client
//! to the thread holding the fewest of them (a burst of connections would otherwise pile up
//! on whichever thread woke first).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::pool::Pool;

/// What the accept loops of one pool share.
pub struct Intake {
    /// The pool's connection bound.
    slots: Arc<Semaphore>,
    /// Connections each thread holds now.
    held: Box<[AtomicUsize]>,
    threads: Arc<[Handle]>,
}

impl Intake {
    pub fn new(max_connections: usize, threads: Arc<[Handle]>) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            held: threads.iter().map(|_| AtomicUsize::new(0)).collect(),
            threads,
        })
    }

    /// The thread a new client should go to: this one unless another holds fewer by more
    /// than one.
    fn lightest(&self, here: usize) -> usize {
        let load = |i: usize| self.held[i].load(Ordering::Relaxed);
        let here = here.min(self.held.len() - 1);
        let least = (0..self.held.len())
            .min_by_key(|i| load(*i))
            .unwrap_or(here);
        if load(here) <= load(least) + 1 {
            here
        } else {
            least
        }
    }
}

/// A listening socket for a pool (address reuse so that a restart rebinds at once, a
/// backlog for bursts of clients), non-blocking, for the data-plane threads to share.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Accepts clients on `listener` until `stop` resolves, each handled by `serve_one` in its
/// own task on the lightest thread; past the pool's bound a client is closed at once,
/// never queued.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pool: Arc<Pool>,
    intake: Arc<Intake>,
    mut stop: watch::Receiver<bool>,
    serve_one: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<Pool>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = intake.slots.clone().try_acquire_owned() else {
                        pool.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    pool.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    pool.stats.open.fetch_add(1, Ordering::Relaxed);
                    let here = super::shards::current();
                    let to = intake.lightest(here);
                    intake.held[to].fetch_add(1, Ordering::Relaxed);
                    let held = Held { intake: intake.clone(), thread: to, pool: pool.clone(), _slot: slot };
                    if to == here {
                        let work = serve_one(stream, peer, pool.clone());
                        tokio::spawn(async move {
                            work.await;
                            drop(held);
                        });
                    } else if let Ok(stream) = stream.into_std() {
                        let serve_one = serve_one.clone();
                        let pool = pool.clone();
                        intake.threads[to].spawn(async move {
                            if let Ok(stream) = TcpStream::from_std(stream) {
                                serve_one(stream, peer, pool).await;
                            }
                            drop(held);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.id, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// One client connection counted against its pool and thread until dropped.
struct Held {
    intake: Arc<Intake>,
    thread: usize,
    pool: Arc<Pool>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.intake.held[self.thread].fetch_sub(1, Ordering::Relaxed);
        self.pool.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}
