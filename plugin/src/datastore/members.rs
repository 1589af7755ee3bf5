//! Reaching the etcd members within one request's deadline.
//!
//! Every member gets a client of its own, so the plugin decides where each
//! call goes (etcd-client's balanced channel picks blindly, and may pick
//! the member that just timed out). Within one request:
//! - a member that answered is preferred;
//! - a member that timed out or refused is not tried again while another
//!   is untried; when all have failed, they are all tried again after a
//!   short backoff;
//! - every call is bounded by `timeout_ms` and by what is left of
//!   `deadline_ms`, connects by the shorter `connect_timeout_ms`, so a
//!   frozen or blackholed member costs one timeout, not a stall;
//! - when every member refuses connections round after round, the request
//!   gives up early with a clear error instead of waiting out the deadline.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, KvClient};

use super::{describe, is_compacted, tls_options, DatastoreError, Result};
use crate::config::EtcdConfig;

/// Responses as large as etcd sends (its gRPC limit is 2 GiB; a range of
/// 12,000 pools is ~7.4 MiB, past tonic's default 4 MiB).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// Rounds of nothing but refused connections before giving up early.
const REFUSED_ROUNDS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Untried,
    Answered,
    Failed,
}

struct State {
    health: Vec<Health>,
    /// The last failure per member, for the error message.
    last_error: Vec<Option<String>>,
    /// Whether every failure of the current round was a refused connect.
    round_all_refused: bool,
    refused_rounds: u32,
    round: u32,
}

pub(super) struct Members {
    urls: Vec<String>,
    clients: Vec<KvClient>,
    call_timeout: Duration,
    deadline_ms: u64,
    deadline: Instant,
    state: Mutex<State>,
}

/// How one attempt ended, when it did not succeed.
pub(super) enum Failure {
    /// The member failed or did not answer in time: try again (elsewhere).
    Retry,
    Fatal(DatastoreError),
}

impl Members {
    /// Builds one client per member. Nothing is contacted yet; the
    /// request's deadline starts now.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Members> {
        let mut options = ConnectOptions::new()
            .with_timeout(Duration::from_millis(cfg.timeout_ms))
            .with_connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
        if let Some(tls) = tls_options(cfg)? {
            options = options.with_tls(tls);
        }
        let mut clients = Vec::with_capacity(cfg.endpoints.len());
        for url in &cfg.endpoints {
            let client = Client::connect([url.as_str()], Some(options.clone()))
                .await
                .map_err(|e| DatastoreError::Setup(format!("{url}: {}", describe(&e))))?;
            clients.push(
                client
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES),
            );
        }
        let n = clients.len();
        Ok(Members {
            urls: cfg.endpoints.clone(),
            clients,
            call_timeout: Duration::from_millis(cfg.timeout_ms),
            deadline_ms: cfg.deadline_ms,
            deadline: Instant::now() + Duration::from_millis(cfg.deadline_ms),
            state: Mutex::new(State {
                health: vec![Health::Untried; n],
                last_error: vec![None; n],
                round_all_refused: true,
                refused_rounds: 0,
                round: 0,
            }),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The member for the next attempt: one that answered, else an untried
    /// one; after a round in which all failed, a backoff and a new round.
    async fn next_member(&self) -> Result<usize> {
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.unreachable(&format!(
                    "no answer within the request deadline of {} ms",
                    self.deadline_ms
                )));
            }
            let pause = {
                let mut st = self.state();
                let pick = st
                    .health
                    .iter()
                    .position(|h| *h == Health::Answered)
                    .or_else(|| st.health.iter().position(|h| *h == Health::Untried));
                if let Some(i) = pick {
                    return Ok(i);
                }
                // Every member failed in this round.
                if st.round_all_refused {
                    st.refused_rounds += 1;
                } else {
                    st.refused_rounds = 0;
                }
                if st.refused_rounds >= REFUSED_ROUNDS {
                    drop(st);
                    return Err(self.unreachable("every member refused the connection"));
                }
                st.round += 1;
                st.round_all_refused = true;
                st.health.iter_mut().for_each(|h| *h = Health::Untried);
                let ms = (25u64 << st.round.min(4)) + fastrand::u64(0..20);
                Duration::from_millis(ms).min(remaining)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt of `op` on the member `next_member` picks, bounded by
    /// the call timeout and the deadline; the member's health is updated.
    pub async fn attempt<T, F, Fut>(&self, op: &F) -> std::result::Result<T, Failure>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let i = self.next_member().await.map_err(Failure::Fatal)?;
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let limit = self.call_timeout.min(remaining);
        let outcome = tokio::time::timeout(limit, op(self.clients[i].clone())).await;
        let mut st = self.state();
        match outcome {
            Ok(Ok(v)) => {
                st.health[i] = Health::Answered;
                Ok(v)
            }
            Ok(Err(e)) if is_compacted(&e) => Err(Failure::Fatal(DatastoreError::Compacted)),
            Ok(Err(e)) if is_retryable(&e) => {
                let text = describe(&e);
                tracing::debug!(member = %self.urls[i], error = %text, "etcd call failed");
                st.round_all_refused &= is_refused(&text);
                st.health[i] = Health::Failed;
                st.last_error[i] = Some(text);
                Err(Failure::Retry)
            }
            Ok(Err(e)) => Err(Failure::Fatal(DatastoreError::Request(describe(&e)))),
            Err(_) => {
                tracing::debug!(member = %self.urls[i], "etcd call timed out");
                st.round_all_refused = false;
                st.health[i] = Health::Failed;
                st.last_error[i] = Some(format!("no answer within {} ms", limit.as_millis()));
                Err(Failure::Retry)
            }
        }
    }

    /// Runs `op` until it succeeds, fails for good, or time runs out.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        loop {
            match self.attempt(&op).await {
                Ok(v) => return Ok(v),
                Err(Failure::Retry) => continue,
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    fn unreachable(&self, why: &str) -> DatastoreError {
        let st = self.state();
        let details: Vec<String> = self
            .urls
            .iter()
            .zip(&st.last_error)
            .filter_map(|(u, e)| e.as_ref().map(|e| format!("{u}: {e}")))
            .collect();
        let detail = if details.is_empty() {
            why.to_string()
        } else {
            format!("{why} ({})", details.join("; "))
        };
        DatastoreError::Unreachable {
            endpoints: self.urls.join(", "),
            detail,
        }
    }
}

/// Errors after which another attempt (on another member) may succeed.
fn is_retryable(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    // gRPC codes (tonic's `Code`, numbered as in the gRPC spec): an
    // unreachable or leaderless member answers one of these.
    // A TLS handshake the server rejects surfaces as CANCELLED.
    const CANCELLED: i32 = 1;
    const UNKNOWN: i32 = 2;
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    match err {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            UNAVAILABLE | DEADLINE_EXCEEDED | UNKNOWN | CANCELLED
        ),
        _ => false,
    }
}

/// A member that is down (nothing listens), as opposed to one that is
/// busy electing a leader: only the former makes a request give up early.
fn is_refused(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    // tonic reports a refused connect as a bare "transport error".
    t.contains("connection refused")
        || t.contains("tcp connect error")
        || t.contains("transport error")
}
