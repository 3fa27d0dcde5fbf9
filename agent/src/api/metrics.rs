//! `weir_api_request_duration_seconds{method}`: how long the agent's
//! unix-socket API takes to answer, per gRPC method, measured by a tower
//! layer around the whole server. For streaming methods (`Monitor.Events`)
//! it is the time to open the stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, Registry};

use crate::registry::registered;

/// The API's package: paths outside it are counted as `other`, so a
/// client cannot create series at will.
const PACKAGE: &str = "/weir.agent.v1.";

/// The histogram, registered once; cloned into every connection's service.
#[derive(Clone)]
pub struct ApiMetricsLayer {
    durations: HistogramVec,
}

impl ApiMetricsLayer {
    pub fn new(registry: &Registry) -> Self {
        let opts = HistogramOpts::new(
            "weir_api_request_duration_seconds",
            "Time the agent's local API took to answer, by gRPC method",
        )
        .buckets(exponential_buckets(0.0001, 2.0, 16).expect("valid buckets"));
        let durations = registered(registry, HistogramVec::new(opts, &["method"]));
        ApiMetricsLayer { durations }
    }

    pub fn histogram(&self) -> &HistogramVec {
        &self.durations
    }
}

/// `/weir.agent.v1.Policy/GetPolicy` → `weir.agent.v1.Policy/GetPolicy`.
pub fn method_label(path: &str) -> &str {
    if path.starts_with(PACKAGE) && path[1..].contains('/') {
        &path[1..]
    } else {
        "other"
    }
}

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetrics<S>;

    fn layer(&self, inner: S) -> ApiMetrics<S> {
        ApiMetrics {
            inner,
            durations: self.durations.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApiMetrics<S> {
    inner: S,
    durations: HistogramVec,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for ApiMetrics<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let histogram = self
            .durations
            .with_label_values(&[method_label(request.uri().path())]);
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            histogram.observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests;
