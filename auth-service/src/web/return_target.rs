//! Where a page sends the browser back to: every `return_to` the pages
//! receive goes through the contract's one check (same-origin path, else `/`).

use authflow_contract::return_to;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// The validated target of a received `return_to` (`/` when absent or unsafe).
pub fn target(raw: Option<&str>) -> String {
    raw.map_or(return_to::DEFAULT, return_to::or_root).to_owned()
}

/// `path?return_to=<target>` for the pages' own links and redirects.
pub fn with_return_to(path: &str, target: &str) -> String {
    if target == return_to::DEFAULT {
        path.to_owned()
    } else {
        format!("{path}?{}={}", return_to::PARAM, utf8_percent_encode(target, NON_ALPHANUMERIC))
    }
}
