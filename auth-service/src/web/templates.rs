//! The pages' HTML. maud (over askama) because its templates are Rust: they
//! are checked by the compiler with the handlers, every interpolated value
//! is HTML-escaped, and there are no template files to ship or lose.
//!
//! Accessibility: `lang`, one `<h1>` naming the page, a `<label>` for every
//! input, `autocomplete` hints for password managers, errors in
//! `role="alert"`. No scripts: everything works with JavaScript off.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use authflow_contract::browser::REFRESH_PATH;

use crate::domain::password::MIN_CHARS;

pub const STYLESHEET_PATH: &str = "/auth/static/authflow.css";

pub fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · authflow" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

fn alert(error: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = error {
            p.alert role="alert" { (text) }
        }
    }
}

fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

fn return_field(return_to: &str) -> Markup {
    html! { input type="hidden" name="return_to" value=(return_to); }
}

/// A page that says why something was refused, with one link onwards.
pub fn refused(text: &str, link: (&str, &str)) -> Markup {
    html! {
        (alert(Some(text)))
        p { a href=(link.0) { (link.1) } }
    }
}

/// What every form shares: its id, where it posts, the CSRF token.
pub struct Form<'a> {
    pub csrf: &'a str,
    pub error: Option<&'a str>,
}

pub fn signin(f: &Form, email: &str, return_to: &str, signup_href: &str) -> Markup {
    html! {
        (alert(f.error))
        form #signin-form method="post" action="/auth/signin" {
            (csrf_field(f.csrf)) (return_field(return_to))
            label for="email" { "Email" }
            input #email type="email" name="email" value=(email) autocomplete="username" required maxlength="254";
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required maxlength="1024";
            button type="submit" { "Continue" }
        }
        p { a href=(signup_href) { "Create an account" } " · " a href="/auth/password/forgot" { "Forgot your password?" } }
    }
}

/// `method`: `email` (a mailed code) or `totp`.
pub fn code(f: &Form, method: &str, return_to: &str) -> Markup {
    let hint = if method == "totp" {
        "Enter the 6-digit code your authenticator app shows."
    } else {
        "We mailed you a 6-digit code. Enter it here."
    };
    html! {
        (alert(f.error))
        p #code-hint { (hint) }
        form #code-form method="post" action="/auth/signin/code" {
            (csrf_field(f.csrf)) (return_field(return_to))
            label for="code" { "Code" }
            input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" aria-describedby="code-hint" required maxlength="16";
            button type="submit" { "Sign in" }
        }
        p { a href="/auth/signin" { "Start again" } }
    }
}

pub fn signup(f: &Form, email: &str) -> Markup {
    html! {
        (alert(f.error))
        form #signup-form method="post" action="/auth/signup" {
            (csrf_field(f.csrf))
            label for="email" { "Email" }
            input #email type="email" name="email" value=(email) autocomplete="email" required maxlength="254";
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="new-password" aria-describedby="password-hint" required minlength=(MIN_CHARS) maxlength="1024";
            p #password-hint .hint { "At least " (MIN_CHARS) " characters." }
            button type="submit" { "Create account" }
        }
        p { "Have an account? " a href="/auth/signin" { "Sign in" } }
    }
}

/// A page that only tells something, with one link onwards.
pub fn message(text: &str, link: Option<(&str, &str)>) -> Markup {
    html! {
        p { (text) }
        @if let Some((href, label)) = link {
            p { a href=(href) { (label) } }
        }
    }
}

/// Where a navigation another site started to the refresh endpoint lands:
/// one button, so that only this site's own page rotates the refresh cookie.
pub fn refresh_continue(f: &Form, return_to: &str) -> Markup {
    html! {
        (alert(f.error))
        form #refresh-form method="post" action=(REFRESH_PATH) {
            (csrf_field(f.csrf)) (return_field(return_to))
            p { "You are signed in. Continue to the page you asked for." }
            button type="submit" { "Continue" }
        }
    }
}

/// The mailed verification link's page: one button, so that a mail
/// scanner opening the link confirms nothing.
pub fn verify(f: &Form, token: &str) -> Markup {
    html! {
        (alert(f.error))
        form #verify-form method="post" action="/auth/verify" {
            (csrf_field(f.csrf))
            input type="hidden" name="token" value=(token);
            p { "Confirm that this address is yours." }
            button type="submit" { "Confirm my address" }
        }
    }
}

pub fn forgot(f: &Form) -> Markup {
    html! {
        (alert(f.error))
        form #forgot-form method="post" action="/auth/password/forgot" {
            (csrf_field(f.csrf))
            label for="email" { "Email" }
            input #email type="email" name="email" autocomplete="email" required maxlength="254";
            button type="submit" { "Mail me a link" }
        }
    }
}

pub fn reset(f: &Form, token: &str) -> Markup {
    html! {
        (alert(f.error))
        form #reset-form method="post" action="/auth/password/reset" {
            (csrf_field(f.csrf))
            input type="hidden" name="token" value=(token);
            label for="password" { "New password" }
            input #password type="password" name="password" autocomplete="new-password" aria-describedby="password-hint" required minlength=(MIN_CHARS) maxlength="1024";
            p #password-hint .hint { "At least " (MIN_CHARS) " characters. Every device will be signed out." }
            button type="submit" { "Set password" }
        }
    }
}

/// One row of "your devices".
pub struct DeviceRow {
    pub session_id: String,
    pub user_agent: String,
    pub created: String,
    pub last_used: String,
    pub this_device: bool,
}

pub fn devices(f: &Form, email: &str, rows: &[DeviceRow]) -> Markup {
    html! {
        (alert(f.error))
        p { "Signed in as " strong { (email) } "." }
        table #devices {
            caption { "Where you are signed in" }
            thead { tr { th scope="col" { "Device" } th scope="col" { "Signed in" } th scope="col" { "Last used" } th scope="col" { span.visually-hidden { "Action" } } } }
            tbody {
                @for (n, row) in rows.iter().enumerate() {
                    tr.this-device[row.this_device] {
                        td { (row.user_agent) @if row.this_device { " " strong { "(this device)" } } }
                        td { (row.created) }
                        td { (row.last_used) }
                        td {
                            form id=(format!("device-logout-form-{n}")) method="post" action="/auth/devices/logout" {
                                (csrf_field(f.csrf))
                                input type="hidden" name="session" value=(row.session_id);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
            }
        }
        (logout_forms(f.csrf))
        p { a href="/auth/totp" { "Set up an authenticator app" } }
    }
}

/// "Log out of this device" and "Log out everywhere".
fn logout_forms(csrf: &str) -> Markup {
    html! {
        form #logout-form method="post" action="/auth/logout" {
            (csrf_field(csrf))
            button type="submit" { "Log out of this device" }
        }
        form #logout-all-form method="post" action="/auth/logout-all" {
            (csrf_field(csrf))
            button type="submit" { "Log out everywhere" }
        }
    }
}

pub fn logout(f: &Form) -> Markup {
    html! {
        (alert(f.error))
        (logout_forms(f.csrf))
        p { a href="/auth/devices" { "Your devices" } }
    }
}

/// `replacing`: the account has an authenticator already, so only a code
/// from it proves the owner (the password alone may be known).
pub fn totp_start(f: &Form, replacing: bool) -> Markup {
    html! {
        (alert(f.error))
        @if replacing {
            p { "Confirm it is you with a code from your current authenticator app before replacing it." }
            form #totp-password-form method="post" action="/auth/totp" {
                (csrf_field(f.csrf))
                label for="code" { "Code from your current app" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required maxlength="16";
                button type="submit" { "Continue" }
            }
            p { "Lost it? An administrator can remove it; sign-in codes then come by mail." }
        } @else {
            p { "Confirm it is you before setting up an authenticator app." }
            form #totp-password-form method="post" action="/auth/totp" {
                (csrf_field(f.csrf))
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required maxlength="1024";
                button type="submit" { "Continue" }
            }
        }
    }
}

/// The QR code (inline SVG: no image request, allowed by the CSP) and the
/// secret for manual entry, then the code that confirms it.
/// `enrolment`: the tag that lets this form's wrong code show the key again
/// (`web::totp::enrolment_tag`), carried only by the page that showed it.
pub fn totp_enrol(f: &Form, qr_svg: &str, secret: &str, enrolment: &str) -> Markup {
    html! {
        (alert(f.error))
        p { "Scan this code with your authenticator app, or enter the key by hand." }
        figure #totp-qr role="img" aria-label="QR code of the authenticator key" { (PreEscaped(qr_svg)) }
        p { "Key: " code #totp-secret { (secret) } }
        form #totp-form method="post" action="/auth/totp/confirm" {
            (csrf_field(f.csrf))
            input type="hidden" name="enrolment" value=(enrolment);
            label for="code" { "Code from the app" }
            input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required maxlength="16";
            button type="submit" { "Turn on" }
        }
    }
}
