//! What a connection may cost before it sends a request: every accepted TCP connection passes
//! through [`Guard`] (below TLS, so both listeners, with or without TLS, are held to the same
//! rules). A connection is in one of three phases:
//!
//! - **idle** (just accepted, or its last response was given): closed when no byte arrives
//!   within `idle_timeout`;
//! - **heading** (bytes arrived: a TLS handshake, request headers, HTTP/2 frames): closed unless a
//!   request is complete within `header_timeout` of the first byte, however slowly it drips;
//! - **busy** (a request is being handled): no deadline here; the handler bounds its body read.
//!
//! At most `max_connections` are open. At the cap a new connection closes the oldest one that has
//! no request in progress (an idle or dribbling one costs its owner nothing to re-open, and an
//! honest request must still get in); when every connection is busy the new one is refused.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::log_limit::LogLimiter;

/// Per-connection limits of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    /// The configuration's defaults.
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: super::config::DEFAULT_MAX_CONNECTIONS,
            header_timeout: super::config::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: super::config::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The open connections of one listener, oldest first.
struct Registry {
    limits: ConnLimits,
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    log: Arc<LogLimiter>,
}

/// One connection's phase, shared by its stream (which enforces the deadline) and its service
/// (which sees requests start and end).
struct Conn {
    state: Mutex<State>,
}

struct State {
    /// Requests in progress (HTTP/2 may have several).
    busy: usize,
    /// When the connection last became idle.
    idle_since: Instant,
    /// First byte received since then.
    first_byte: Option<Instant>,
    /// Set when the connection is closed to make room for a new one.
    evicted: bool,
    waker: Option<Waker>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, &'static str)> {
        if self.busy > 0 {
            return None;
        }
        Some(match self.first_byte {
            Some(t) => (
                t + limits.header_timeout,
                "no complete request within header_timeout",
            ),
            None => (
                self.idle_since + limits.idle_timeout,
                "idle for idle_timeout",
            ),
        })
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Registry {
    /// A place for a new connection, making room at the cap by closing the oldest connection
    /// without a request in progress.
    fn admit(&self) -> io::Result<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.limits.max_connections {
            let victim = conns.values().find(|c| {
                let s = c.lock();
                s.busy == 0 && !s.evicted
            });
            let Some(victim) = victim else {
                return Err(io::Error::other(
                    "listen.max_connections reached and every connection has a request in progress",
                ));
            };
            let mut s = victim.lock();
            s.evicted = true;
            s.wake();
            drop(s);
            if let Some(held_back) = self.log.admit("connection cap") {
                tracing::warn!(
                    max_connections = self.limits.max_connections,
                    held_back,
                    "listen.max_connections reached: closing the oldest connection without a request in progress"
                );
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            state: Mutex::new(State {
                busy: 0,
                idle_since: Instant::now(),
                first_byte: None,
                evicted: false,
                waker: None,
            }),
        });
        conns.insert(id, conn.clone());
        Ok((id, conn))
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// The acceptor that puts every connection under the limits (see the module doc).
#[derive(Clone)]
pub struct Guard {
    registry: Arc<Registry>,
}

impl Guard {
    pub fn new(limits: ConnLimits, log: Arc<LogLimiter>) -> Guard {
        Guard {
            registry: Arc::new(Registry {
                limits,
                next_id: AtomicU64::new(0),
                conns: Mutex::new(BTreeMap::new()),
                log,
            }),
        }
    }
}

impl<S> Accept<TcpStream, S> for Guard {
    type Stream = Guarded<TcpStream>;
    type Service = Tracked<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.registry.admit().map(|(id, conn)| {
            let stream = Guarded {
                io: stream,
                conn: conn.clone(),
                registry: self.registry.clone(),
                id,
                timer: Box::pin(tokio::time::sleep_until(Instant::now())),
                timer_at: None,
            };
            (
                stream,
                Tracked {
                    inner: service,
                    conn,
                },
            )
        }))
    }
}

/// A connection's stream: fails with `TimedOut` once its phase's deadline passed (or it was
/// evicted), which makes hyper (or the TLS handshake) close it.
pub struct Guarded<I> {
    io: I,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    id: u64,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
}

impl<I> Drop for Guarded<I> {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl<I> Guarded<I> {
    /// An error when the connection must close now; otherwise `Ok`, and when `waiting` the timer
    /// is armed (and the task's waker kept) so that the deadline wakes the connection.
    fn check(&mut self, cx: &mut Context<'_>, waiting: bool) -> io::Result<()> {
        let deadline = {
            let mut s = self.conn.lock();
            if s.evicted {
                return Err(io::Error::other(
                    "closed to make room under listen.max_connections",
                ));
            }
            if waiting && !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            s.deadline(&self.registry.limits)
        };
        let Some((at, why)) = deadline else {
            return Ok(());
        };
        if Instant::now() >= at {
            return Err(io::Error::new(io::ErrorKind::TimedOut, why));
        }
        if waiting {
            if self.timer_at != Some(at) {
                self.timer.as_mut().reset(at);
                self.timer_at = Some(at);
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
        }
        Ok(())
    }

    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.check(cx, true) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx, false)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.pending(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut s = this.conn.lock();
                    if s.busy == 0 && s.first_byte.is_none() {
                        s.first_byte = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx, false)?;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx, false)?;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection's service: marks the connection busy from a request's start until its response.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

/// Held while a request is handled; the connection becomes idle when the last one ends.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>) -> Busy {
        let mut s = conn.lock();
        s.busy += 1;
        s.first_byte = None;
        drop(s);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.busy -= 1;
        if s.busy == 0 {
            s.idle_since = Instant::now();
            s.first_byte = None;
            // The stream may be waiting without a timer (busy has none): let it arm the idle one.
            s.wake();
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> tower_service::Service<R> for Tracked<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let busy = Busy::start(self.conn.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let r = response.await;
            drop(busy);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_limit::LOG_EVERY;

    fn guard(max: usize) -> Guard {
        Guard::new(
            ConnLimits {
                max_connections: max,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            },
            Arc::new(LogLimiter::new(LOG_EVERY)),
        )
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let g = guard(2);
        let (_a, a) = g.registry.admit().unwrap();
        let (_b, b) = g.registry.admit().unwrap();
        let (_c, c) = g.registry.admit().unwrap();
        assert!(a.lock().evicted, "the oldest idle one is closed");
        assert!(!b.lock().evicted && !c.lock().evicted);
    }

    #[test]
    fn busy_connections_are_kept_and_a_new_one_is_refused_when_all_are_busy() {
        let g = guard(2);
        let (_, a) = g.registry.admit().unwrap();
        let (_, b) = g.registry.admit().unwrap();
        let busy_a = Busy::start(a.clone());
        let (_, _c) = g.registry.admit().unwrap();
        assert!(!a.lock().evicted, "a request in progress is never cut");
        assert!(b.lock().evicted);
        g.registry.remove(1);
        let _busy_c = Busy::start(_c.clone());
        assert!(g.registry.admit().is_err(), "every connection is busy");
        drop(busy_a);
        assert!(
            g.registry.admit().is_ok(),
            "a finished request makes its connection evictable"
        );
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = ConnLimits {
            max_connections: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        let t = Instant::now();
        let mut s = State {
            busy: 0,
            idle_since: t,
            first_byte: None,
            evicted: false,
            waker: None,
        };
        assert_eq!(s.deadline(&limits).unwrap().0, t + limits.idle_timeout);
        s.first_byte = Some(t + Duration::from_secs(1));
        assert_eq!(s.deadline(&limits).unwrap().0, t + Duration::from_secs(11));
        s.busy = 1;
        assert!(s.deadline(&limits).is_none());
    }
}
