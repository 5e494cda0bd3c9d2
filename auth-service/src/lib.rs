//! The authflow auth service: issues what the filter verifies (see the
//! contract crate) and feeds it keys and revocations.

pub mod audit;
pub mod background;
pub mod client_assertion;
pub mod clock;
pub mod config;
pub mod domain;
pub mod dpop;
pub mod email_upgrade;
pub mod error;
pub mod extract;
pub mod feed;
pub mod feed_notify;
pub mod kek;
pub mod keys;
pub mod mail_budget;
pub mod mailer;
pub mod metrics;
pub mod openapi;
pub mod password_work;
pub mod refresh_tokens;
pub mod routes;
pub mod service_accounts;
pub mod sessions;
pub mod signin_codes;
pub mod startup;
pub mod state;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod web;
