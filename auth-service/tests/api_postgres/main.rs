//! The whole API suite of `tests/api` again, each test on a fresh database
//! of a throwaway PostgreSQL cluster (see `pg_cluster`), plus the tests that
//! only make sense with several instances on one database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../api/addresses.rs"]
mod addresses;
#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/at_rest.rs"]
mod at_rest;
#[path = "../api/bounds.rs"]
mod bounds;
#[path = "../api/browser.rs"]
mod browser;
#[path = "../api/cache_headers.rs"]
mod cache_headers;
#[path = "../api/common.rs"]
mod common;
mod db_restarts;
#[path = "../api/dpop.rs"]
mod dpop;
#[path = "../api/durability.rs"]
mod durability;
#[path = "../api/factors.rs"]
mod factors;
#[path = "../api/flows.rs"]
mod flows;
#[path = "../api/input.rs"]
mod input;
mod instances;
#[path = "../api/key_withdrawal.rs"]
mod key_withdrawal;
#[path = "../api/long_poll.rs"]
mod long_poll;
#[path = "../api/mail_limits.rs"]
mod mail_limits;
#[path = "../api/openapi.rs"]
mod openapi;
mod outages;
#[path = "../api/password_work.rs"]
mod password_work;
#[path = "../api/races.rs"]
mod races;
mod races_across_instances;
mod relay;
#[path = "../api/restarts.rs"]
mod restarts;
#[path = "../api/retention.rs"]
mod retention;
#[path = "../api/second_factor.rs"]
mod second_factor;
#[path = "../api/service_accounts.rs"]
mod service_accounts;
#[path = "../api/sessions.rs"]
mod sessions;
mod slow_link;
#[path = "../api/timing.rs"]
mod timing;
#[path = "../api/unverified_addresses.rs"]
mod unverified_addresses;
#[path = "../api/upgrade.rs"]
mod upgrade;
#[path = "../api/vectors.rs"]
mod vectors;

mod pg_cluster;
#[path = "../api/test_pki.rs"]
mod test_pki;
mod tls;

/// The database each test runs on: a new database on the test cluster.
mod backend {
    pub async fn fresh_database_url() -> Option<String> {
        Some(crate::pg_cluster::fresh_database().await)
    }
}
