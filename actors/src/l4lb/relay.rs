//! Moving a proxied TCP connection's bytes both ways.
//!
//! On Linux the bytes go socket → pipe → socket with `splice(2)`, so they never enter user
//! space (no copy, no buffer per connection). Elsewhere, or when pipes cannot be had (the fd
//! limit), it is `tokio::io::copy_bidirectional`. Each direction ends on end-of-file, which is
//! passed on as a half close (`shutdown(SHUT_WR)`), so protocols that half-close keep working;
//! the relay ends when both directions have, or at the first error.

use std::io;

use tokio::net::TcpStream;

/// Relays until both directions are closed or one fails. `zero_copy` asks for splice where the
/// OS has it.
pub(crate) async fn relay(mut client: TcpStream, mut upstream: TcpStream, zero_copy: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if zero_copy {
        match (splice::Pipe::new(), splice::Pipe::new()) {
            (Ok(up), Ok(down)) => return splice::relay(&client, &upstream, &up, &down).await,
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "no pipe for splice; copying through user space");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = zero_copy;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    use nix::fcntl::{OFlag, SpliceFFlags, splice};
    use nix::sys::socket::{Shutdown, shutdown};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// How much one splice moves at most: the default pipe capacity, so a pipe emptied before
    /// every fill never blocks the socket side.
    const CHUNK: usize = 64 * 1024;

    fn flags() -> SpliceFFlags {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
    }

    /// A non-blocking pipe; both ends close on drop.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Self> {
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            Ok(Pipe { read, write })
        }
    }

    pub(super) async fn relay(client: &TcpStream, upstream: &TcpStream, up: &Pipe, down: &Pipe) -> io::Result<()> {
        tokio::try_join!(one_way(client, upstream, up), one_way(upstream, client, down)).map(|_| ())
    }

    /// Moves `from`'s bytes to `to` until end-of-file, then half-closes `to`.
    async fn one_way(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> io::Result<()> {
        loop {
            // The pipe is empty here, so EAGAIN can only mean `from` has nothing to read.
            let filled = from
                .async_io(Interest::READABLE, || {
                    splice(from.as_fd(), None, pipe.write.as_fd(), None, CHUNK, flags()).map_err(io::Error::from)
                })
                .await?;
            if filled == 0 {
                // Only a half close: the other direction may still have bytes to carry.
                return match shutdown(to.as_raw_fd(), Shutdown::Write) {
                    Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                    Err(errno) => Err(errno.into()),
                };
            }
            drain(pipe, to, filled).await?;
        }
    }

    /// Empties `len` bytes of the pipe into `to`; EAGAIN here means `to` is full.
    async fn drain(pipe: &Pipe, to: &TcpStream, mut len: usize) -> io::Result<()> {
        while len > 0 {
            let moved = to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_fd(), None, to.as_fd(), None, len, flags()).map_err(io::Error::from)
                })
                .await?;
            if moved == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes from the pipe"));
            }
            len -= moved;
        }
        Ok(())
    }
}
