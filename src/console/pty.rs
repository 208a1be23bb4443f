//! A VM's serial console on this host: the pty QEMU gives the domain's serial port, opened
//! in raw mode (no echo, no line editing: the guest's own terminal does that) and read and
//! written without blocking a thread.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use tokio::io::unix::AsyncFd;

/// An open serial console.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Opens `path` (a `/dev/pts/N` from the domain's live XML) in raw mode.
    pub fn open(path: &str) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut termios = rustix::termios::tcgetattr(&fd)?;
        termios.make_raw();
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &termios)?;
        // `AsyncFd::new` is deprecated because a type that merely borrows its descriptor could
        // close it under the reactor; an `OwnedFd` owns it, which is the sound case (the
        // replacement, `register`, is `unsafe`, which this crate forbids).
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Self { fd })
    }

    /// Reads what the guest printed; `Ok(0)` or an error once the VM is gone.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buf).map_err(io::Error::from))
            {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends all of `bytes` to the guest, waiting while the pty is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| rustix::io::write(fd.get_ref(), bytes).map_err(io::Error::from))
            {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
