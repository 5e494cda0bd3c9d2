//! Test doubles shared by the integration tests.

use std::cell::RefCell;
use std::collections::HashMap;

use authflow_filter_core::shared_slot::SharedData;

/// One Envoy process's shared data, with the host's compare-and-swap rules:
/// a key that exists is written only with its current token or 0, an absent
/// one whatever the token.
#[derive(Default)]
pub struct Process(pub RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedData for Process {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
        Some(
            self.0
                .borrow()
                .get(key)
                .map_or((None, 0), |(v, c)| (Some(v.clone()), *c)),
        )
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let mut map = self.0.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        if current.is_some_and(|c| cas != 0 && cas != c) {
            return false;
        }
        map.insert(key.into(), (value.to_vec(), current.unwrap_or(0) + 1));
        true
    }
}
