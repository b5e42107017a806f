//! What a client can hold on a listener, whether or not it ever
//! authenticates: connections (a cap for the whole listener and one per
//! source address, over which a connection is closed at once, before any
//! TLS work), and time (a connection that moves no byte for `idle` is
//! closed). Deadlines inside a request (headers, body) are the protocol
//! layers' own.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most, from everyone.
    pub max_connections: usize,
    /// Open connections at most from one source address.
    pub max_per_address: usize,
    /// A connection that sends and receives nothing for this long closes.
    pub idle: Duration,
}

/// Counts a listener's open connections.
#[derive(Debug)]
pub struct ConnLimiter {
    limits: ConnLimits,
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

impl ConnLimiter {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// A place for a new connection from `ip`, or None when either cap is
    /// reached (the caller closes the connection at once).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let mut by = self.by_address.lock();
        let here = by.get(&ip).copied().unwrap_or(0);
        if here >= self.limits.max_per_address
            || self.open.load(Ordering::Relaxed) >= self.limits.max_connections
        {
            drop(by);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        by.insert(ip, here + 1);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused so far because a cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One admitted connection; its place is given back when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut by = self.limiter.by_address.lock();
        if let Some(n) = by.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.ip);
            }
        }
        self.limiter.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved a byte, and whether a request on it is
/// still being worked on (a long admin command is not idleness).
#[derive(Debug, Clone)]
pub struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
    working: Arc<AtomicUsize>,
}

/// A request in progress on a connection; see [`Activity::working`].
pub struct Working(Activity);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.touch();
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            working: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks a request in progress until the guard is dropped.
    pub fn working(&self) -> Working {
        self.working.fetch_add(1, Ordering::Relaxed);
        Working(self.clone())
    }

    fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once nothing has moved for `idle` and no request is in
    /// progress.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= idle && self.working.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(quiet).max(Duration::from_millis(100))).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream that records its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's open-file limit to its hard limit (as far as the
/// system allows) and returns the soft limit in force: every connection is
/// a file descriptor, and Debian's default soft limit is 1024.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if setrlimit(Resource::Nofile, l).is_err() {
            l = getrlimit(Resource::Nofile);
        }
    }
    l.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all() {
        let l = ConnLimiter::new(ConnLimits {
            max_connections: 3,
            max_per_address: 2,
            idle: Duration::from_secs(60),
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "per address");
        let _b1 = l.admit(b).unwrap();
        assert!(l.admit(b).is_none(), "in all");
        assert_eq!((l.open(), l.refused()), (3, 2));
        drop(a1);
        assert!(l.admit(b).is_some(), "a place given back is free again");
        assert_eq!(l.by_address.lock().get(&a), Some(&1));
    }

    #[tokio::test]
    async fn activity_ends_only_after_a_quiet_spell_with_no_work() {
        let a = Activity::new();
        a.touch();
        let t = Instant::now();
        a.idle_for(Duration::from_millis(30)).await;
        assert!(t.elapsed() >= Duration::from_millis(29));
        // A request in progress keeps the connection, however quiet.
        let w = a.working();
        let idle = a.idle_for(Duration::from_millis(1));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut idle)
                .await
                .is_err(),
            "not idle while a request is worked on"
        );
        drop(w);
        idle.await;
    }
}
