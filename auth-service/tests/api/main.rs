//! Tests over real HTTP against the real service and a fresh SQLite file each.

mod admin;
mod common;
mod durability;
mod flows;
mod input;
mod timing;
mod vectors;
