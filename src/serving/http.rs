//! The REST API on a socket (hyper, HTTP/1.1): body size and time limits,
//! gzip bodies, a bound on the bodies in flight together, CORS, the
//! Prometheus page, graceful shutdown. The API itself is
//! `rest::handle`, run on the blocking pool so that a long model call
//! never stalls the connections.

use super::metrics;
use super::rest::{self, Reply};
use super::status::{Code, Status};
use super::{App, Shutdown};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// TF Serving's CORS headers (`AddCORSHeaders`).
const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
];

fn respond(r: &Reply, cors: bool) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(r.status)
        .header("Content-Type", r.content_type);
    if cors {
        for (k, v) in CORS {
            b = b.header(k, v);
        }
    }
    b.body(Full::new(Bytes::from(r.body.clone())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let t0 = Instant::now();
    let cors = app.options.rest_api_enable_cors_support;
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    // A browser's preflight: answered before the API, as TF Serving does.
    let origin = req.headers().get("Origin").and_then(|o| o.to_str().ok()).unwrap_or("");
    if cors && method == "OPTIONS" && (origin.starts_with("http://") || origin.starts_with("https://")) {
        let mut b = Response::builder().status(200);
        for (k, v) in CORS {
            b = b.header(k, v);
        }
        let r = b
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
        return Ok(r);
    }
    if let Some(m) = &app.monitoring {
        if m.prometheus_enable && method == "GET" && path == m.prometheus_path {
            let r = Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: metrics::global().prometheus(),
                model: String::new(),
                api: "metrics",
                code: "OK",
            };
            return Ok(respond(&r, cors));
        }
    }
    let timeout = Duration::from_millis(app.options.rest_api_timeout_in_ms.max(1));
    let max = app.options.max_request_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let gzip = match content_encoding(&req) {
        Ok(g) => g,
        Err(r) => return Ok(finish(&app, t0, r, cors)),
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(finish(&app, t0, too_big(max), cors));
    }
    // Bodies in flight are bounded in bytes (what a body may still grow
    // to once read, or inflated): a request waits for its share, within
    // its deadline.
    let weight = match (gzip, req.body().size_hint().exact()) {
        (false, Some(n)) => usize::try_from(n).unwrap_or(max).min(max),
        _ => max,
    };
    let permit = match tokio::time::timeout(timeout, app.body_permits(weight)).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            let s = Status::new(Code::Unavailable, "the server is shutting down");
            return Ok(finish(&app, t0, rest::error(&s, "", "unknown"), cors));
        }
        Err(_) => {
            let s = Status::new(
                Code::DeadlineExceeded,
                format!(
                    "Timed out after {} ms waiting for the memory to read the request body (other large \
                     requests in flight)",
                    timeout.as_millis()
                ),
            );
            return Ok(finish(&app, t0, rest::error(&s, "", "unknown"), cors));
        }
    };
    let left = timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
    let reply = match tokio::time::timeout(left, Limited::new(req.into_body(), max).collect()).await {
        Err(_) => rest::error(
            &Status::new(
                Code::DeadlineExceeded,
                format!("Timed out after {} ms reading the request body", timeout.as_millis()),
            ),
            "",
            "unknown",
        ),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_big(max)
            } else {
                rest::error(
                    &Status::invalid(format!("Error reading the request body: {e}")),
                    "",
                    "unknown",
                )
            }
        }
        Ok(Ok(body)) => {
            let body = body.to_bytes();
            let a = Arc::clone(&app);
            let (m, p) = (method.clone(), path.clone());
            let work = tokio::task::spawn_blocking(move || {
                // Held until the parsed request is dropped.
                let _permit = permit;
                if gzip {
                    match inflate(&body, max) {
                        Ok(plain) => rest::handle(&a.manager, &m, &p, &plain),
                        Err(r) => r,
                    }
                } else {
                    rest::handle(&a.manager, &m, &p, &body)
                }
            });
            let left = timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
            match tokio::time::timeout(left, work).await {
                Err(_) => rest::error(
                    &Status::new(
                        Code::DeadlineExceeded,
                        format!(
                            "Deadline exceeded: the request took longer than {} ms",
                            timeout.as_millis()
                        ),
                    ),
                    "",
                    "unknown",
                ),
                Ok(Err(e)) => rest::error(
                    &Status::new(Code::Internal, format!("the request failed: {e}")),
                    "",
                    "unknown",
                ),
                Ok(Ok(r)) => r,
            }
        }
    };
    Ok(finish(&app, t0, reply, cors))
}

/// Records the request's metrics and writes the reply.
fn finish(app: &App, t0: Instant, reply: Reply, cors: bool) -> Response<Full<Bytes>> {
    metrics::global().request(
        app.metrics_model(&reply.model),
        reply.api,
        "REST",
        reply.code,
        t0.elapsed().as_secs_f64() * 1e6,
    );
    respond(&reply, cors)
}

/// 413 with TF Serving's error body.
fn too_big(max: usize) -> Reply {
    let mut r = rest::error(
        &Status::new(
            Code::ResourceExhausted,
            format!("Request body is larger than the limit of {max} bytes (--rest_api_max_request_bytes)"),
        ),
        "",
        "unknown",
    );
    r.status = 413;
    r
}

/// Whether the body is gzip-compressed (`Content-Encoding: gzip`); other
/// encodings than `identity` are refused with 415.
fn content_encoding(req: &Request<Incoming>) -> Result<bool, Reply> {
    let mut gzip = false;
    for v in req.headers().get_all(hyper::header::CONTENT_ENCODING) {
        for e in v.to_str().unwrap_or("?").split(',').map(str::trim) {
            let is_gzip = e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip");
            if is_gzip && !gzip {
                gzip = true;
            } else if !(e.is_empty() || e.eq_ignore_ascii_case("identity")) {
                let mut r = rest::error(
                    &Status::invalid(format!(
                        "Unsupported Content-Encoding: {} (gzip, once, and identity are read)",
                        super::status::clip(e, 64)
                    )),
                    "",
                    "unknown",
                );
                r.status = 415;
                return Err(r);
            }
        }
    }
    Ok(gzip)
}

/// A gzip body inflated, at most `max` bytes of it (413 past that).
fn inflate(body: &[u8], max: usize) -> Result<Vec<u8>, Reply> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
    {
        Ok(_) if out.len() > max => Err(too_big(max)),
        Ok(_) => Ok(out),
        Err(e) => Err(rest::error(
            &Status::invalid(format!(
                "Failed to decompress the request body (Content-Encoding: gzip): {e}"
            )),
            "",
            "unknown",
        )),
    }
}

/// Serves the REST API on `listener` until `shutdown`, then lets the open
/// requests finish (up to the request timeout).
pub async fn run(listener: TcpListener, app: Arc<App>, mut shutdown: Shutdown) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let _ = stream.set_nodelay(true);
                let a = Arc::clone(&app);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(a.options.rest_api_timeout_in_ms.max(1)))
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(move |req| serve(Arc::clone(&a), req)),
                    );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    let grace = Duration::from_millis(app.options.rest_api_timeout_in_ms.max(1000));
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        log::warn!("REST: requests still open after {} ms; closing", grace.as_millis());
    }
}
