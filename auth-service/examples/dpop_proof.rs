//! A minimal DPoP client (RFC 9449): prints a fresh proof for one request,
//! signed with a P-256 key kept in a file (created on first use, owner-only).
//!
//! ```sh
//! cargo run -q -p authflow-auth-service --example dpop_proof -- --key dpop-key.json \
//!     POST http://127.0.0.1:8081/v1/auth/refresh
//! # for a request with a bound access token, and with a server nonce:
//! ... --example dpop_proof -- --key dpop-key.json GET https://api.example.com/items --access-token "$AT" --nonce "$N"
//! ```

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;
use sha2::{Digest, Sha256};

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

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key in `path`, or a new one written there.
fn load_or_create(path: &PathBuf) -> Result<SigningKey, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let stored: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let d = stored["d"].as_str().and_then(|d| URL_SAFE_NO_PAD.decode(d).ok()).ok_or("the key file has no `d`")?;
        return SigningKey::from_slice(&d).map_err(|e| e.to_string());
    }
    let key = SigningKey::from_slice(&rand::random::<[u8; 32]>()).map_err(|e| e.to_string())?;
    std::fs::write(path, json!({"d": b64(key.to_bytes())}).to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let key = load_or_create(&args.key)?;
    let point = key.verifying_key().to_sec1_point(false);
    let xy = point.as_bytes().get(1..65).ok_or("unexpected point encoding")?;
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&xy[..32]), "y": b64(&xy[32..])});
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let mut claims = json!({"jti": b64(rand::random::<[u8; 16]>()), "htm": args.method, "htu": args.url, "iat": iat});
    if let Some(token) = &args.access_token {
        claims["ath"] = json!(b64(Sha256::digest(token.as_bytes())));
    }
    if let Some(nonce) = &args.nonce {
        claims["nonce"] = json!(nonce);
    }
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature: Signature = key.sign(input.as_bytes());
    println!("{input}.{}", b64(signature.to_bytes()));
    Ok(())
}
