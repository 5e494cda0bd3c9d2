//! Where this VM's DPoP nonce key comes from (`authflow_filter_core::nonce`):
//! the environment variable named by `dpop_nonce_key_env`, so every replica
//! issues and accepts the same nonces; else one random key per Envoy
//! process, shared by its workers through shared data.

use authflow_contract::dpop::NonceKey;
use authflow_filter_core::{nonce, Engine};

use crate::shared;

pub enum NonceKeySource {
    /// No provider requires nonces.
    NotNeeded,
    /// From the environment, read once at configuration.
    Environment,
    /// The process's random key; `seen` is the one the engine has.
    PerProcess { seen: Vec<u8> },
}

impl NonceKeySource {
    /// Gives `engine` its key. `Err` is the log line of a configuration
    /// that cannot serve (no usable key).
    pub fn configure(engine: &mut Engine) -> Result<NonceKeySource, String> {
        if !nonce::needed(&engine.config) {
            return Ok(NonceKeySource::NotNeeded);
        }
        if let Some(name) = engine.config.dpop_nonce_key_env.clone() {
            let text = std::env::var(&name).map_err(|_| {
                format!("dpop_nonce_key_env: the Wasm VM has no environment variable {name} (pass it with vm_config.environment_variables.host_env_keys)")
            })?;
            let key = nonce::parse_key(&text).map_err(|e| format!("dpop_nonce_key_env: {name} is not a usable key: {e} (use base64 of 32 random bytes)"))?;
            engine.set_nonce_key(key);
            return Ok(NonceKeySource::Environment);
        }
        let (bytes, made_here) = shared::process_nonce_key()
            .ok_or("dpop_nonce: could not make or read this process's nonce key")?;
        if made_here {
            log::info!(
                "authflow: DPoP nonce key made at random, one per replica (dpop_nonce_key_env shares one)"
            );
        }
        adopt(engine, &bytes);
        Ok(NonceKeySource::PerProcess { seen: bytes })
    }

    /// On every tick: adopts the process's key if another worker's write won.
    pub fn refresh(&mut self, engine: &mut Engine) {
        if let NonceKeySource::PerProcess { seen } = self {
            if let Some(stored) = shared::stored_nonce_key().filter(|stored| stored != seen) {
                adopt(engine, &stored);
                *seen = stored;
            }
        }
    }
}

fn adopt(engine: &mut Engine, bytes: &[u8]) {
    if let Some(key) = NonceKey::new(bytes) {
        engine.set_nonce_key(key);
    }
}
