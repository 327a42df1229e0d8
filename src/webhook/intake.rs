//! Reading a notification body only once the headers allowed it, within bounds: at most
//! `max_body_bytes`, within `body_timeout`, and with all bodies in flight together holding at most
//! `max_inflight_bytes` (a byte budget shared by every connection). The handler checks the
//! `Webhook-AuthID` and the declared `Content-Length` before calling [`read`], so an
//! unauthenticated or oversized POST costs no body byte (and gets no `100 Continue`).
//!
//! Over HTTP/2 a refusal given before the body would end the stream with `RST_STREAM(NO_ERROR)`
//! after the answer (RFC 9113 §8.1). curl before 8.1 (Debian 12's, for one) reports that as
//! "Stream error in the HTTP/2 framing layer" instead of showing the 401, so [`Intake::discard`]
//! lets a small refused body finish first: its bytes are dropped as they come, never kept.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of body intake.
pub struct Intake {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    budget: Arc<Semaphore>,
}

/// Why a body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("body larger than webhook.max_body_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("body not received within webhook.body_timeout")]
    Timeout,
    #[error("too many bodies in flight (webhook.max_inflight_bytes); retry later")]
    Busy,
    #[error("body unreadable: {0}")]
    Broken(String),
}

impl IntakeError {
    pub fn status(&self) -> u16 {
        match self {
            IntakeError::TooLarge(_) => 413,
            IntakeError::Timeout => 408,
            IntakeError::Busy => 503,
            IntakeError::Broken(_) => 400,
        }
    }

    /// Short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            IntakeError::TooLarge(_) => "too_large",
            IntakeError::Timeout => "body_timeout",
            IntakeError::Busy => "overloaded",
            IntakeError::Broken(_) => "body_broken",
        }
    }
}

/// The most of a refused HTTP/2 body [`Intake::discard`] lets through: the stream window
/// (`server::H2_WINDOW`), what a client may send before any answer anyway.
pub const DISCARD_MAX_BYTES: u64 = 256 * 1024;
/// How long [`Intake::discard`] waits at most (or `body_timeout` if shorter): a client that sends
/// its body right after the headers, as curl does, has sent it by then.
pub const DISCARD_GRACE: Duration = Duration::from_secs(1);

/// A body read whole; its bytes stay counted in the budget until this is dropped.
pub struct Received {
    pub bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Intake {
    pub fn new(max_body_bytes: usize, max_inflight_bytes: usize, body_timeout: Duration) -> Intake {
        Intake {
            max_body_bytes,
            body_timeout,
            budget: Arc::new(Semaphore::new(
                max_inflight_bytes.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// What the headers alone decide: a declared length over the limit.
    pub fn precheck(&self, declared: Option<u64>) -> Result<(), IntakeError> {
        match declared {
            Some(n) if n > self.max_body_bytes as u64 => {
                Err(IntakeError::TooLarge(self.max_body_bytes))
            }
            _ => Ok(()),
        }
    }

    /// Reads `body` under the limits. The declared length is taken from the budget before the
    /// first byte is read (so a refusal comes at once); bytes beyond it (a chunked body) as they come.
    pub async fn read(&self, declared: Option<u64>, body: Body) -> Result<Received, IntakeError> {
        self.precheck(declared)?;
        let mut held = match declared {
            Some(0) | None => None,
            Some(n) => Some(self.take(n as usize)?),
        };
        let reserved = declared.unwrap_or(0) as usize;
        let read = async {
            let mut bytes = Vec::with_capacity(reserved);
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| IntakeError::Broken(e.to_string()))?;
                if bytes.len() + chunk.len() > self.max_body_bytes {
                    return Err(IntakeError::TooLarge(self.max_body_bytes));
                }
                let beyond = (bytes.len() + chunk.len()).saturating_sub(reserved.max(bytes.len()));
                if beyond > 0 {
                    let more = self.take(beyond)?;
                    match held.as_mut() {
                        Some(h) => h.merge(more),
                        None => held = Some(more),
                    }
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|_| IntakeError::Timeout)??;
        Ok(Received {
            bytes,
            _budget: held,
        })
    }

    /// Lets the client of a refused request finish sending its body, so that the answer ends an
    /// HTTP/2 stream the client has already closed and needs no reset. Only a body declared (or,
    /// undeclared, found) within [`DISCARD_MAX_BYTES`] is waited for, within [`DISCARD_GRACE`]
    /// (or `body_timeout`, if shorter); each frame is dropped on arrival and nothing is charged to
    /// the in-flight budget. Beyond either bound the refusal is answered at once, as before.
    pub async fn discard(&self, declared: Option<u64>, body: Body) {
        if declared.is_some_and(|n| n > DISCARD_MAX_BYTES) {
            return;
        }
        let drain = async {
            let mut seen = 0u64;
            let mut stream = body.into_data_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                seen += chunk.len() as u64;
                if seen > DISCARD_MAX_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.body_timeout.min(DISCARD_GRACE), drain).await;
    }

    fn take(&self, n: usize) -> Result<OwnedSemaphorePermit, IntakeError> {
        let n = u32::try_from(n).map_err(|_| IntakeError::Busy)?;
        self.budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| IntakeError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(max_body: usize, budget: usize) -> Intake {
        Intake::new(max_body, budget, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn reads_a_body_within_the_limits_and_gives_its_budget_back() {
        let i = intake(100, 150);
        let r = i.read(Some(80), Body::from(vec![b'x'; 80])).await.unwrap();
        assert_eq!(r.bytes.len(), 80);
        assert!(
            matches!(
                i.read(Some(80), Body::from(vec![b'x'; 80])).await,
                Err(IntakeError::Busy)
            ),
            "the first body still holds 80 of 150 bytes"
        );
        drop(r);
        assert!(i.read(Some(80), Body::from(vec![b'x'; 80])).await.is_ok());
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let i = intake(100, 1000);
        assert_eq!(i.precheck(Some(101)), Err(IntakeError::TooLarge(100)));
        assert!(matches!(
            i.read(Some(101), Body::from(vec![b'x'; 101])).await,
            Err(IntakeError::TooLarge(100))
        ));
    }

    #[tokio::test]
    async fn an_undeclared_body_is_cut_at_the_limit_and_charged_as_it_comes() {
        let i = intake(100, 1000);
        let stream = futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 40]))),
        );
        assert!(matches!(
            i.read(None, Body::from_stream(stream)).await,
            Err(IntakeError::TooLarge(100))
        ));
        let small = intake(100, 50);
        let stream = futures_util::stream::iter(
            (0..2).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 40]))),
        );
        assert!(matches!(
            small.read(None, Body::from_stream(stream)).await,
            Err(IntakeError::Busy)
        ));
    }

    #[tokio::test]
    async fn a_refused_body_is_discarded_within_its_bounds() {
        let i = intake(100, 10);
        // Larger than max_body_bytes and the budget: discarding holds neither.
        tokio::time::timeout(
            Duration::from_secs(1),
            i.discard(Some(64 * 1024), Body::from(vec![b'x'; 64 * 1024])),
        )
        .await
        .expect("a small body is discarded at once");
        assert!(i.read(Some(10), Body::from(vec![b'x'; 10])).await.is_ok());
        // A stalled body is given up after the grace, a declared large one at once.
        let stalled = Intake::new(100, 1000, Duration::from_millis(20));
        let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        tokio::time::timeout(
            Duration::from_secs(1),
            stalled.discard(Some(10), Body::from_stream(stream)),
        )
        .await
        .expect("given up after body_timeout");
        let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        tokio::time::timeout(
            Duration::from_millis(100),
            i.discard(Some(DISCARD_MAX_BYTES + 1), Body::from_stream(stream)),
        )
        .await
        .expect("a body over DISCARD_MAX_BYTES is not waited for");
        // An undeclared body is cut at DISCARD_MAX_BYTES.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 16 * 1024]))
        });
        tokio::time::timeout(
            Duration::from_secs(1),
            i.discard(None, Body::from_stream(endless)),
        )
        .await
        .expect("an endless body is cut at DISCARD_MAX_BYTES");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let i = Intake::new(100, 1000, Duration::from_millis(20));
        let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        assert!(matches!(
            i.read(Some(10), Body::from_stream(stream)).await,
            Err(IntakeError::Timeout)
        ));
    }
}
