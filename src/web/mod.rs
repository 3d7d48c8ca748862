//! The web dashboard (`web.listen`): every device with its state, freshness, counters and latest
//! values, its recent frames with why each was rejected, a rule tester, the queue and the
//! uplink, and the log, in a browser on the LAN, with no internet needed (the page, its script
//! and its style are in the binary).
//!
//! One axum server (the HTTP stack rumqttd links already) serves the page, a JSON snapshot,
//! the plots' history, the rule tester and a server-sent event stream that carries at most one
//! update a second per browser, whatever the frame rate, from the sampled [`Recent`] record.
//! It is read-only: the rule tester runs rules on a copy and writes nothing to any device.
//!
//! Access: on loopback anyone on the machine may look (as with `serial2mqtt status`), and only
//! under a local host name, so a web page elsewhere cannot reach it through DNS rebinding; on
//! any other address every request needs the token (`web.token_file`), given once in a login
//! form (then a cookie), or as `Authorization: Bearer`. Compared in constant time, never shown.

pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::WebSettings;
use crate::frames::trial::try_frame;
use crate::recent::{FrameRecord, LogLine, Recent, TICK};
use view::{Sources, State as Snapshot, TrialView};

/// How often a browser's event stream gets an update.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// Browsers (event streams) served at once; more are told to come back later.
pub const MAX_STREAMS: usize = 16;
/// Frames per device in one update (the newest), of which at most half rejected ones: enough
/// for the frames page, light enough for a phone.
const FRAMES_PER_UPDATE: usize = 20;
/// History points per series sent to a browser (the plots are a few hundred pixels wide).
const HISTORY_POINTS_SENT: usize = 720;
/// The cookie a login sets.
const COOKIE: &str = "serial2mqtt_token";

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Why the dashboard did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve the dashboard on {addr}: {reason} (check web.listen: is the port taken?)")]
pub struct WebError {
    addr: SocketAddr,
    reason: String,
}

/// The dashboard's listener, bound at start so that a taken port stops the gateway with a
/// clear message rather than a dashboard that silently is not there.
pub struct Bound {
    listener: tokio::net::TcpListener,
    settings: WebSettings,
}

/// Binds `web.listen`.
pub async fn bind(settings: &WebSettings) -> Result<Bound, WebError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| WebError {
            addr: settings.listen,
            reason: e.to_string(),
        })?;
    Ok(Bound {
        listener,
        settings: settings.clone(),
    })
}

struct App {
    sources: Sources,
    /// SHA-256 of the token: compared in constant time and of fixed length, so neither the
    /// token's bytes nor its length leak through timing; the cookie carries it in hex.
    token_digest: Option<[u8; 32]>,
    streams: AtomicUsize,
    shutdown: CancellationToken,
    /// Served over TLS: the cookie is then `Secure`.
    https: bool,
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Bound {
    /// Serves until `shutdown`: the HTTP server, and the ticker that moves the frame sampler's
    /// clock and takes the once-a-second readings (rates, the queue's depth).
    pub fn serve(
        self,
        sources: Sources,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let app = Arc::new(App {
            sources,
            token_digest: self.settings.token.as_deref().map(digest),
            streams: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
            https: self.settings.tls.is_some(),
        });
        let listen = self.settings.listen;
        let secured = if app.token_digest.is_some() {
            "token required"
        } else {
            "loopback, no token"
        };
        let scheme = if self.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!(listen = %listen, "web dashboard on {scheme}://{listen}/ ({secured})");
        let ticker = tokio::spawn(tick(Arc::clone(&app)));
        let router = router(app);
        let tls = self.settings.tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let served = axum::serve(self.listener, router)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await;
                    if let Err(e) = served {
                        warn!(listen = %listen, "web dashboard stopped: {e}");
                    }
                }
                Some(tls) => serve_tls(self.listener, router, tls, shutdown).await,
            }
            ticker.abort();
        })
    }
}

/// HTTPS: each connection's TLS handshake (certificate and key read again, as the broker's
/// listener does, so a renewed certificate needs no restart), then HTTP/1.1 on it.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: crate::config::schema::WebTls,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("web dashboard: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let config = match crate::tls::server_config(&tls.cert_file, &tls.key_file, None, false)
            {
                Ok(c) => c,
                Err(e) => {
                    warn!("web dashboard TLS: {e}");
                    return;
                }
            };
            let acceptor = rumqttc::tokio_rustls::TlsAcceptor::from(config);
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "web dashboard: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// The sampler's clock every [`TICK`], the readings every second.
async fn tick(app: Arc<App>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let per_second = (Duration::from_secs(1).as_millis() / TICK.as_millis()) as u64;
    let mut n = 0u64;
    loop {
        every.tick().await;
        app.sources.recent.advance();
        if n % per_second == 0 {
            app.sources.sample().await;
        }
        n += 1;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/login", post(login))
        .route("/api/state", get(state))
        .route("/api/history", get(history))
        .route("/api/test-rule", post(test_rule))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            guard,
        ))
        .with_state(app)
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Whether the request carries the token (bearer header or the login's cookie).
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(want) = &app.token_digest else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| digest(t.trim()));
    if bearer.is_some_and(|d| bool::from(d.ct_eq(want))) {
        return true;
    }
    let want_hex = hex::encode(want);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .any(|(_, v)| bool::from(v.as_bytes().ct_eq(want_hex.as_bytes())))
}

/// Whether the Host header names this machine (an IP address or `localhost`): without a token,
/// that is what keeps a page from another site out (DNS rebinding).
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Every request: the host check (no token) or the token (token set), then the headers that
/// keep the page to itself (no framing, no inline or foreign scripts, no referrer).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut response = if app.token_digest.is_none() && !local_host(req.headers()) {
        (
            StatusCode::FORBIDDEN,
            "open the dashboard by the machine's address (http://127.0.0.1:PORT/): without \
             web.token_file it answers no other host name",
        )
            .into_response()
    } else if matches!(req.uri().path(), "/login" | "/style.css") || authorized(&app, req.headers())
    {
        next.run(req).await
    } else if req.method() == Method::GET && req.uri().path() == "/" {
        (StatusCode::UNAUTHORIZED, Html(LOGIN_HTML)).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "the dashboard needs its token (web.token_file): log in at /, or send Authorization: Bearer TOKEN",
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Prometheus's scrape, when `metrics.listen` is this listener (the token applies here too:
/// Prometheus sends it with `authorization: {credentials_file: ...}`).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    match &app.sources.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics here: set metrics.listen to web.listen to serve them on the dashboard",
        )
            .into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// The login form: the right token sets the cookie and goes to the dashboard.
async fn login(State(app): State<Arc<App>>, Form(form): Form<Login>) -> Response {
    let Some(want) = &app.token_digest else {
        return Redirect::to("/").into_response();
    };
    if bool::from(digest(form.token.trim()).ct_eq(want)) {
        let secure = if app.https { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
            hex::encode(want)
        );
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    warn!("web dashboard: a login with a wrong token");
    // Slows guessing down (the token is long enough that guessing is hopeless anyway).
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        StatusCode::UNAUTHORIZED,
        Html(LOGIN_HTML.replace("<!--error-->", "<p class=\"error\">Wrong token.</p>")),
    )
        .into_response()
}

async fn state(State(app): State<Arc<App>>) -> Json<Snapshot> {
    Json(app.sources.state().await)
}

/// The plots' history: each numeric topic's and the queue depth's last hour.
#[derive(Serialize)]
struct History {
    uptime_s: u32,
    queue: Vec<(u32, u64)>,
    topics: Vec<Series>,
}

#[derive(Serialize)]
struct Series {
    device: String,
    topic: String,
    points: Vec<(u32, f32)>,
}

/// Every n-th point, so that at most `max` are sent (the newest always among them).
fn thin<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    let step = points.len().div_ceil(max).max(1);
    let mut out: Vec<T> = points.iter().rev().step_by(step).copied().collect();
    out.reverse();
    out
}

async fn history(State(app): State<Arc<App>>) -> Json<History> {
    let recent = &app.sources.recent;
    let topics = recent
        .devices()
        .iter()
        .flat_map(|d| {
            d.histories()
                .into_iter()
                .map(|(topic, points): (String, Vec<(u32, f32)>)| Series {
                    device: d.name.clone(),
                    topic,
                    points: thin(&points, HISTORY_POINTS_SENT),
                })
        })
        .collect();
    Json(History {
        uptime_s: recent.seconds(),
        queue: thin(&recent.queue_history(), HISTORY_POINTS_SENT),
        topics,
    })
}

#[derive(Deserialize)]
struct TestRule {
    device: String,
    frame: String,
    #[serde(default)]
    hex: bool,
}

/// The rule tester: the device's rules on a pasted frame, as `serial2mqtt test-rule` runs them.
async fn test_rule(State(app): State<Arc<App>>, Json(req): Json<TestRule>) -> Response {
    let devices = app.sources.devices.borrow().clone();
    let Some(device) = devices.iter().find(|d| d.name == req.device) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no device named `{}`", req.device),
        )
            .into_response();
    };
    let bytes = if req.hex {
        match hex::decode(req.frame.replace([' ', ':', '\n', '\r', '\t'], "")) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("not hex: {e} (write bytes as pairs of hex digits, e.g. 01 03 00 0a)"),
                )
                    .into_response()
            }
        }
    } else {
        req.frame.into_bytes()
    };
    let trial = try_frame(device, &app.sources.gateway, &bytes);
    Json(TrialView::from(trial)).into_response()
}

/// One event-stream update: the gateway now, the frames and log lines since the last update.
#[derive(Serialize)]
struct Update {
    state: Snapshot,
    frames: Vec<DeviceFrames>,
    log: Vec<LogLine>,
}

#[derive(Serialize)]
struct DeviceFrames {
    device: String,
    frames: Vec<FrameRecord>,
}

/// Where one browser's stream is: the last frame and log line it was sent.
struct Cursor {
    app: Arc<App>,
    frames: u64,
    log: u64,
    first: bool,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.app.streams.fetch_sub(1, Ordering::Relaxed);
        self.app.sources.recent.watching(false);
    }
}

/// The newest [`FRAMES_PER_UPDATE`] of `frames` (oldest first), the rejected ones first
/// among them (up to half), so that a stream of good frames never hides a bad one.
fn newest(frames: Vec<FrameRecord>) -> Vec<FrameRecord> {
    if frames.len() <= FRAMES_PER_UPDATE {
        return frames;
    }
    let (rejected, good): (Vec<_>, Vec<_>) = frames.into_iter().partition(|f| f.outcome.rejected());
    let bad_kept = rejected.len().min(FRAMES_PER_UPDATE / 2);
    let good_kept = good.len().min(FRAMES_PER_UPDATE - bad_kept);
    let mut out: Vec<FrameRecord> = rejected[rejected.len() - bad_kept..]
        .iter()
        .chain(&good[good.len() - good_kept..])
        .cloned()
        .collect();
    out.sort_by_key(|f| f.id);
    out
}

async fn update(cursor: &mut Cursor) -> Update {
    let recent: &Recent = &cursor.app.sources.recent;
    let mut newest = cursor.frames;
    let frames = recent
        .devices()
        .iter()
        .filter_map(|d| {
            let all = d.frames_since(cursor.frames);
            // Frames left out are behind the cursor too: a later update starts after them.
            newest = newest.max(all.last().map(|f| f.id).unwrap_or(0));
            let frames = self::newest(all);
            (!frames.is_empty()).then(|| DeviceFrames {
                device: d.name.clone(),
                frames,
            })
        })
        .collect();
    cursor.frames = newest;
    let log = recent.log_since(cursor.log);
    cursor.log = log.last().map(|l| l.id).unwrap_or(cursor.log);
    Update {
        state: cursor.app.sources.state().await,
        frames,
        log,
    }
}

/// The live stream: an update at once, then one every [`UPDATE_EVERY`], until the browser
/// goes or the gateway stops.
async fn events(State(app): State<Arc<App>>) -> Response {
    if app.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        app.streams.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} browsers are watching already; close one"),
        )
            .into_response();
    }
    app.sources.recent.watching(true);
    let cursor = Cursor {
        app,
        frames: 0,
        log: 0,
        first: true,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        if !cursor.first {
            let stop = cursor.app.shutdown.clone();
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(UPDATE_EVERY) => {}
            }
        }
        cursor.first = false;
        let update = update(&mut cursor).await;
        let data = serde_json::to_string(&update).unwrap_or_default();
        let event: Result<Event, Infallible> = Ok(Event::default().event("update").data(data));
        Some((event, cursor))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn only_local_host_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "192.168.1.20:8080",
        ] {
            assert!(local_host(&host(ok)), "{ok}");
        }
        for bad in ["evil.example:8080", "127.0.0.1.nip.io:8080", "pi.local"] {
            assert!(!local_host(&host(bad)), "{bad}");
        }
        assert!(!local_host(&HeaderMap::new()), "no Host header");
    }

    #[test]
    fn thinning_keeps_the_newest_point_and_at_most_max() {
        let points: Vec<u32> = (0..3600).collect();
        let t = thin(&points, 720);
        assert!(t.len() <= 720, "{}", t.len());
        assert_eq!(t.last(), Some(&3599));
        assert_eq!(thin(&points[..5], 720), vec![0, 1, 2, 3, 4]);
    }
}
