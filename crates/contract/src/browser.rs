//! Browser sign-in: the cookie names and paths the auth service's pages set
//! and the filter (and the shipped configurations) read — one spelling.

/// The access token. `__Host-`: Secure, `Path=/`, no `Domain`, so no other
/// host (or a sibling subdomain) can plant one.
pub const ACCESS_COOKIE: &str = "__Host-authflow-access";

/// The rotating refresh token, sent only to [`REFRESH_PATH`].
pub const REFRESH_COOKIE: &str = "__Secure-authflow-refresh";

/// Where the filter sends a browser whose access token is missing or
/// expired; the service rotates the refresh cookie there and sends it back.
pub const REFRESH_PATH: &str = "/auth/refresh";

/// Where a browser signs in (the service's page).
pub const SIGNIN_PATH: &str = "/auth/signin";

/// The pending sign-in's challenge, between the password and the code pages.
/// The service's alone: the filter keeps it from every other backend.
pub const CHALLENGE_COOKIE: &str = "__Host-authflow-challenge";

/// The per-browser CSRF value of the service's forms. The service's alone,
/// as [`CHALLENGE_COOKIE`]: `__Host-` makes both `Path=/`, so a browser
/// sends them to every backend of the host.
pub const CSRF_COOKIE: &str = "__Host-authflow-csrf";

/// Whether the browser's `Sec-Fetch-Mode` and `Sec-Fetch-Dest` values say a
/// top-level page load (`navigate`, `document`): not an image, a style
/// sheet, a frame or a script's request some page made. One absent (an
/// older browser) says nothing against it.
pub fn is_page_load(mode: Option<&[u8]>, dest: Option<&[u8]>) -> bool {
    mode.is_none_or(|m| m == b"navigate") && dest.is_none_or(|d| d == b"document")
}

/// The device secret: the one cookie the token's fingerprint binds to.
pub use crate::fingerprint::DEVICE_COOKIE;
