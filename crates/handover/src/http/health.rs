//! The health endpoint: `200 ok` while this process should get new work, `503 stopping` from
//! the first stop request on (the lame duck, [`crate::Builder::lame_duck`], and the drain).
//! Upgrades never fail it: the listening socket stays, and the successor serves.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::Health;

/// The path load balancers and orchestrators are usually pointed at.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";

/// Answers health probes from a [`Health`]: a tower service for one route, e.g. with axum
/// `Router::route_service(DEFAULT_HEALTH_PATH, HealthCheck::new(handover.health()))`, or
/// [`HealthCheck::response`] from a handler of one's own (hyper `service_fn`).
///
/// ```no_run
/// # fn example(handover: &handover::Handover) {
/// use handover::http::{HealthCheck, DEFAULT_HEALTH_PATH};
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hi" }))
///     .route_service(DEFAULT_HEALTH_PATH, HealthCheck::new(handover.health()));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HealthCheck {
    health: Health,
}

impl HealthCheck {
    /// A health check answering from `health`.
    pub fn new(health: Health) -> Self {
        HealthCheck { health }
    }

    /// The answer now: `200` with `ok`, or `503` with `stopping`; never cached.
    pub fn response(&self) -> Response<String> {
        let (status, body) = if self.health.is_healthy() {
            (StatusCode::OK, "ok\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
        };
        let mut r = Response::new(body.to_string());
        *r.status_mut() = status;
        let headers = r.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // A cached "ok" would keep a stopping replica in rotation.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

impl<B> tower_service::Service<Request<B>> for HealthCheck {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(self.response()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::drain::{DrainReason, Phase, ServingState};

    fn check(shared: &std::sync::Arc<ServingState>) -> (StatusCode, String) {
        let r = HealthCheck::new(Health::new(std::sync::Arc::clone(shared))).response();
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        (r.status(), r.into_body())
    }

    #[tokio::test]
    async fn ok_from_ready_through_a_handover_and_stopping_from_a_stop_on() {
        let s = Duration::from_secs(1);
        let shared = ServingState::new(s, s, s, s);
        assert_eq!(
            check(&shared).0,
            StatusCode::SERVICE_UNAVAILABLE,
            "before ready()"
        );
        shared.phase.send_replace(Phase::Serving);
        assert_eq!(check(&shared), (StatusCode::OK, "ok\n".into()));
        shared.phase.send_replace(Phase::Paused);
        assert_eq!(check(&shared).0, StatusCode::OK, "while handing over");
        shared
            .stop_accepting(DrainReason::Upgraded { new_pid: 42 })
            .await;
        assert_eq!(
            check(&shared).0,
            StatusCode::OK,
            "draining after a handover"
        );
        shared.request_stop();
        assert_eq!(
            check(&shared),
            (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into())
        );
    }
}
