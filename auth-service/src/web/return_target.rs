//! Where a page sends the browser back to: every `return_to` the pages
//! receive (query or form field) goes through the contract's one check
//! (`authflow_contract::return_to`: a same-origin path, else `/`), the same
//! the filter applies when it sends a browser here.

use authflow_contract::return_to;

/// The validated target of a posted `return_to` field (`/` when absent or unsafe).
pub fn target(raw: Option<&str>) -> String {
    raw.map_or(return_to::DEFAULT, return_to::or_root)
        .to_owned()
}

/// The validated `return_to` of a request's query string.
pub fn from_query(query: Option<&str>) -> String {
    return_to::from_query(query.unwrap_or(""))
}

/// `path?return_to=<target>` for the pages' own redirects (just `path` for `/`).
pub fn with_return_to(path: &str, target: &str) -> String {
    if target == return_to::DEFAULT {
        path.to_owned()
    } else {
        return_to::location(path, target)
    }
}
