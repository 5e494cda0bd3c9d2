//! Fixtures shared by the fuzz targets in `fuzz_targets/`: fixed keys (so a
//! checked-in corpus stays meaningful from run to run), the realistic filter
//! configuration the request target decides with, and token construction.
//!
//! Everything here is deterministic: the same input always produces the same
//! tokens, so a crash reproduces from its input file alone.

pub mod decision;
pub mod json_names;
