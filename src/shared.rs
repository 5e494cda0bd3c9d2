//! State shared by every worker VM of the plugin through proxy-wasm shared
//! data (each Envoy worker runs its own VM; a field of the root context is
//! per worker):
//!
//! - **Fetched documents** (keys, revocations): one worker fetches under a
//!   lease and publishes, the others take its copy
//!   ([`authflow_filter_core::shared_slot`]; [`SharedSlot`] here is it on the host).
//! - **Replay store**: DPoP proofs accepted, written with compare-and-swap
//!   ([`record_proof_once`]).
//! - **DPoP nonce key** of the process, when none comes from the
//!   environment: the first VM that finds none writes a random one
//!   ([`process_nonce_key`]).

use authflow_contract::dpop::DpopError;
use authflow_filter_core::dpop::ProofUse;
use authflow_filter_core::shared_slot::{self, NotPublished, SharedData};
use authflow_filter_core::timing::{self, Piece};
use authflow_filter_core::{nonce, replay};

use crate::host;

/// A fetched document's slot in the host's shared data.
pub struct SharedSlot(shared_slot::SharedSlot);

impl SharedSlot {
    /// `prefix`: what the shared document is (`authflow_filter_core::fetch::shared_key`).
    pub fn new(prefix: String) -> Self {
        SharedSlot(shared_slot::SharedSlot::new(prefix))
    }

    /// Tries to hold the fetch lease until `now_ms + ttl_ms`. True: this VM fetches.
    pub fn acquire_lease(&self, vm_id: u64, now_ms: u64, ttl_ms: u64) -> bool {
        self.0.acquire_lease(&HostSharedData, vm_id, now_ms, ttl_ms)
    }

    /// Publishes `data` for the other VMs, unless another VM published since
    /// this one last looked (then this VM takes that copy on its next look).
    pub fn publish(&mut self, data: &[u8], vm_id: u64, now_ms: u64) -> bool {
        match self.0.publish(&HostSharedData, data, vm_id, now_ms) {
            Ok(()) => true,
            Err(NotPublished::Superseded) => {
                log::info!("authflow: a newer shared copy stands");
                false
            }
            Err(NotPublished::Host) => {
                log::warn!("authflow: could not share a fetched document");
                false
            }
        }
    }

    /// The published data, if it changed since this VM last looked.
    pub fn take_if_changed(&mut self) -> Option<Vec<u8>> {
        self.0.take_if_changed(&HostSharedData)
    }

    /// Takes the published data again on the next look, changed or not;
    /// the next publication goes over whatever is published.
    pub fn forget_seen(&mut self) {
        self.0.forget_seen();
    }

    /// A small side value (e.g. a timestamp) under `…:<name>`.
    pub fn set_value(&self, name: &str, value: &[u8]) {
        self.0.set_value(&HostSharedData, name, value);
    }

    pub fn value(&self, name: &str) -> Option<Vec<u8>> {
        self.0.value(&HostSharedData, name)
    }
}

/// The host's shared data, as the replay store reads and writes it.
struct HostSharedData;

impl SharedData for HostSharedData {
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
    timing::timed(Piece::ReplayStore, || {
        replay::record_once(&HostSharedData, proof)
    })
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
    host::shared_get(nonce::SHARED_DATA_KEY)?
        .0
        .filter(|bytes| nonce::from_shared(bytes).is_some())
}
