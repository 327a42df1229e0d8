//! Reading a notification body only once the headers allowed it, within bounds: at most
//! `max_body_bytes`, within `body_timeout`, and with all bodies in flight together holding at most
//! `max_inflight_bytes` (a byte budget shared by every connection). The handler checks the
//! `Webhook-AuthID` and the declared `Content-Length` before calling [`read`], so an
//! unauthenticated or oversized POST costs no body byte (and gets no `100 Continue`).

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
    async fn a_stalled_body_times_out() {
        let i = Intake::new(100, 1000, Duration::from_millis(20));
        let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        assert!(matches!(
            i.read(Some(10), Body::from_stream(stream)).await,
            Err(IntakeError::Timeout)
        ));
    }
}
