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
