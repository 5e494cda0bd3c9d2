//! A proxy-wasm HTTP filter that lets every request through: what the Wasm
//! runtime alone costs per request (VM entry for the header and stream
//! callbacks), the floor any Wasm filter starts from.
//!
//! Its plugin configuration may name host calls to make on every request,
//! one per line, and nothing else (no decision, no parsing of what comes
//! back): the floor of a Wasm filter that must make those calls, e.g. read
//! `authorization` and remove it, which is `jwt_authn`'s job in the least
//! the proxy-wasm ABI allows.
//!
//! ```text
//! get authorization       one header by name (proxy_get_header_map_value)
//! get-all                 the whole header map (proxy_get_header_map_pairs)
//! remove authorization    (proxy_remove_header_map_value)
//! set x-auth-user alice   (proxy_replace_header_map_value)
//! ```

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { calls: Rc::new(Vec::new()) }) });
}}

enum HostCall {
    Get(String),
    GetAll,
    Remove(String),
    Set(String, String),
}

fn parse(config: &str) -> Option<Vec<HostCall>> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            match (words.next()?, words.next(), words.next()) {
                ("get", Some(name), None) => Some(HostCall::Get(name.to_owned())),
                ("get-all", None, None) => Some(HostCall::GetAll),
                ("remove", Some(name), None) => Some(HostCall::Remove(name.to_owned())),
                ("set", Some(name), Some(value)) => Some(HostCall::Set(name.to_owned(), value.to_owned())),
                _ => None,
            }
        })
        .collect()
}

struct NoopRoot {
    calls: Rc<Vec<HostCall>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match std::str::from_utf8(&config).ok().and_then(parse) {
            Some(calls) => {
                self.calls = Rc::new(calls);
                true
            }
            None => {
                log::error!("noop: the configuration is host calls, one a line: get NAME, get-all, remove NAME, set NAME VALUE");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop { calls: Rc::clone(&self.calls) }))
    }
}

struct Noop {
    calls: Rc<Vec<HostCall>>,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for call in self.calls.iter() {
            match call {
                HostCall::Get(name) => drop(self.get_http_request_header_bytes(name)),
                HostCall::GetAll => drop(self.get_http_request_headers_bytes()),
                HostCall::Remove(name) => self.set_http_request_header(name, None),
                HostCall::Set(name, value) => self.set_http_request_header(name, Some(value)),
            }
        }
        Action::Continue
    }
}
