//! The data plane's threads: one single-threaded runtime per core. Each accepts on every
//! pool's listener and keeps its own idle member connections, so a request runs start to end
//! on one thread: no work stealing and no cross-thread wake-ups on the request path.

use std::cell::Cell;
use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The index of the data-plane thread running now (0 on any other thread).
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

/// The data-plane threads; they end when this is dropped.
pub struct Shards {
    handles: std::sync::Arc<[Handle]>,
    /// Dropping these ends each thread's runtime (and the tasks left on it).
    _stops: Vec<oneshot::Sender<()>>,
}

impl Shards {
    /// Starts `count` threads (at least one), or one per core when `count` is 0.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("carve-lb-{index}"))
                .spawn(move || {
                    SHARD.with(|s| s.set(index));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Self {
            handles: handles.into(),
            _stops: stops,
        })
    }

    /// How many threads there are.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// The threads' runtimes, by index.
    pub fn handles(&self) -> std::sync::Arc<[Handle]> {
        self.handles.clone()
    }

    /// Runs `make(index)` on every thread.
    pub fn on_each<F, Fut>(&self, make: F)
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for (index, handle) in self.handles.iter().enumerate() {
            handle.spawn(make(index));
        }
    }
}
