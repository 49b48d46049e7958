//! Adapter from the runtime's futures-style streams to hyper's IO traits.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// The stream, and when bytes last moved on it (either way): the
/// connection's idle watchdog reads it.
pub struct HyperIo<S>(pub S, pub std::rc::Rc<std::cell::Cell<std::time::Instant>>);

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the slice is zeroed before it is handed out as initialised
        // bytes, and `advance` covers only bytes the read wrote.
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

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
