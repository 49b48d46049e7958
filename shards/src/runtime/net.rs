//! TCP and Unix sockets on the executor's ring.

use std::net::SocketAddr;

pub use glommio::net::{TcpListener, TcpStream, UnixStream};

/// Binds a listener for this executor. glommio sets `SO_REUSEPORT`, so every
/// shard binds the same address and the kernel spreads connections.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// Accepts the next connection with Nagle disabled: a 44 ms
/// Nagle/delayed-ACK stall was measured on small responses without it.
pub async fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    let stream = listener.accept().await.map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream)
}

/// Whether the shards will be able to listen on `addr`. Binds the way they
/// do (`SO_REUSEPORT`), so connections of a previous, killed instance still
/// closing on the port do not count. Two live instances of ours could share
/// the port this way: keeping a second one out is a storage-directory lock's
/// job, not this check's.
pub fn check_port_free(addr: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(())
}

pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream)
}

/// Parts one vectored write passes to the kernel at most.
const MAX_PARTS: usize = 64;

/// Writes `parts` with one `sendmsg`: a response's head and its shared
/// body parts go out without being joined into one buffer first (hyper
/// queues them when the stream is vectored, and copies them otherwise).
/// When the socket buffer is full, falls back to the stream's own write
/// of the first part, which registers the wake-up on the ring.
pub fn poll_write_vectored(
    stream: &mut TcpStream,
    cx: &mut std::task::Context<'_>,
    parts: &[std::io::IoSlice<'_>],
) -> std::task::Poll<std::io::Result<usize>> {
    use std::os::fd::AsRawFd;
    let parts = &parts[..parts.len().min(MAX_PARTS)];
    let Some(first) = parts.iter().find(|p| !p.is_empty()) else {
        return std::task::Poll::Ready(Ok(0));
    };
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (std
    // guarantees it); the kernel only reads the parts, which outlive the
    // call; a zeroed `msghdr` has no address and no control data.
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = parts.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = parts.len() as _;
        libc::sendmsg(
            stream.as_raw_fd(),
            &message,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent >= 0 {
        return std::task::Poll::Ready(Ok(sent as usize));
    }
    let error = std::io::Error::last_os_error();
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {
            futures_lite::AsyncWrite::poll_write(std::pin::Pin::new(stream), cx, first)
        }
        _ => std::task::Poll::Ready(Err(error)),
    }
}
