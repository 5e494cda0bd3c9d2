//! A minimal DPoP client (RFC 9449): prints a fresh proof for one request,
//! signed with a P-256 key kept in a file (created on first use, owner-only),
//! made by the contract's proof maker (`authflow_contract::dpop::client`).
//!
//! ```sh
//! cargo run -q -p authflow-auth-service --example dpop_proof -- --key dpop-key.json \
//!     POST http://127.0.0.1:8081/v1/auth/refresh
//! # for a request with a bound access token, and with a server nonce:
//! ... --example dpop_proof -- --key dpop-key.json GET https://api.example.com/items --access-token "$AT" --nonce "$N"
//! ```

use std::path::PathBuf;

use authflow_contract::dpop::client::ProofKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The key file (JSON `{"d": base64url}`); created when missing.
    #[arg(long)]
    key: PathBuf,
    /// The request method (`htm`).
    method: String,
    /// The request URL (`htu`): for the auth service, its issuer + the path.
    url: String,
    /// The access token sent with the request (adds `ath`).
    #[arg(long)]
    access_token: Option<String>,
    /// The server nonce from a `DPoP-Nonce` header.
    #[arg(long)]
    nonce: Option<String>,
}

/// The P-256 private scalar in `path`, or a new one written there (owner-only).
fn load_or_create(path: &PathBuf) -> Result<[u8; 32], String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let stored: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let d = stored["d"]
            .as_str()
            .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
            .ok_or("the key file has no `d`")?;
        return d.try_into().map_err(|_| "`d` is not 32 bytes".to_owned());
    }
    let d: [u8; 32] = rand::random();
    // Created owner-only (never readable by others, not even for a moment), and never over another file.
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(
        &mut file,
        json!({"d": URL_SAFE_NO_PAD.encode(d)})
            .to_string()
            .as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(d)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let key = ProofKey::es256(&load_or_create(&args.key)?);
    let proof = key.proof_with(
        &args.method,
        &args.url,
        args.access_token.as_deref(),
        |claims| {
            if let Some(nonce) = &args.nonce {
                claims["nonce"] = json!(nonce);
            }
        },
    );
    println!("{proof}");
    Ok(())
}
