//! Why a request ended at the gateway. The `respond` module turns each into the response a
//! client gets; the request context classifies it for metrics.

use crate::refusal::{Refusal, RefusalKind};
use crate::upstream::{ClientBodyFault, UpstreamError};

/// Why a request ended at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No API matches the host and path.
    #[error("no API matches the request")]
    NoRoute,
    /// A stage refused the request (auth, access rights, limits, size).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The request path cannot be normalised.
    #[error("malformed request path")]
    BadPath,
    /// The request framing broke a rule (see [`crate::framing`]).
    #[error("request rejected: {0:?}")]
    Framing(crate::framing::Rejection),
    /// The upstream could not be reached, broke the exchange or did not answer in time.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The API balances with `check_host_against_uptime_tests` and the uptime checks found
    /// every target's host down.
    #[error("all hosts are down, uptime tests are failing")]
    AllHostsDown,
    /// The client's request body failed mid-way (bad chunking, reset).
    #[error("reading the request body: {0}")]
    ClientBody(String),
    /// The client went quiet mid-body for longer than the read timeout.
    #[error("client body read timed out")]
    ClientTimeout,
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<UpstreamError> for GatewayError {
    /// A failure of the client's own body is the client's, whatever stage noticed it.
    fn from(err: UpstreamError) -> Self {
        match err {
            UpstreamError::ClientBody(ClientBodyFault::TooLarge) => {
                Self::Refused(Refusal::new(RefusalKind::BodyTooLarge))
            }
            UpstreamError::ClientBody(ClientBodyFault::Idle) => Self::ClientTimeout,
            UpstreamError::ClientBody(ClientBodyFault::Broken(e)) => Self::ClientBody(e),
            err => Self::Upstream(err),
        }
    }
}
