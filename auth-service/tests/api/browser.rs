//! The browser pages under `/auth/` over real HTTP, driven like a browser:
//! a cookie jar that honours `Path` and `Max-Age=0`, forms posted with the
//! CSRF token the page carried, no automatic redirects (every 303 and its
//! `Location` is asserted).

use std::time::Duration;

use authflow_auth_service::store::PageRequest;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const ACCESS: &str = authflow_contract::browser::ACCESS_COOKIE;
const REFRESH: &str = authflow_contract::browser::REFRESH_COOKIE;
const DEVICE: &str = authflow_contract::fingerprint::DEVICE_COOKIE;

#[derive(Clone, Debug)]
struct Cookie {
    name: String,
    value: String,
    path: String,
    /// The whole `Set-Cookie` line, for attribute checks.
    raw: String,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The CSRF token of the page's (first) form.
    fn csrf(&self) -> String {
        hidden(&self.body, "csrf")
    }

    fn alert(&self) -> Option<String> {
        let start = self.body.find("role=\"alert\"")?;
        let text = &self.body[start..];
        let open = text.find('>')? + 1;
        let close = text.find('<')?;
        Some(text[open..close].to_owned())
    }
}

/// The value of the hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

#[derive(Clone)]
struct Browser {
    base: String,
    http: reqwest::Client,
    jar: Vec<Cookie>,
    /// Cookies of other sites of the domain, sent on every path after ours
    /// (before them with `foreign_first`: browsers order by path, then age).
    foreign: Vec<String>,
    foreign_first: bool,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", HeaderValue::from_static(LANG));
        headers.insert("accept", HeaderValue::from_static("text/html"));
        let http = reqwest::Client::builder()
            .user_agent(UA)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base: app.base.clone(),
            http,
            jar: Vec::new(),
            foreign: Vec::new(),
            foreign_first: false,
        }
    }

    fn cookie(&self, name: &str) -> Option<&Cookie> {
        self.jar.iter().find(|c| c.name == name)
    }

    fn cookie_header(&self, path: &str) -> String {
        let mut all: Vec<String> = self
            .jar
            .iter()
            .filter(|c| path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        if self.foreign_first {
            all.splice(0..0, self.foreign.iter().cloned());
        } else {
            all.extend(self.foreign.iter().cloned());
        }
        all.join("; ")
    }

    fn store(&mut self, headers: &HeaderMap) {
        for line in headers.get_all("set-cookie") {
            let raw = line.to_str().unwrap().to_owned();
            let (pair, attrs) = raw.split_once(';').unwrap_or((&raw, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let path = attrs
                .split(';')
                .find_map(|a| a.trim().strip_prefix("Path="))
                .unwrap_or("/")
                .to_owned();
            self.jar.retain(|c| c.name != name);
            if !attrs.contains("Max-Age=0") {
                self.jar.push(Cookie {
                    name: name.into(),
                    value: value.into(),
                    path,
                    raw: raw.clone(),
                });
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, path: &str) -> Page {
        let cookies = self.cookie_header(path.split('?').next().unwrap());
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies)
        };
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        self.store(&headers);
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, path).await
    }

    /// A form post as Chromium sends it from one of our pages: under their
    /// `Referrer-Policy: no-referrer` the `Origin` is `null`, and
    /// `Sec-Fetch-Site` says where the form came from.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
            .form(fields);
        self.send(req, path).await
    }

    /// GET the page with the form, then post it with the page's CSRF token.
    async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let form = self.get(page).await;
        assert_eq!(form.status, 200, "{page}: {}", form.body);
        let csrf = form.csrf();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.post(action, &all).await
    }

    /// Sign-up, the mailed link, sign-in and the mailed code.
    async fn sign_up_and_in(&mut self, app: &TestApp, email: &str, return_to: &str) -> Page {
        let r = self
            .submit(
                "/auth/signup",
                "/auth/signup",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/auth/signup/sent")
        );
        let mail = app.last_mail(email, 1).await;
        let body = mail["body"].as_str().unwrap();
        let link = body
            .lines()
            .find(|l| l.contains("/auth/verify?token="))
            .unwrap_or_else(|| panic!("no page link in {body}"));
        let origin = app
            .state
            .config
            .accounts
            .pages_url(&app.state.config.tokens.issuer);
        assert!(
            link.starts_with(&format!("{origin}/auth/verify?token=")),
            "an absolute link to the page: {link}"
        );
        let path = &link[link.find("/auth/verify").unwrap()..];
        let r = self.confirm_address(app, email, path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.sign_in(app, email, return_to).await
    }

    /// Opens the mailed link (`path`), which confirms nothing by itself (a
    /// mail scanner opens links too), then presses its button.
    async fn confirm_address(&mut self, app: &TestApp, email: &str, path: &str) -> Page {
        let verified = |user: Option<authflow_auth_service::store::User>| {
            user.is_some_and(|u| u.email_verified)
        };
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Confirm my address"), "{}", page.body);
        let user = app.state.store.user_by_email(email).await.unwrap();
        assert!(!verified(user), "opening the link confirmed the address");
        let token = &path[path.find("token=").unwrap() + "token=".len()..];
        let r = self.submit(path, "/auth/verify", &[("token", token)]).await;
        let user = app.state.store.user_by_email(email).await.unwrap();
        assert!(verified(user) || r.status != 200, "{}", r.body);
        r
    }

    async fn sign_in(&mut self, app: &TestApp, email: &str, return_to: &str) -> Page {
        let before = app.outbox(email, 0).await.len();
        let page = format!("/auth/signin?return_to={}", url_escape(return_to));
        let r = self
            .submit(
                &page,
                "/auth/signin",
                &[
                    ("email", email),
                    ("password", PASSWORD),
                    ("return_to", return_to),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(
            r.location().starts_with("/auth/signin/code"),
            "{}",
            r.location()
        );
        let mail = app.last_mail(email, before + 1).await;
        let code_page = r.location().to_owned();
        self.submit(
            &code_page,
            "/auth/signin/code",
            &[
                ("code", mail["code"].as_str().unwrap()),
                ("return_to", return_to),
            ],
        )
        .await
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn assert_page_headers(page: &Page, what: &str) {
    let h = |name: &str| {
        page.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
        "{what}"
    );
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    // A page opened by another site's window keeps no handle to it: that site
    // cannot navigate the page on while its answer (a rotated cookie) lands.
    assert_eq!(h("cross-origin-opener-policy"), "same-origin", "{what}");
    assert_eq!(h("cache-control"), "no-store", "{what}");
}

#[tokio::test]
async fn sign_up_verify_sign_in_with_the_code_sets_the_session_cookies() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let email = "page-user@example.com";
    let r = b.sign_up_and_in(&app, email, "/app/hello?x=1").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app/hello?x=1")
    );

    let access = b.cookie(ACCESS).expect("access cookie").clone();
    let ttl = app.state.config.tokens.access_ttl.as_secs();
    assert!(
        access.raw.contains("HttpOnly")
            && access.raw.contains("Secure")
            && access.raw.contains("SameSite=Lax"),
        "{}",
        access.raw
    );
    assert!(
        access.raw.contains("Path=/;") && access.raw.contains(&format!("Max-Age={ttl}")),
        "{}",
        access.raw
    );
    let refresh = b.cookie(REFRESH).expect("refresh cookie");
    assert!(
        refresh.raw.contains("HttpOnly")
            && refresh.raw.contains("Secure")
            && refresh.raw.contains("SameSite=Lax"),
        "{}",
        refresh.raw
    );
    assert_eq!(refresh.path, "/auth/refresh");
    let device = b.cookie(DEVICE).expect("device cookie");
    assert!(
        device.raw.contains("SameSite=Lax")
            && device.raw.contains("Path=/;")
            && device.raw.contains("HttpOnly"),
        "{}",
        device.raw
    );
    assert!(
        b.cookie("__Host-authflow-challenge").is_none(),
        "the challenge cookie is gone"
    );
    assert_eq!(claims(&access.value)["sub"].as_str().unwrap().len(), 32);

    let devices = b.get("/auth/devices").await;
    assert_eq!(devices.status, 200, "{}", devices.body);
    assert!(
        devices.body.contains("(this device)") && devices.body.contains(UA),
        "{}",
        devices.body
    );
    assert!(devices.body.contains(email));
}

/// Pages served at an https address tell browsers to come back over https
/// only (HSTS, RFC 6797): a later visit typed as `http://` never sends the
/// form or its cookies in clear. Over http the header would be ignored, so
/// it is not sent; no `includeSubDomains`: the other hosts are not the
/// service's to decide.
#[tokio::test]
async fn pages_at_an_https_address_send_hsts() {
    let app = spawn_app_with(|c| c.accounts.pages_url = Some("https://auth.example".into())).await;
    let mut b = Browser::new(&app);
    for path in ["/auth/signin", "/auth/refresh"] {
        let page = b.get(path).await;
        assert_eq!(
            page.headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "{path}"
        );
    }
    let app = spawn_app().await;
    let page = Browser::new(&app).get("/auth/signin").await;
    assert_eq!(page.headers.get("strict-transport-security"), None);
}

#[tokio::test]
async fn every_page_has_the_strict_headers_and_accessible_markup() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    for path in [
        "/auth/signin",
        "/auth/signup",
        "/auth/signup/sent",
        "/auth/password/forgot",
        "/auth/password/reset?token=x",
        "/auth/verify?token=nope",
    ] {
        let page = b.get(path).await;
        assert!(
            page.status == 200 || page.status == 400,
            "{path}: {}",
            page.status
        );
        assert_page_headers(&page, path);
        assert!(
            page.body.starts_with("<!DOCTYPE html><html lang=\"en\">"),
            "{path}"
        );
        assert!(page.body.contains("<h1>"), "{path}");
        assert!(
            !page.body.contains("<script"),
            "{path}: works without JavaScript"
        );
        assert!(
            !page.body.contains("http://") && !page.body.contains("https://"),
            "{path}: no third-party assets"
        );
    }
    let form = b.get("/auth/signin").await;
    for needle in [
        "id=\"signin-form\"",
        "<label for=\"email\">",
        "autocomplete=\"username\"",
        "autocomplete=\"current-password\"",
        "<button type=\"submit\">",
    ] {
        assert!(form.body.contains(needle), "{needle} in {}", form.body);
    }
    let css = b.get("/auth/static/authflow.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    // The DPoP client (tests/browser/test_dpop.py runs it in Chromium): a module the pages' CSP allows.
    let client = b.get("/auth/static/authflow-dpop.js").await;
    assert_eq!(client.status, 200);
    assert!(client.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(client.body.contains("export async function completeSignIn"));
    let refused = b
        .post(
            "/auth/signin",
            &[("email", "a@example.com"), ("password", "x")],
        )
        .await;
    assert_page_headers(&refused, "a refused post");
    let redirect = b.get("/auth/refresh").await;
    assert_page_headers(&redirect, "the refresh redirect");
}

#[tokio::test]
async fn refresh_rotates_the_cookie_and_the_old_one_is_refused() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "rotate@example.com", "/").await;
    let old = b.cookie(REFRESH).unwrap().value.clone();
    let old_access = b.cookie(ACCESS).unwrap().value.clone();
    let mut stale = b.clone();

    let r = b.get("/auth/refresh?return_to=%2Fapp%2Fhello").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app/hello")
    );
    assert_page_headers(&r, "refresh");
    let new = b.cookie(REFRESH).unwrap().value.clone();
    assert_ne!(new, old, "rotated");
    assert_ne!(
        b.cookie(ACCESS).unwrap().value,
        old_access,
        "a fresh access token"
    );

    // The rotated-out cookie at once (a tab that lost the race): to sign-in,
    // but the cookies stay (the jar may hold the winner's by now) and so does the session.
    let session = claims(&old_access)["sid"].as_str().unwrap().to_owned();
    let r = stale.get("/auth/refresh?return_to=%2Fapp%2Fhello").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app/hello")
    );
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no cookie cleared: {:?}",
        r.headers
    );
    assert_page_headers(&r, "the refused refresh");
    assert!(
        app.state
            .store
            .session(&session)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none(),
        "the session lives"
    );
    // Past the grace: reuse; sign-in again, the cookies cleared and the session ended.
    // The cookie holds the token and its device tag: `<token>.<tag>`.
    age_rotation(&app, old.split('.').next().unwrap(), 60).await;
    let r = stale.get("/auth/refresh?return_to=%2Fapp%2Fhello").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app/hello")
    );
    assert!(
        stale.cookie(ACCESS).is_none() && stale.cookie(REFRESH).is_none(),
        "cleared"
    );
    assert!(
        app.state
            .store
            .session(&session)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some(),
        "reuse ended the session"
    );
    // Without any refresh cookie: straight to sign-in.
    let mut fresh = Browser::new(&app);
    let r = fresh.get("/auth/refresh").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin")
    );
}

/// A browser whose session reached its refresh limit
/// (`throttle.refresh_max_per_hour`): to sign-in, but its cookies and
/// session are left alone (the refresh cookie is good again later), not
/// cleared as for an ended session.
#[tokio::test]
async fn a_throttled_browser_refresh_keeps_the_cookies() {
    let app = spawn_app_with(|c| c.throttle.refresh_max_per_hour = 2).await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "throttled@example.com", "/").await;
    let session = claims(&b.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let r = b.get("/auth/refresh?return_to=%2Fapp").await;
        assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/app"));
    }
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app")
    );
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no cookie cleared: {:?}",
        r.headers
    );
    let s = app.state.store.session(&session).await.unwrap().unwrap();
    assert!(s.revoked_at.is_none(), "the session lives");
    // An hour later the same cookie refreshes.
    run_sql(
        &app,
        &[&format!(
            "UPDATE refresh_tokens SET used_at = used_at - 3600 WHERE session_id = '{session}' AND used_at IS NOT NULL"
        )],
    )
    .await;
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/app"));
}

/// Two tabs of one browser (one cookie jar) sent to the refresh endpoint at
/// once: one rotates, the other goes to sign-in without touching the
/// cookies, so whichever answer the browser takes last, the jar keeps the
/// winner's cookies — and the session is not ended by the race.
#[tokio::test]
async fn two_tabs_refreshing_at_once_keep_the_browser_signed_in() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "tabs@example.com", "/").await;
    let session = claims(&b.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookies = b.cookie_header(authflow_contract::browser::REFRESH_PATH);
    let tab = || {
        b.http
            .get(format!("{}/auth/refresh?return_to=%2Fapp", b.base))
            .header("cookie", &cookies)
            .send()
    };
    let (one, two) = tokio::join!(tab(), tab());
    let (one, two) = (one.unwrap(), two.unwrap());
    let (winner, loser) = if one.headers().get("location").is_some_and(|l| l == "/app") {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(
        (
            winner.status(),
            winner.headers()["location"].to_str().unwrap()
        ),
        (StatusCode::SEE_OTHER, "/app")
    );
    assert_eq!(loser.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        loser.headers()["location"].to_str().unwrap(),
        "/auth/signin?return_to=/app"
    );
    assert!(
        loser.headers().get("set-cookie").is_none(),
        "the losing tab leaves the cookies alone: {:?}",
        loser.headers()
    );
    assert!(
        app.state
            .store
            .session(&session)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none(),
        "the race ended the session"
    );

    // Either order of arrival leaves the winner's cookies in the jar.
    for (first, last) in [
        (winner.headers(), loser.headers()),
        (loser.headers(), winner.headers()),
    ] {
        let mut jar = b.clone();
        jar.store(first);
        jar.store(last);
        let mut expected = b.clone();
        expected.store(winner.headers());
        for name in [ACCESS, REFRESH, DEVICE] {
            assert_eq!(
                jar.cookie(name).map(|c| c.value.clone()),
                expected.cookie(name).map(|c| c.value.clone()),
                "{name}"
            );
        }
    }
    b.store(loser.headers());
    b.store(winner.headers());
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app"),
        "the jar refreshes on"
    );
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_or_from_another_site_are_refused() {
    let app = spawn_app().await;
    app.verified_user("csrf@example.com").await;
    let mut b = Browser::new(&app);
    let form = b.get("/auth/signin").await;
    let token = form.csrf();
    let creds = [("email", "csrf@example.com"), ("password", PASSWORD)];
    let with = |t: &str| {
        let mut f = creds.to_vec();
        f.push(("csrf", Box::leak(t.to_owned().into_boxed_str())));
        f
    };

    // Missing and forged tokens.
    let r = b.post("/auth/signin", &creds).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.alert().is_some(), "{}", r.body);
    let r = b.post("/auth/signin", &with("forged")).await;
    assert_eq!(r.status, 403);
    // Login CSRF: another site's browser (its own cookie and token) posting ours.
    let mut attacker = Browser::new(&app);
    let theirs = attacker.get("/auth/signin").await.csrf();
    let r = b.post("/auth/signin", &with(&theirs)).await;
    assert_eq!(r.status, 403, "a token of another browser's cookie");
    // A cross-site form post with a valid pair is refused on its origin.
    let req = b
        .http
        .post(format!("{}/auth/signin", b.base))
        .header("origin", "https://evil.example")
        .form(&with(&token));
    let r = b.send(req, "/auth/signin").await;
    assert_eq!(r.status, 403);
    let req = b
        .http
        .post(format!("{}/auth/signin", b.base))
        .header("sec-fetch-site", "cross-site")
        .form(&with(&token));
    let r = b.send(req, "/auth/signin").await;
    assert_eq!(r.status, 403);
    // Cookie tossing: a second CSRF cookie beside ours.
    let mut tossed = b.clone();
    let mut header = tossed.cookie_header("/auth/signin");
    header.push_str("; __Host-authflow-csrf=planted");
    tossed.jar.clear();
    let req = tossed
        .http
        .post(format!("{}/auth/signin", tossed.base))
        .header("cookie", header)
        .form(&with(&token));
    let r = tossed.send(req, "/auth/signin").await;
    assert_eq!(r.status, 403);
    // What a page echoes back is escaped.
    let r = b
        .post(
            "/auth/signin",
            &[
                ("email", "\"><script>alert(1)</script>"),
                ("password", "x"),
                ("csrf", &token),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        !r.body.contains("<script>") && r.body.contains("&lt;script&gt;"),
        "{}",
        r.body
    );
    // A page of another site posting with Origin: null (a sandboxed frame, or its own no-referrer).
    let req = b
        .http
        .post(format!("{}/auth/signin", b.base))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form(&with(&token));
    assert_eq!(b.send(req, "/auth/signin").await.status, 403);
    // A browser that names our origin passes (no Sec-Fetch-Site: an older one).
    let req = b
        .http
        .post(format!("{}/auth/signin", b.base))
        .header("origin", &b.base)
        .form(&with(&token));
    assert_eq!(b.send(req, "/auth/signin").await.status, 303);
    // The genuine pair passes.
    let r = b.post("/auth/signin", &with(&token)).await;
    assert_eq!(r.status, 303, "{}", r.body);
}

#[tokio::test]
async fn return_to_never_leaves_the_site() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "redirect@example.com", "/").await;
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/ok\r\nset-cookie: x=y",
        "javascript:alert(1)",
        "/%0d%0aset-cookie:x=y",
        // Not off the site, but another method to run where the browser
        // lands from this site, the cookie authenticating it.
        "/app/items/1?_method=DELETE",
        "/app/items/1?a=1&%5Fmethod=delete",
    ] {
        let r = b
            .get(&format!("/auth/refresh?return_to={}", url_escape(evil)))
            .await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/"),
            "{evil:?}"
        );
        assert!(
            r.headers
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("x=")),
            "{evil:?}"
        );
        let page = b
            .get(&format!("/auth/signin?return_to={}", url_escape(evil)))
            .await;
        assert_eq!(hidden(&page.body, "return_to"), "/", "{evil:?}");
    }
    // Through sign-in itself: the posted field is checked again.
    let mut other = Browser::new(&app);
    let r = other
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[
                ("email", "redirect@example.com"),
                ("password", PASSWORD),
                ("return_to", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin/code")
    );
}

#[tokio::test]
async fn logout_clears_the_cookies_and_ends_the_session() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "bye@example.com", "/").await;
    let access = b.cookie(ACCESS).unwrap().value.clone();
    let device = b.cookie(DEVICE).unwrap().value.clone();
    let mut kept = b.clone();

    let devices = b.get("/auth/devices").await;
    let r = b.post("/auth/logout", &[("csrf", &devices.csrf())]).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin")
    );
    for name in [ACCESS, REFRESH, DEVICE] {
        let line = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|l| l.starts_with(&format!("{name}=;")));
        assert!(
            line.as_deref().is_some_and(|l| l.contains("Max-Age=0")),
            "{name} cleared"
        );
    }
    assert!(b.cookie(ACCESS).is_none());

    // The old access token is refused at the API and on the pages.
    let r = app
        .http
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&access)
        .header("x-authflow-device", &device)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = kept.get("/auth/devices").await;
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/auth/refresh?return_to=/auth/devices"
        )
    );
    let r = kept.get(r.location()).await;
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/auth/signin?return_to=/auth/devices"
        )
    );
}

/// Ending one of the account's other sessions from the devices page is
/// audited with which session ended and which session ended it: the row
/// named only the account, so after a stolen session signed its owner's
/// devices out, the trail could not tell which session did it, nor which
/// were ended by it and which by their owner.
#[tokio::test]
async fn a_device_logout_is_audited_with_both_sessions() {
    let app = spawn_app().await;
    let mut phone = Browser::new(&app);
    phone.sign_up_and_in(&app, "three@example.com", "/").await;
    let mut laptop = Browser::new(&app);
    laptop.sign_in(&app, "three@example.com", "/").await;
    let sid = |b: &Browser| {
        claims(&b.cookie(ACCESS).unwrap().value)["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (phone_sid, laptop_sid) = (sid(&phone), sid(&laptop));
    let page = laptop.get("/auth/devices").await;
    let r = laptop
        .post(
            "/auth/devices/logout",
            &[("session", &phone_sid), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    let row = log.iter().find(|e| e.event == "logout_device").unwrap();
    let detail = row.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(&phone_sid) && detail.contains(&laptop_sid),
        "{row:?}"
    );
}

#[tokio::test]
async fn devices_log_out_one_and_everywhere() {
    let app = spawn_app().await;
    let mut phone = Browser::new(&app);
    phone.sign_up_and_in(&app, "two@example.com", "/").await;
    let mut laptop = Browser::new(&app);
    laptop.sign_in(&app, "two@example.com", "/").await;

    let page = laptop.get("/auth/devices").await;
    assert_eq!(
        page.body.matches("device-logout-form-").count(),
        2,
        "{}",
        page.body
    );
    // Log out the phone's session from the laptop.
    let phone_sid = claims(&phone.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = laptop
        .post(
            "/auth/devices/logout",
            &[("session", &phone_sid), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    assert_eq!(
        phone.get("/auth/devices").await.status,
        StatusCode::SEE_OTHER,
        "the phone is signed out"
    );
    let page = laptop.get("/auth/devices").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.matches("device-logout-form-").count(), 1);

    // Another user cannot end someone else's session through the form.
    let mut other = Browser::new(&app);
    other.sign_up_and_in(&app, "other@example.com", "/").await;
    let laptop_sid = claims(&laptop.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let csrf = other.get("/auth/devices").await.csrf();
    other
        .post(
            "/auth/devices/logout",
            &[("session", &laptop_sid), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        laptop.get("/auth/devices").await.status,
        200,
        "still signed in"
    );

    let r = laptop
        .post("/auth/logout-all", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin")
    );
    let other_sub = claims(&other.cookie(ACCESS).unwrap().value)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let live = app
        .state
        .store
        .sessions_of(&other_sub, &PageRequest::first(1000))
        .await
        .unwrap();
    assert!(
        live.iter().any(|s| s.revoked_at.is_none()),
        "the other user keeps theirs"
    );
}

#[tokio::test]
async fn wrong_codes_on_the_page_hit_the_same_limits() {
    let app = spawn_app().await;
    app.verified_user("guess@example.com").await;
    let mut b = Browser::new(&app);
    let r = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", "guess@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let code = app.last_mail("guess@example.com", 2).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let form = b.get("/auth/signin/code").await;
    let csrf = form.csrf();
    let max = app.state.config.accounts.challenge_max_attempts;
    for n in 0..max {
        let r = b
            .post("/auth/signin/code", &[("code", wrong), ("csrf", &csrf)])
            .await;
        assert!(
            r.status == 401 || r.status == 429,
            "attempt {n}: {}",
            r.status
        );
        assert!(r.alert().is_some(), "{}", r.body);
    }
    // The right code, after the limit, no longer signs in.
    let r = b
        .post("/auth/signin/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_ne!(r.status, 303, "{}", r.body);
    assert!(b.cookie(ACCESS).is_none());
}

#[tokio::test]
async fn huge_forms_are_refused() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let csrf = b.get("/auth/signin").await.csrf();
    let big = "a".repeat(app.state.config.server.body_limit_bytes + 1);
    let r = b
        .post(
            "/auth/signin",
            &[("email", &big), ("password", "x"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn a_banned_user_is_sent_to_sign_in_and_told_why() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "banned@example.com", "/").await;
    let sub = claims(&b.cookie(ACCESS).unwrap().value)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.ban(&admin, &sub).await;
    assert!(r.status().is_success(), "{}", r.status());

    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app")
    );
    let r = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", "banned@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.alert().unwrap().contains("disabled"), "{}", r.body);
}

#[tokio::test]
async fn password_reset_through_the_pages() {
    let app = spawn_app().await;
    let email = "forgot@example.com";
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, email, "/").await;
    let before = app.outbox(email, 0).await.len();
    let r = b
        .submit(
            "/auth/password/forgot",
            "/auth/password/forgot",
            &[("email", email)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/password/forgot/sent")
    );
    let mail: Value = app.last_mail(email, before + 1).await;
    let body = mail["body"].as_str().unwrap();
    let link = body
        .lines()
        .find(|l| l.contains("/auth/password/reset?token="))
        .unwrap_or_else(|| panic!("{body}"));
    let path = link[link.find("/auth/").unwrap()..].to_owned();
    let new_password = "a brand new passphrase 42";
    let token = hidden(&b.get(&path).await.body, "token");
    let r = b
        .submit(
            &path,
            "/auth/password/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/password/reset/done"),
        "{}",
        r.body
    );
    assert_eq!(
        b.get("/auth/devices").await.status,
        StatusCode::SEE_OTHER,
        "every session ended"
    );

    let r = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 401, "the old password is refused");
    let r = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", email), ("password", new_password)],
        )
        .await;
    assert_eq!(r.status, 303);
    // The link works once.
    let token = hidden(&b.get(&path).await.body, "token");
    let r = b
        .submit(
            &path,
            "/auth/password/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.alert().is_some());
}

/// A first authenticator needs a sign-in at most 15 minutes old: the page
/// says so before asking for the password, and links to sign-in.
#[tokio::test]
async fn the_totp_page_asks_an_old_sign_in_to_sign_in_again() {
    let app = spawn_app().await;
    let email = "old-signin@example.com";
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, email, "/").await;
    run_sql(
        &app,
        &["UPDATE sessions SET created_at = created_at - 16 * 60"],
    )
    .await;
    let r = b.get("/auth/totp").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("Sign in again"), "{}", r.body);
    assert!(
        r.body.contains("/auth/signin?return_to=/auth/totp"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("name=\"password\""),
        "no password asked for"
    );
}

#[tokio::test]
async fn totp_enrolment_with_the_qr_code_then_sign_in_with_the_app() {
    let app = spawn_app().await;
    let email = "totp-page@example.com";
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, email, "/").await;

    let r = b
        .submit(
            "/auth/totp",
            "/auth/totp",
            &[("password", "wrong password!")],
        )
        .await;
    assert_eq!(r.status, 401, "a fresh proof is needed");
    assert_eq!(
        r.alert().as_deref(),
        Some("The password is wrong."),
        "a signed-in person's address is verified"
    );
    let r = b
        .submit("/auth/totp", "/auth/totp", &[("password", PASSWORD)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_page_headers(&r, "enrolment");
    assert!(
        r.body.contains("<svg") && !r.body.contains("<?xml") && !r.body.contains("style="),
        "inline, CSP-safe SVG"
    );
    let start = r.body.find("id=\"totp-secret\">").unwrap() + "id=\"totp-secret\">".len();
    let secret = r.body[start..].split('<').next().unwrap().to_owned();
    let csrf = r.csrf();
    let now = authflow_auth_service::clock::now();
    let enrolment = hidden(&r.body, "enrolment");
    let r = b
        .post(
            "/auth/totp/confirm",
            &[
                ("code", "000000"),
                ("csrf", &csrf),
                ("enrolment", &enrolment),
            ],
        )
        .await;
    assert!(
        r.status == 401 && r.body.contains(&secret),
        "a wrong code shows the key again: {}",
        r.status
    );
    let r = b
        .post(
            "/auth/totp/confirm",
            &[("code", &totp_code(&secret, now)), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/totp/done")
    );

    // Sign-in now asks for the app's code (the next time step: the last one is used).
    let mut other = Browser::new(&app);
    let r = other
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let form = other.get("/auth/signin/code").await;
    assert!(form.body.contains("authenticator app"), "{}", form.body);
    let r = other
        .post(
            "/auth/signin/code",
            &[
                ("code", &totp_code(&secret, now + 30)),
                ("csrf", &form.csrf()),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/"),
        "{}",
        r.body
    );
    assert!(other.cookie(ACCESS).is_some());
}

#[tokio::test]
async fn the_pages_are_not_in_the_api_document() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/auth/")),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert_eq!(app.get("/auth/signin").await.status(), 200);
}

#[tokio::test]
async fn mailed_links_use_the_configured_pages_origin_not_the_request_host() {
    let app =
        spawn_app_with(|c| c.accounts.pages_url = Some("https://app.example.com/".into())).await;
    let mut b = Browser::new(&app);
    let email = "origin@example.com";
    let form = b.get("/auth/signup").await;
    let req = b
        .http
        .post(format!("{}/auth/signup", b.base))
        .header("host", "evil.example")
        .form(&[
            ("email", email),
            ("password", PASSWORD),
            ("csrf", &form.csrf()),
        ]);
    let r = b.send(req, "/auth/signup").await;
    assert_eq!(r.status, 303);
    let body = app.last_mail(email, 1).await["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        body.contains("\nhttps://app.example.com/auth/verify?token="),
        "{body}"
    );
    assert!(!body.contains("evil.example"), "{body}");
}

/// The access cookie lives as long as its token; a "Log out" clicked after
/// that must still end the session on the server, not just forget cookies
/// (whoever copied the refresh cookie would stay signed in).
#[tokio::test]
async fn logout_after_the_access_cookie_expired_still_ends_the_session() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "idle@example.com", "/").await;
    let sid = claims(&b.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let csrf = b.get("/auth/devices").await.csrf();
    b.jar.retain(|c| c.name != ACCESS); // Max-Age reached: the browser dropped it.

    let r = b.post("/auth/logout", &[("csrf", &csrf)]).await;
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/auth/refresh?return_to=/auth/logout"
        )
    );
    let r = b.get(r.location()).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/logout")
    );
    let page = b.get("/auth/logout").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"logout-form\""), "{}", page.body);
    let r = b.post("/auth/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin")
    );
    let session = app.state.store.session(&sid).await.unwrap().unwrap();
    assert!(
        session.revoked_at.is_some(),
        "the session ended on the server"
    );
}

/// "Log out" of another device clicked after this browser's access cookie
/// expired (the devices page left open past the access-token lifetime) must
/// not sign this browser out while the other device stays signed in: the
/// other session (maybe a thief's) lived on, and this browser's own session
/// too, its refresh cookie cleared and so in nobody's hands but a copy's.
#[tokio::test]
async fn logging_out_another_device_after_the_access_cookie_expired_ends_it() {
    let app = spawn_app().await;
    let email = "idle-devices@example.com";
    let mut thief = Browser::new(&app);
    thief.sign_up_and_in(&app, email, "/").await;
    let thief_sid = claims(&thief.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut owner = Browser::new(&app);
    owner.sign_in(&app, email, "/").await;
    let owner_sid = claims(&owner.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = owner.get("/auth/devices").await;
    assert_eq!(page.status, 200);
    owner.jar.retain(|c| c.name != ACCESS); // Max-Age reached: the browser dropped it.

    let r = owner
        .post(
            "/auth/devices/logout",
            &[("session", &thief_sid), ("csrf", &page.csrf())],
        )
        .await;
    let thief_session = app.state.store.session(&thief_sid).await.unwrap().unwrap();
    let owner_session = app.state.store.session(&owner_sid).await.unwrap().unwrap();
    assert!(
        thief_session.revoked_at.is_some() || owner.cookie(REFRESH).is_some(),
        "the other device stays signed in and this browser's refresh cookie was cleared \
         ({} {})",
        r.status,
        r.location()
    );
    assert!(
        owner_session.revoked_at.is_some() || owner.cookie(REFRESH).is_some(),
        "this browser's session lives on with no cookie left to end it"
    );
    // Through the refresh endpoint back to the list, where the click ends it.
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/auth/refresh?return_to=/auth/devices"
        )
    );
    let r = owner.get(r.location()).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    let page = owner.get("/auth/devices").await;
    let r = owner
        .post(
            "/auth/devices/logout",
            &[("session", &thief_sid), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    let thief_session = app.state.store.session(&thief_sid).await.unwrap().unwrap();
    assert!(
        thief_session.revoked_at.is_some(),
        "the other device is signed out"
    );
    assert_eq!(
        thief.get("/auth/devices").await.status,
        StatusCode::SEE_OTHER
    );
}

/// The sign-in page answers an unverified account as it answers a wrong
/// password (no challenge), and mails a fresh link to the page that confirms
/// the address; then the sign-in goes through.
#[tokio::test]
async fn the_sign_in_page_answers_an_unverified_account_like_a_wrong_password() {
    let app = spawn_app().await;
    app.verified_user("known@example.com").await;
    let mut b = Browser::new(&app);
    let email = "pending@example.com";
    let r = b
        .submit(
            "/auth/signup",
            "/auth/signup",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signup/sent")
    );
    app.last_mail(email, 1).await;

    let wrong = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[
                ("email", "known@example.com"),
                ("password", "not the password"),
            ],
        )
        .await;
    let unverified = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        unverified.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        unverified.body
    );
    assert_eq!(
        (unverified.status, unverified.alert()),
        (wrong.status, wrong.alert())
    );
    assert!(
        b.cookie("__Host-authflow-challenge").is_none(),
        "no challenge for an unverified account"
    );

    let mail = app.last_mail(email, 2).await;
    let body = mail["body"].as_str().unwrap();
    let link = body
        .lines()
        .find(|l| l.contains("/auth/verify?token="))
        .unwrap_or_else(|| panic!("no page link in {body}"));
    let r = b
        .confirm_address(&app, email, &link[link.find("/auth/verify").unwrap()..])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.sign_in(&app, email, "/app/hello").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app/hello")
    );
}

/// The pages go through the API's guards: wrong passwords lock the account
/// for a while, and reset mails stay within the recipient's budget.
#[tokio::test]
async fn password_guessing_and_mail_floods_on_the_pages_hit_the_api_limits() {
    let app = spawn_app_with(|c| {
        c.throttle.account_max_failures = 3;
        c.mail.max_per_recipient_per_hour = 2;
    })
    .await;
    let email = "target@example.com";
    app.verified_user(email).await;
    let mut b = Browser::new(&app);
    for n in 0..3 {
        let r = b
            .submit(
                "/auth/signin",
                "/auth/signin",
                &[("email", email), ("password", "not the password")],
            )
            .await;
        assert_eq!(r.status, 401, "attempt {n}");
    }
    let r = b
        .submit(
            "/auth/signin",
            "/auth/signin",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429, "locked even with the right password");
    assert!(
        r.alert().unwrap().contains("Too many attempts"),
        "{}",
        r.body
    );
    let retry: u64 = r
        .headers
        .get("retry-after")
        .expect("Retry-After on the page")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= 1 && r.alert().unwrap().contains(&format!("{retry} seconds")),
        "{retry}: {}",
        r.body
    );

    let before = app.outbox(email, 0).await.len();
    for _ in 0..6 {
        let r = b
            .submit(
                "/auth/password/forgot",
                "/auth/password/forgot",
                &[("email", email)],
            )
            .await;
        assert_eq!(r.status, 303);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = app.outbox(email, 0).await.len() - before;
    assert!(sent <= 2, "{sent} reset mails sent past the budget");
}

/// A user with more live sessions than the devices page lists (200, newest
/// first) can still end one it does not list, by its id; revoked and expired
/// sessions take no room in the list.
#[tokio::test]
async fn a_session_past_the_listed_ones_can_still_be_logged_out() {
    use authflow_auth_service::store::{RefreshRecord, Session};
    let app = spawn_app().await;
    let mut tablet = Browser::new(&app);
    tablet.sign_up_and_in(&app, "many@example.com", "/").await;
    let tablet_sid = claims(&tablet.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut laptop = Browser::new(&app);
    laptop.sign_in(&app, "many@example.com", "/").await;
    let user = app
        .state
        .store
        .user_by_email("many@example.com")
        .await
        .unwrap()
        .unwrap();
    let now = authflow_auth_service::clock::now();
    // 250 newer sessions ended at once (a script signing in and out): they push nothing out.
    let session = |i: usize| Session {
        id: format!("s{i:04}"),
        user_id: user.id.clone(),
        device_secret_hash: "x".into(),
        created_at: now + 10,
        last_seen_at: now + 10,
        expires_at: now + 3600,
        revoked_at: None,
        revoke_reason: None,
        ip: None,
        user_agent: Some("script".into()),
        dpop_jkt: None,
        dpop_bound_at: None,
    };
    let refresh = |i: usize| RefreshRecord {
        hash: format!("h{i:04}"),
        session_id: format!("s{i:04}"),
        created_at: now,
        expires_at: now + 3600,
        used_at: None,
        dpop_bound: false,
    };
    for i in 0..250 {
        let s = session(i);
        assert!(app
            .state
            .store
            .create_session(&s, &refresh(i), None, user.password_version, UNCAPPED)
            .await
            .unwrap()
            .is_some());
        assert!(app
            .state
            .store
            .revoke_session(&s.id, "logout", now + 10, now + 3600)
            .await
            .unwrap());
    }
    let page = laptop.get("/auth/devices").await;
    assert_eq!(
        page.body.matches("device-logout-form-").count(),
        2,
        "the tablet and the laptop"
    );
    // 200 newer live ones: the tablet's is no longer listed, and is still the user's to end.
    for i in 250..450 {
        assert!(app
            .state
            .store
            .create_session(
                &session(i),
                &refresh(i),
                None,
                user.password_version,
                UNCAPPED
            )
            .await
            .unwrap()
            .is_some());
    }
    let page = laptop.get("/auth/devices").await;
    assert_eq!(page.body.matches("device-logout-form-").count(), 200);
    assert!(!page.body.contains(&tablet_sid));
    let r = laptop
        .post(
            "/auth/devices/logout",
            &[("session", &tablet_sid), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    let ended = app.state.store.session(&tablet_sid).await.unwrap().unwrap();
    assert_eq!(ended.revoke_reason.as_deref(), Some("logout_device"));
    assert_eq!(
        tablet.get("/auth/devices").await.status,
        StatusCode::SEE_OTHER,
        "the tablet is signed out"
    );
}

/// Cookies other sites of the domain may set beside ours change nothing: one
/// that is not ASCII (`lang=café`) hid every cookie of its line from the
/// pages (signed out, and no form accepted), a refresh cookie planted with
/// `Domain=` signed the browser out at every refresh, and a prefixed name
/// behind a Unicode space is another cookie.
#[tokio::test]
async fn foreign_cookies_beside_ours_change_nothing() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "jar@example.com", "/").await;
    b.foreign = vec![
        "lang=café".into(),
        "__Secure-authflow-refresh=planted-by-a-sibling".into(),
        "\u{2000}__Host-authflow-access=planted".into(),
        "\u{2000}__Host-authflow-device=planted".into(),
    ];
    assert_eq!(
        b.get("/auth/devices").await.status,
        StatusCode::OK,
        "signed in"
    );
    // The access token has run out: the refresh takes ours, whatever is beside it.
    b.jar.retain(|c| c.name != ACCESS);
    let r = b.get("/auth/refresh?return_to=/auth/devices").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    assert!(
        b.cookie(ACCESS).is_some() && b.cookie(REFRESH).is_some() && b.cookie(DEVICE).is_some()
    );
    // The planted copies sent before ours: tried, refused without effect, ours taken.
    b.foreign_first = true;
    b.jar.retain(|c| c.name != ACCESS);
    let r = b.get("/auth/refresh?return_to=/auth/devices").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices")
    );
    assert!(b.cookie(ACCESS).is_some());
    // Forms still pass their CSRF check.
    let r = b.submit("/auth/logout", "/auth/logout", &[]).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin")
    );
}

/// A sibling site of the domain plants refresh cookies of its own
/// (`Domain=`, `Path=/auth/refresh`) before the person signs in: browsers
/// send the older ones first, so ours comes after them. However many there
/// are, ours must still be tried: otherwise every expiry of the access
/// token signs the browser out (and clears its device cookie), for good.
#[tokio::test]
async fn many_planted_refresh_cookies_do_not_hide_ours() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "tossed@example.com", "/").await;
    b.foreign = (0..4)
        .map(|n| format!("{REFRESH}=planted-by-a-sibling-{n}"))
        .chain((0..4).map(|n| format!("{REFRESH}=planted-{n}.with-a-made-up-tag")))
        .collect();
    b.foreign_first = true;
    b.jar.retain(|c| c.name != ACCESS);
    let r = b.get("/auth/refresh?return_to=/auth/devices").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/devices"),
        "ours, sent fifth, is tried"
    );
    assert!(b.cookie(ACCESS).is_some() && b.cookie(DEVICE).is_some());
}

/// The access cookie has run out: the browser goes through the refresh.
async fn expired_access_refresh(b: &mut Browser) -> Page {
    b.jar.retain(|c| c.name != ACCESS);
    b.get("/auth/refresh?return_to=/auth/devices").await
}

/// A refresh token of this browser's session that an attacker kept (an
/// old one, rotated out long ago) and plants untagged beside ours: on its
/// own, without the device secret, it can end nothing. When our own copy
/// just lost a race with another tab, the refresh used to go on to the
/// untagged copies and present the planted one with this browser's device
/// secret: reuse, and the owner's session ended. A browser whose refresh
/// cookie carries the device tag tries no untagged copy.
#[tokio::test]
async fn a_planted_old_refresh_token_cannot_end_the_session_after_a_lost_race() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "lost-race@example.com", "/").await;
    let session = claims(&b.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_of = |value: &str| value.split('.').next().unwrap().to_owned();
    // The attacker's copy: rotated out long ago, past the reuse grace.
    let kept = token_of(&b.cookie(REFRESH).unwrap().value);
    let r = expired_access_refresh(&mut b).await;
    assert_eq!(r.location(), "/auth/devices");
    age_rotation(&app, &kept, 600).await;
    // Another tab rotates the current cookie; this tab still sends it.
    let raced = b.cookie(REFRESH).unwrap().value.clone();
    let r = expired_access_refresh(&mut b).await;
    assert_eq!(r.location(), "/auth/devices");
    for c in b.jar.iter_mut().filter(|c| c.name == REFRESH) {
        c.value = raced.clone();
    }
    b.foreign = vec![format!("{REFRESH}={kept}")];
    let r = expired_access_refresh(&mut b).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let ended = app.state.store.session(&session).await.unwrap().unwrap();
    assert_eq!(
        ended.revoke_reason, None,
        "the planted copy was taken for this browser's reuse"
    );
}

/// The verification page's button is a form like the others: an unknown
/// token is refused on the page, and a post without the page's CSRF token
/// (another site's form) confirms nothing.
#[tokio::test]
async fn the_verification_button_needs_a_valid_token_and_the_pages_csrf() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let r = b
        .submit(
            "/auth/verify?token=nope",
            "/auth/verify",
            &[("token", "nope")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.alert().is_some_and(|a| a.contains("link")), "{}", r.body);

    let email = "csrf-verify@example.com";
    let r = b
        .submit(
            "/auth/signup",
            "/auth/signup",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mail = app.last_mail(email, 1).await;
    let token = mail["token"].as_str().unwrap().to_owned();
    let r = b.post("/auth/verify", &[("token", &token)]).await;
    assert_ne!(r.status, 200, "{}", r.body);
    let user = app.state.store.user_by_email(email).await.unwrap().unwrap();
    assert!(
        !user.email_verified,
        "confirmed without the page's CSRF token"
    );
}

/// `GET /auth/refresh` rotates the refresh cookie, and its answer carries
/// the only copy of the new one. Another site can send the browser there
/// (a link, a redirect, `window.open`: `SameSite=Lax` cookies go along on a
/// top-level navigation) and then navigate that window on before the answer
/// lands: the browser keeps the rotated-out cookie, and its next refresh
/// ends the whole session as a stolen token's reuse. A navigation another
/// site started therefore rotates nothing: it gets a page whose button
/// (a same-origin form with the page's CSRF token) continues, and the
/// cookie the browser holds stays good.
/// The same for a request of this origin that is no navigation of a page:
/// an image, a style sheet or a frame some page of the origin embeds (HTML a
/// backend lets a user write) rotated the cookie too, once per redirect of
/// a `return_to` chain back to the refresh endpoint. A handful of them spent
/// the session's hourly refresh budget, and one the browser cancelled after
/// the rotation left it the rotated-out cookie (its next use: reuse, the
/// session ended). Only a top-level navigation rotates.
#[tokio::test]
async fn an_embedded_request_of_the_origin_does_not_rotate_the_refresh_cookie() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "embedded-refresh@example.com", "/")
        .await;
    let before = b.cookie(REFRESH).unwrap().value.clone();
    for (mode, dest) in [
        ("no-cors", "image"),
        ("navigate", "iframe"),
        ("cors", "empty"),
    ] {
        let path = "/auth/refresh?return_to=%2Fauth%2Frefresh";
        let req = b
            .http
            .get(format!("{}{path}", b.base))
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", mode)
            .header("sec-fetch-dest", dest);
        let r = b.send(req, path).await;
        assert_eq!(r.status, 200, "{mode}/{dest}: {}", r.body);
        assert_eq!(
            b.cookie(REFRESH).unwrap().value,
            before,
            "{mode}/{dest}: rotated"
        );
    }
    // A top-level navigation of the origin still rotates at once.
    let path = "/auth/refresh?return_to=%2Fapp";
    let req = b
        .http
        .get(format!("{}{path}", b.base))
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document");
    let r = b.send(req, path).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/app"));
    assert_ne!(b.cookie(REFRESH).unwrap().value, before);
}

#[tokio::test]
async fn another_site_cannot_make_the_browser_rotate_its_refresh_cookie() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "cross-site-refresh@example.com", "/")
        .await;
    let before = b.cookie(REFRESH).unwrap().value.clone();
    let access = b.cookie(ACCESS).unwrap().value.clone();
    let session = claims(&access)["sid"].as_str().unwrap().to_owned();

    for site in ["cross-site", "same-site"] {
        let path = "/auth/refresh?return_to=%2Fapp%2Fhello";
        let req = b
            .http
            .get(format!("{}{path}", b.base))
            .header("sec-fetch-site", site)
            .header("sec-fetch-mode", "navigate");
        let r = b.send(req, path).await;
        assert_eq!(r.status, 200, "{site}: {}", r.body);
        assert!(
            r.headers
                .get("set-cookie")
                .into_iter()
                .all(|c| !c.to_str().unwrap().starts_with(&format!("{REFRESH}="))),
            "{site}: the refresh cookie was set: {:?}",
            r.headers
        );
        assert_eq!(b.cookie(REFRESH).unwrap().value, before, "{site}");
        assert_page_headers(&r, "the refresh page");
        assert_eq!(hidden(&r.body, "return_to"), "/app/hello", "{site}");
        // Nothing rotated: the cookie the browser holds is still its session's current one.
        let hash = authflow_auth_service::domain::Secret::new(
            before.split('.').next().unwrap().to_owned(),
        )
        .hash();
        let record = app.state.store.refresh_token(&hash).await.unwrap().unwrap();
        assert!(record.used_at.is_none(), "{site}: rotated");
    }

    // The page's button continues: a same-origin form post rotates and goes back.
    let page = b.get("/auth/refresh?return_to=%2Fapp%2Fhello").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "same-origin: {}",
        page.body
    );
    assert_ne!(b.cookie(REFRESH).unwrap().value, before);
    let r = {
        let req = b
            .http
            .get(format!("{}/auth/refresh?return_to=%2Fapp", b.base))
            .header("sec-fetch-site", "cross-site");
        b.send(req, "/auth/refresh").await
    };
    let csrf = r.csrf();
    let before = b.cookie(REFRESH).unwrap().value.clone();
    let r = b
        .post("/auth/refresh", &[("csrf", &csrf), ("return_to", "/app")])
        .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/app"));
    assert_ne!(
        b.cookie(REFRESH).unwrap().value,
        before,
        "rotated by the button"
    );
    // Without the page's CSRF token the post rotates nothing.
    let before = b.cookie(REFRESH).unwrap().value.clone();
    let r = b.post("/auth/refresh", &[("return_to", "/app")]).await;
    assert_ne!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(b.cookie(REFRESH).unwrap().value, before);
    assert!(
        app.state
            .store
            .session(&session)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none(),
        "the session lives"
    );
}

/// A KEK rotation over several instances, as the README's procedure runs it
/// (every instance first learns the new key as `kek.previous`, then takes it
/// as `kek.key` with the old one as previous): browsers stay signed in. The
/// refresh cookie's tag and the pages' CSRF tokens are keyed with a key
/// derived from the KEK, and an instance on a new KEK refused every cookie
/// tagged before it, sending every browser to sign in.
#[tokio::test]
async fn browsers_stay_signed_in_across_a_kek_rotation() {
    let old = spawn_app().await;
    let mut b = Browser::new(&old);
    b.sign_up_and_in(&old, "rotation@example.com", "/").await;
    let form_served_before = b.get("/auth/devices").await.csrf();
    let old_kek = old.state.config.kek.current.unwrap();
    let new_kek = [9u8; 32];
    let learning = spawn_app_beside(&old, |c| {
        c.kek.current = Some(old_kek);
        c.kek.previous = vec![new_kek];
    })
    .await;
    let rotated = spawn_app_beside(&old, |c| {
        c.kek.current = Some(new_kek);
        c.kek.previous = vec![old_kek];
    })
    .await;

    b.base = rotated.base.clone();
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app"),
        "a cookie tagged under the old KEK refreshes at the rotated instance"
    );
    // The cookie the rotated instance tagged, at one not yet rotated.
    b.base = learning.base.clone();
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/app"),
        "a cookie tagged under the new KEK refreshes at an instance that knows it as previous"
    );
    // A form served before the rotation still posts.
    b.base = rotated.base.clone();
    let r = b
        .post("/auth/logout", &[("csrf", &form_served_before)])
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin"),
        "{}",
        r.body
    );
}

/// A navigation another site started to the refresh endpoint carries no
/// `SameSite=Strict` cookie: with no refresh cookie presented, the answer
/// cleared the session's cookies all the same, and the browser took that
/// answer: the device cookie of a session signed in through the API (the
/// DPoP client's) was gone, and any site could sign such a browser out with
/// a link. Nothing presented, nothing cleared.
#[tokio::test]
async fn a_refresh_with_no_refresh_cookie_clears_no_cookie() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    for site in ["cross-site", "same-origin"] {
        let req = b
            .http
            .get(format!("{}/auth/refresh?return_to=%2Fapp", b.base))
            .header("sec-fetch-site", site);
        let r = b.send(req, "/auth/refresh").await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app"),
            "{site}"
        );
        assert!(
            r.headers.get("set-cookie").is_none(),
            "{site}: {:?}",
            r.headers
        );
    }
}

/// A sibling site of the domain plants an untagged refresh cookie
/// (`Domain=` the parent, so no clearing answer removes it) in a browser
/// whose session is the JSON API's (the DPoP client's: a device cookie, no
/// refresh cookie). The planted copy, refused, cleared the session's
/// cookies: the device cookie was gone and the session unusable, again on
/// every visit to the refresh endpoint. A refused copy not tagged for this
/// browser's device secret is no one's: nothing is cleared.
#[tokio::test]
async fn a_planted_untagged_refresh_cookie_clears_no_cookie() {
    let app = spawn_app().await;
    app.verified_user("ada@example.com").await;
    let t = app.signin("ada@example.com", PASSWORD).await;
    let mut b = Browser::new(&app);
    b.jar.push(Cookie {
        name: DEVICE.into(),
        value: t.device.clone(),
        path: "/".into(),
        raw: String::new(),
    });
    b.foreign = vec![format!("{REFRESH}=planted")];
    let req = b
        .http
        .get(format!("{}/auth/refresh?return_to=%2Fapp", b.base))
        .header("sec-fetch-site", "same-origin");
    let r = b.send(req, "/auth/refresh").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app")
    );
    assert!(
        r.headers.get("set-cookie").is_none(),
        "the planted copy cleared: {:?}",
        r.headers
    );
    // The API session still works with its device secret.
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
}

/// The refresh failed for the service's own reason (its database, or no key
/// it can sign with), not the cookie's: the answer cleared the cookies and
/// sent the browser to sign in, ending a session nobody ended. It is a 503
/// with `Retry-After` now, the cookies kept, and the same cookie refreshes
/// once the service can.
#[tokio::test]
async fn a_refresh_the_service_cannot_answer_keeps_the_cookies() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "outage@example.com", "/").await;
    let rotated = an_instance_on_a_new_kek_rotated_past(&app).await;

    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.headers.get("set-cookie").is_none(), "{:?}", r.headers);
    assert!(b.cookie(REFRESH).is_some() && b.cookie(DEVICE).is_some());

    // At an instance that can sign, the same cookie refreshes.
    b.base = rotated.base.clone();
    let r = b.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/app"));
}

#[tokio::test]
async fn signing_in_again_ends_the_session_the_browser_held() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "again@example.com", "/").await;
    let first = claims(&b.cookie(ACCESS).unwrap().value);
    let first_sid = first["sid"].as_str().unwrap().to_owned();
    let sub = first["sub"].as_str().unwrap().to_owned();
    let mut kept = b.clone();

    // The same browser signs in again: the session whose cookies it held is
    // over, not left alive with a refresh token that only a copy still holds.
    let r = b.sign_in(&app, "again@example.com", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let second_sid = claims(&b.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first_sid, second_sid);
    let sessions = app
        .state
        .store
        .sessions_of(&sub, &PageRequest::first(1000))
        .await
        .unwrap();
    let live: Vec<&str> = sessions
        .iter()
        .filter(|s| s.revoked_at.is_none())
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(live, [second_sid.as_str()], "only the new session lives");
    let r = kept.get("/auth/refresh?return_to=/auth/devices").await;
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/auth/signin?return_to=/auth/devices"
        ),
        "the earlier refresh cookie is refused"
    );
    assert_eq!(b.get("/auth/devices").await.status, 200, "still signed in");

    // Another browser's sign-in leaves this one's session alone.
    let mut other = Browser::new(&app);
    other.sign_in(&app, "again@example.com", "/").await;
    assert_eq!(b.get("/auth/devices").await.status, 200);
}

/// Signed in as another account from the same browser, the first account's
/// session ended too: it was left alive (found only by the new user's
/// sessions), its refresh token in nobody's hands but a copy's. Another
/// browser's session of the first account stays.
#[tokio::test]
async fn signing_in_as_another_user_ends_the_first_users_session_in_that_browser() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "first@example.com", "/").await;
    let first = claims(&b.cookie(ACCESS).unwrap().value);
    let first_sub = first["sub"].as_str().unwrap().to_owned();
    let mut kept = b.clone();
    let mut elsewhere = Browser::new(&app);
    elsewhere.sign_in(&app, "first@example.com", "/").await;
    Browser::new(&app)
        .sign_up_and_in(&app, "second@example.com", "/")
        .await;

    let r = b.sign_in(&app, "second@example.com", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let live: Vec<String> = app
        .state
        .store
        .sessions_of(&first_sub, &PageRequest::first(1000))
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.revoked_at.is_none())
        .map(|s| s.id)
        .collect();
    let elsewhere_sid = claims(&elsewhere.cookie(ACCESS).unwrap().value)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        live,
        [elsewhere_sid],
        "only the other browser's session lives"
    );
    let r = kept.get("/auth/refresh?return_to=/auth/devices").await;
    assert_eq!(
        r.location(),
        "/auth/signin?return_to=/auth/devices",
        "the first account's refresh cookie is refused"
    );
    assert_eq!(
        b.get("/auth/devices").await.status,
        200,
        "signed in as the second"
    );
    assert_eq!(elsewhere.get("/auth/devices").await.status, 200);
}

/// A page's path asked with a method it does not take (a `GET` of a form's
/// action, a link to `/auth/logout-all`) is answered under the pages' own
/// headers too, not as the API's bare JSON 405: never framed, no referrer,
/// its own CSP.
#[tokio::test]
async fn a_method_a_page_does_not_take_gets_the_pages_headers() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    for path in [
        "/auth/logout-all",
        "/auth/devices/logout",
        "/auth/totp/confirm",
        "/auth/signup/sent",
    ] {
        let req = if path == "/auth/signup/sent" {
            b.http.post(format!("{}{path}", b.base))
        } else {
            b.http.get(format!("{}{path}", b.base))
        };
        let r = b.send(req, path).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_page_headers(&r, path);
        assert_eq!(
            r.headers
                .get("x-frame-options")
                .map(|v| v.to_str().unwrap()),
            Some("DENY"),
            "{path}"
        );
        assert!(r.headers.get("allow").is_some(), "{path}");
    }
}

/// A reset clears this browser's session cookies; when the browser was
/// signed in as someone else than the account reset (another account of
/// theirs, or a reset link someone else sent them), that session must end
/// with its cookies: otherwise it lives on, listed on the account's devices
/// page and refreshable by any copy of its refresh token, while the browser
/// that held it has dropped the device cookie that a later sign-in would
/// have ended it by.
#[tokio::test]
async fn a_reset_in_a_browser_signed_in_as_another_user_ends_that_session_too() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_up_and_in(&app, "alice@example.com", "/").await;
    assert_eq!(b.get("/auth/devices").await.status, 200);
    let copy = b.clone();

    // Another account's reset link, opened and used in Alice's browser.
    app.verified_user("mallory@example.com").await;
    let before = app.outbox("mallory@example.com", 0).await.len();
    let mut m = Browser::new(&app);
    let r = m
        .submit(
            "/auth/password/forgot",
            "/auth/password/forgot",
            &[("email", "mallory@example.com")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mail = app.last_mail("mallory@example.com", before + 1).await;
    let body = mail["body"].as_str().unwrap();
    let link = body
        .lines()
        .find(|l| l.contains("/auth/password/reset?token="))
        .unwrap_or_else(|| panic!("{body}"));
    let path = link[link.find("/auth/").unwrap()..].to_owned();
    let token = hidden(&b.get(&path).await.body, "token");
    let r = b
        .submit(
            &path,
            "/auth/password/reset",
            &[("token", &token), ("password", "a brand new passphrase 42")],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/password/reset/done"),
        "{}",
        r.body
    );
    assert!(b.cookie(ACCESS).is_none() && b.cookie(DEVICE).is_none());

    // The cookies the browser was told to drop no longer open Alice's session.
    let mut copy = copy;
    let r = copy.get("/auth/devices").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the session is still live");
    let r = copy.get("/auth/refresh?return_to=%2Fapp").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/auth/signin?return_to=/app"),
        "its refresh token still works"
    );
}
