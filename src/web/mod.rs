//! The web dashboard (`web.listen`): every device with its state, freshness, counters and latest
//! values, its recent frames with why each was rejected, a rule tester, the queue and the
//! uplink, and the log, in a browser on the LAN, with no internet needed (the page, its script
//! and its style are in the binary).
//!
//! One axum router (the HTTP stack rumqttd links already) serves the page, a JSON snapshot,
//! the plots' history, the rule tester and a server-sent event stream that carries at most one
//! update a second per browser, whatever the frame rate, from the sampled [`Recent`] record.
//! It is read-only: the rule tester runs rules on a copy and writes nothing to any device. It
//! runs on [`crate::http::serve`]: connection caps in total and per peer, header and idle
//! timeouts, a clear 503 when full (`web.max_connections`, ...).
//!
//! Access: on loopback anyone on the machine may look (as with `serial2mqtt status`), and only
//! under a local host name, so a web page elsewhere cannot reach it through DNS rebinding; on
//! any other address every request needs the token (`web.token_file`), given once in a login
//! form (then a cookie), or as `Authorization: Bearer`. Compared in constant time, never shown.
//! Wrong tokens are throttled per peer address ([`crate::http::throttle`]).

pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::WebSettings;
use crate::frames::trial::try_frame;
use crate::http::auth::{self, local_host, Token};
use crate::http::throttle::Throttle;
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

/// The listener's name in log lines and metrics.
const NAME: &str = "dashboard";

struct App {
    sources: Sources,
    /// The token (its digest); the login cookie carries the digest in hex.
    token: Option<Token>,
    /// Wrong tokens per peer address.
    throttle: Throttle,
    streams: AtomicUsize,
    shutdown: CancellationToken,
    /// Served over TLS: the cookie is then `Secure`.
    https: bool,
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
            token: self.settings.token.as_deref().map(Token::new),
            throttle: Throttle::new(NAME),
            streams: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
            https: self.settings.tls.is_some(),
        });
        let listen = self.settings.listen;
        let secured = if app.token.is_some() {
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
        let limits = self.settings.limits;
        let tls = self.settings.tls.as_ref().map(|t| crate::http::TlsFiles {
            cert: t.cert_file.clone(),
            key: t.key_file.clone(),
        });
        tokio::spawn(async move {
            crate::http::serve(self.listener, NAME, limits, tls, router, shutdown).await;
            ticker.abort();
        })
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

/// What a request shows of the token.
enum Shown {
    /// The token (bearer header or the login's cookie).
    Right,
    /// Nothing.
    Nothing,
    /// A token that is not it; `cookie` when it came as the login's cookie.
    Wrong { cookie: bool },
}

/// What the request shows of `token`: a bearer header, or the login's cookie.
fn shown(token: &Token, headers: &HeaderMap) -> Shown {
    let bearer = auth::bearer(headers);
    if bearer.is_some_and(|b| token.matches(b)) {
        return Shown::Right;
    }
    let mut cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .peekable();
    let cookie = cookies.peek().is_some();
    if cookies.any(|(_, v)| token.matches_hex(v)) {
        Shown::Right
    } else if bearer.is_some() || cookie {
        Shown::Wrong { cookie }
    } else {
        Shown::Nothing
    }
}

/// Every request: the host check (no token) or the token (token set; a peer locked out for
/// wrong tokens gets 429, and a wrong one counts against it), then the headers that keep the
/// page to itself (no framing, no inline or foreign scripts, no referrer).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut response = match &app.token {
        None if !local_host(req.headers()) => (
            StatusCode::FORBIDDEN,
            "open the dashboard by the machine's address (http://127.0.0.1:PORT/): without \
             web.token_file it answers no other host name",
        )
            .into_response(),
        None => next.run(req).await,
        Some(token) => with_token(&app, token, req, next).await,
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

/// A request to a dashboard with a token: the lockout first (the right token is not even
/// looked at then), the stylesheet and the login form free, the rest with the token.
async fn with_token(app: &App, token: &Token, req: Request, next: Next) -> Response {
    if req.uri().path() == "/style.css" {
        return next.run(req).await;
    }
    let peer = auth::peer(&req);
    if let Some(wait) = app.throttle.locked(peer) {
        return auth::locked_out(wait);
    }
    let shown = shown(token, req.headers());
    if let Shown::Right = shown {
        app.throttle.passed(peer);
        return next.run(req).await;
    }
    if req.uri().path() == "/login" {
        // The form judges (and counts) the token it carries.
        return next.run(req).await;
    }
    let mut refused = if req.method() == Method::GET && req.uri().path() == "/" {
        (StatusCode::UNAUTHORIZED, Html(LOGIN_HTML)).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "the dashboard needs its token (web.token_file): log in at /, or send Authorization: Bearer TOKEN",
        )
            .into_response()
    };
    if let Shown::Wrong { cookie } = shown {
        app.throttle.failed(peer);
        if cookie {
            // A cookie of an older token: dropped, so the browser shows the login form
            // instead of counting a wrong token at every request.
            refused.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static("serial2mqtt_token=; Path=/; Max-Age=0"),
            );
        }
    }
    refused
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

/// The login form: the right token sets the cookie and goes to the dashboard; a wrong one
/// counts against the peer.
async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<Login>,
) -> Response {
    let Some(token) = &app.token else {
        return Redirect::to("/").into_response();
    };
    if token.matches(&form.token) {
        app.throttle.passed(peer.ip());
        let secure = if app.https { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
            token.hex()
        );
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    app.throttle.failed(peer.ip());
    // Slows a browser's guessing down further (the lockout is what bounds it).
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

    #[test]
    fn thinning_keeps_the_newest_point_and_at_most_max() {
        let points: Vec<u32> = (0..3600).collect();
        let t = thin(&points, 720);
        assert!(t.len() <= 720, "{}", t.len());
        assert_eq!(t.last(), Some(&3599));
        assert_eq!(thin(&points[..5], 720), vec![0, 1, 2, 3, 4]);
    }
}
