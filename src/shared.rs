//! State shared by every worker VM of the plugin through proxy-wasm shared
//! data (each Envoy worker runs its own VM; a field of the root context is
//! per worker). Two patterns:
//!
//! - **Lease**: the VM that wins a compare-and-swap on `…:lease` does the
//!   periodic fetch, so one Envoy process polls the auth service once per
//!   interval, not once per worker. A lease not renewed in time (its holder
//!   stalled) is taken over by the next VM that looks.
//! - **Publication**: the fetched document goes into `…:data`, then a small
//!   `…:version` key changes; other VMs read only the version on each tick
//!   and copy the (possibly large) data only when it moved.
//! - **Replay store**: DPoP proofs accepted, written with compare-and-swap
//!   ([`record_proof_once`]).
//! - **DPoP nonce key** of the process, when none comes from the
//!   environment: the first VM that finds none writes a random one
//!   ([`process_nonce_key`]).

use authflow_contract::dpop::DpopError;
use authflow_filter_core::dpop::ProofUse;
use authflow_filter_core::timing::{self, Piece};
use authflow_filter_core::{lease, nonce, replay};

use crate::host;

pub struct SharedSlot {
    prefix: String,
    seen_version: Option<Vec<u8>>,
}

impl SharedSlot {
    /// `prefix`: what the shared document is (`authflow_filter_core::fetch::shared_key`).
    pub fn new(prefix: String) -> Self {
        SharedSlot { prefix, seen_version: None }
    }

    /// Tries to hold the fetch lease until `now_ms + ttl_ms`. True: this VM fetches.
    pub fn acquire_lease(&self, vm_id: u64, now_ms: u64, ttl_ms: u64) -> bool {
        let key = format!("{}:lease", self.prefix);
        let Some((current, cas)) = host::shared_get(&key) else {
            return false;
        };
        let Some(current) = current else {
            // The host writes a key that does not exist whatever the cas,
            // so two VMs could both take a lease never written: create it
            // free, and claim it on a later look with compare-and-swap.
            let _ = host::shared_set(&key, &[], 0);
            return false;
        };
        let Some(value) = lease::claim(Some(&current), vm_id, now_ms, ttl_ms) else {
            return false;
        };
        host::shared_set(&key, value.as_bytes(), cas).is_ok()
    }

    /// Publishes `data` for the other VMs.
    pub fn publish(&mut self, data: &[u8], vm_id: u64, now_ms: u64) {
        let data_key = format!("{}:data", self.prefix);
        if let Err(status) = host::shared_set(&data_key, data, 0) {
            log::warn!("authflow: could not share {}: status {status}", self.prefix);
            return;
        }
        let version = format!("{vm_id}:{now_ms}:{}", data.len()).into_bytes();
        let _ = host::shared_set(&format!("{}:version", self.prefix), &version, 0);
        self.seen_version = Some(version);
    }

    /// The published data, if it changed since this VM last looked.
    pub fn take_if_changed(&mut self) -> Option<Vec<u8>> {
        let (version, _) = host::shared_get(&format!("{}:version", self.prefix))?;
        let version = version?;
        if self.seen_version.as_ref() == Some(&version) {
            return None;
        }
        let (data, _) = host::shared_get(&format!("{}:data", self.prefix))?;
        self.seen_version = Some(version);
        data
    }

    /// Takes the published data again on the next look, changed or not.
    pub fn forget_seen(&mut self) {
        self.seen_version = None;
    }

    /// A small side value (e.g. a timestamp) under `…:<name>`.
    pub fn set_value(&self, name: &str, value: &[u8]) {
        let _ = host::shared_set(&format!("{}:{name}", self.prefix), value, 0);
    }

    pub fn value(&self, name: &str) -> Option<Vec<u8>> {
        host::shared_get(&format!("{}:{name}", self.prefix))?.0
    }
}

/// The host's shared data, as the replay store reads and writes it.
struct HostSharedData;

impl replay::SharedData for HostSharedData {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
        host::shared_get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        host::shared_set(key, value, cas).is_ok()
    }
}

/// Creates the DPoP replay store's slots before this VM records any proof
/// (`authflow_filter_core::replay::create_slots`: only then is every write
/// compare-and-swapped).
pub fn create_replay_slots() {
    replay::create_slots(&HostSharedData);
}

/// Records a DPoP proof in the replay store shared by every worker VM
/// (`authflow_filter_core::replay::record_once`): `Ok` the first time, the
/// refusal after.
pub fn record_proof_once(proof: &ProofUse) -> Result<(), DpopError> {
    timing::timed(Piece::ReplayStore, || replay::record_once(&HostSharedData, proof))
}

/// The raw DPoP nonce key every worker of this Envoy process uses, made
/// here if no worker made one yet; `(key, made_here)`. Creating a missing
/// shared value cannot be compare-and-swapped, so two workers starting
/// together may both write: each VM re-reads the key on every tick and
/// adopts the one that stayed.
pub fn process_nonce_key() -> Option<(Vec<u8>, bool)> {
    if let Some(key) = stored_nonce_key() {
        return Some((key, false));
    }
    let mut fresh = vec![0u8; authflow_contract::dpop::nonce::MIN_KEY_BYTES];
    if !host::random_bytes(&mut fresh) {
        return None;
    }
    host::shared_set(nonce::SHARED_DATA_KEY, &fresh, 0).ok()?;
    Some((fresh, true))
}

/// The process's nonce key as stored in shared data, if it is one.
pub fn stored_nonce_key() -> Option<Vec<u8>> {
    host::shared_get(nonce::SHARED_DATA_KEY)?.0.filter(|bytes| nonce::from_shared(bytes).is_some())
}
