//! Adapter from the runtime's futures-style streams to hyper's IO traits.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use shards::runtime::net::{self, TcpStream};

/// The stream, and when bytes last moved on it (either way): the
/// connection's idle watchdog reads it.
pub struct HyperIo(
    pub TcpStream,
    pub std::rc::Rc<std::cell::Cell<std::time::Instant>>,
);

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the slice is zeroed before it is handed out as initialised
        // bytes, and `advance` covers only bytes the read wrote. (All of the
        // spare buffer, not a piece of it: a request line longer than the
        // head limit is told apart (414, not 431) only when one read can
        // bring it whole.)
        let uninit = unsafe { buf.as_mut() };
        for b in uninit.iter_mut() {
            b.write(0);
        }
        let slice = unsafe {
            std::slice::from_raw_parts_mut(uninit.as_mut_ptr().cast::<u8>(), uninit.len())
        };
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, slice))?;
        if n > 0 {
            self.1.set(std::time::Instant::now());
        }
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.0).poll_write(cx, buf))?;
        if n > 0 {
            self.1.set(std::time::Instant::now());
        }
        Poll::Ready(Ok(n))
    }

    /// Vectored: hyper then queues a response's body parts (shared `Bytes`
    /// from the caches) behind its head and writes them in one `sendmsg`,
    /// instead of copying them into its own buffer.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        parts: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(net::poll_write_vectored(&mut self.0, cx, parts))?;
        if n > 0 {
            self.1.set(std::time::Instant::now());
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
