//! Tests over real HTTP against the real service and a fresh SQLite file
//! each. The same modules run on PostgreSQL in the `api_postgres` binary.

// Helpers outside `#[test]` functions fail loudly too (clippy.toml only covers test fns).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod addresses;
mod admin;
mod at_rest;
mod bounds;
mod browser;
mod cache_headers;
mod common;
mod dpop;
mod durability;
mod factors;
mod flows;
mod input;
mod key_withdrawal;
mod long_poll;
mod mail_limits;
mod openapi;
mod password_work;
mod races;
mod restarts;
mod retention;
mod second_factor;
mod service_accounts;
mod sessions;
mod slow_clients;
mod smtp_tls;
mod test_pki;
mod timing;
mod unverified_addresses;
mod upgrade;
mod vectors;

/// The database each test runs on: here a SQLite file in the test's data dir.
mod backend {
    pub async fn fresh_database_url() -> Option<String> {
        None
    }
}
