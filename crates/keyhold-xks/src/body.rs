//! Reading a request body within bounds, before anyone is authenticated
//! (SigV4 signs the body, so it must be read first).
//!
//! - **Deadline**: the whole body must arrive within `deadline`, however
//!   slowly its bytes trickle in.
//! - **Memory**: each request may hold its first `free_bytes` (every XKS
//!   request of ordinary size fits); bytes beyond that come out of one pool
//!   shared by all requests. When it is empty a large body is refused
//!   (ThrottlingException) instead of growing memory, while requests of
//!   ordinary size are never held up by others.
//! - **Oversized bodies** are read and thrown away (never kept) up to
//!   `drain_limit` bytes, so that a client that sends its whole body before
//!   reading the answer (Python's http.client, an HTTP/2 stream) sees the
//!   413 instead of a broken connection; past that the connection closes.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The bounds of one request body.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body accepted.
    pub max_bytes: usize,
    /// What each request may hold without drawing on the pool.
    pub free_bytes: usize,
    /// Bytes beyond `free_bytes`, shared by every request in flight.
    pub pool: Arc<BytePool>,
    /// Oversized bodies are read and discarded up to this size.
    pub drain_limit: u64,
    /// The whole body must arrive within this.
    pub deadline: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            free_bytes: 16 * 1024,
            pool: Arc::new(BytePool::new(8 << 20)),
            drain_limit: 64 << 20,
            deadline: Duration::from_secs(10),
        }
    }
}

/// Why a body was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than `max_bytes`. `drained`: all of it was read (the
    /// connection can carry on).
    TooLarge { drained: bool },
    /// The pool had no room for its bytes beyond `free_bytes`.
    Busy { drained: bool },
    /// It did not arrive within the deadline.
    Timeout,
    /// The connection broke, or sent something that is not a body.
    Broken,
}

impl BodyError {
    /// Whether the rest of the body is still on the connection (HTTP/1.1
    /// must then close it after the answer).
    pub fn unread(self) -> bool {
        match self {
            BodyError::TooLarge { drained } | BodyError::Busy { drained } => !drained,
            BodyError::Timeout | BodyError::Broken => true,
        }
    }
}

/// A count of bytes that requests share.
#[derive(Debug)]
pub struct BytePool {
    capacity: usize,
    used: AtomicUsize,
}

impl BytePool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes currently taken.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.capacity)
            })
            .is_ok()
    }
}

/// Bytes a request took from the pool; given back when dropped (once the
/// request is answered).
#[derive(Debug)]
pub struct PoolShare {
    pool: Arc<BytePool>,
    bytes: usize,
}

impl PoolShare {
    fn none(pool: &Arc<BytePool>) -> Self {
        Self {
            pool: pool.clone(),
            bytes: 0,
        }
    }

    /// Grows the share to `total` bytes; false when the pool has no room.
    fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        if self.pool.try_take(total - self.bytes) {
            self.bytes = total;
            true
        } else {
            false
        }
    }

    fn release(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for PoolShare {
    fn drop(&mut self) {
        self.release();
    }
}

/// Reads `body` within `limits`. `announced` is its Content-Length, if any.
pub async fn read<B>(
    body: B,
    announced: Option<u64>,
    limits: &BodyLimits,
) -> Result<(Bytes, PoolShare), BodyError>
where
    B: Body<Data = Bytes>,
{
    match tokio::time::timeout(limits.deadline, read_within(body, announced, limits)).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::Timeout),
    }
}

async fn read_within<B>(
    body: B,
    announced: Option<u64>,
    limits: &BodyLimits,
) -> Result<(Bytes, PoolShare), BodyError>
where
    B: Body<Data = Bytes>,
{
    if announced.is_some_and(|n| n > limits.drain_limit) {
        return Err(BodyError::TooLarge { drained: false });
    }
    let mut refused = announced
        .filter(|n| *n > limits.max_bytes as u64)
        .map(|_| BodyError::TooLarge { drained: true });
    let mut share = PoolShare::none(&limits.pool);
    let first = announced.map_or(0, |n| n as usize).min(limits.free_bytes);
    let mut buf = BytesMut::with_capacity(if refused.is_some() { 0 } else { first });
    let mut total: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(BodyError::Broken);
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len() as u64;
        if total > limits.drain_limit {
            return Err(match refused {
                Some(BodyError::Busy { .. }) => BodyError::Busy { drained: false },
                _ => BodyError::TooLarge { drained: false },
            });
        }
        if refused.is_some() {
            continue; // read and thrown away
        }
        if total > limits.max_bytes as u64 {
            refused = Some(BodyError::TooLarge { drained: true });
        } else if !share.grow_to((total as usize).saturating_sub(limits.free_bytes)) {
            refused = Some(BodyError::Busy { drained: true });
        } else {
            buf.extend_from_slice(&data);
            continue;
        }
        buf = BytesMut::new();
        share.release();
    }
    match refused {
        Some(e) => Err(e),
        None => Ok((buf.freeze(), share)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_core::Stream;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

    fn limits(pool: usize) -> BodyLimits {
        BodyLimits {
            max_bytes: 100,
            free_bytes: 10,
            pool: Arc::new(BytePool::new(pool)),
            drain_limit: 1000,
            deadline: Duration::from_secs(30),
        }
    }

    /// `n` chunks of `size` bytes, then the end.
    struct Chunks(usize, usize);

    impl Stream for Chunks {
        type Item = Chunk;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Chunk>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.1])))))
        }
    }

    /// A body whose next bytes never come.
    struct Stalled;

    impl Stream for Stalled {
        type Item = Chunk;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Chunk>> {
            Poll::Pending
        }
    }

    fn chunks(n: usize, size: usize) -> StreamBody<Chunks> {
        StreamBody::new(Chunks(n, size))
    }

    #[tokio::test]
    async fn within_limits_and_pool_given_back() {
        let l = limits(50);
        let (b, share) = read(chunks(6, 10), None, &l).await.unwrap();
        assert_eq!(b.len(), 60);
        assert_eq!(l.pool.used(), 50, "beyond the free 10 bytes");
        drop(share);
        assert_eq!(l.pool.used(), 0);
        let (b, _s) = read(Full::new(Bytes::from_static(b"small")), Some(5), &l)
            .await
            .unwrap();
        assert_eq!(&b[..], b"small");
        assert_eq!(l.pool.used(), 0, "ordinary bodies never use the pool");
    }

    #[tokio::test]
    async fn oversized_bodies_are_drained_or_cut_off() {
        let l = limits(1000);
        assert_eq!(
            read(chunks(20, 10), None, &l).await.unwrap_err(),
            BodyError::TooLarge { drained: true }
        );
        assert_eq!(
            read(chunks(20, 10), Some(200), &l).await.unwrap_err(),
            BodyError::TooLarge { drained: true }
        );
        assert_eq!(
            read(chunks(200, 10), None, &l).await.unwrap_err(),
            BodyError::TooLarge { drained: false }
        );
        assert_eq!(
            read(chunks(1, 1), Some(5000), &l).await.unwrap_err(),
            BodyError::TooLarge { drained: false },
            "announced beyond the drain limit: not read at all"
        );
        assert_eq!(l.pool.used(), 0);
    }

    #[tokio::test]
    async fn an_empty_pool_refuses_large_bodies_only() {
        let l = limits(30);
        let (_held, share) = read(chunks(4, 10), None, &l).await.unwrap();
        assert_eq!(l.pool.used(), 30);
        assert_eq!(
            read(chunks(5, 10), None, &l).await.unwrap_err(),
            BodyError::Busy { drained: true }
        );
        let (b, _) = read(chunks(1, 10), None, &l).await.unwrap();
        assert_eq!(b.len(), 10, "within the free bytes: served");
        drop(share);
        let (b, _) = read(chunks(4, 10), None, &l).await.unwrap();
        assert_eq!(b.len(), 40, "room again once the first is answered");
        assert_eq!(l.pool.used(), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let mut l = limits(100);
        // The stalled body never answers: only the deadline ends the read.
        l.deadline = Duration::from_millis(20);
        assert_eq!(
            read(StreamBody::new(Stalled), None, &l).await.unwrap_err(),
            BodyError::Timeout
        );
        assert!(read(chunks(0, 0), None, &l).await.is_ok());
    }
}
