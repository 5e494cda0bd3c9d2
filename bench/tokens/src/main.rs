//! Writes the benchmark's key set and tokens into a directory:
//!
//! - `jwks.json`: the public keys (EdDSA `ed-1`, ES256 `es-1`, RS256 `rs-1`),
//! - `warm.txt`: one EdDSA token per user for a set of users who reuse them,
//! - `cold-<ALG>.txt`: distinct tokens per algorithm (each one new to a cache),
//! - `tampered-<ALG>.txt`: a token whose payload was changed after signing,
//! - `dpop-<ALG>.seed` and `dpop-token-<ALG>.txt` (ALG: ES256, EdDSA): a DPoP
//!   client's proof key and an EdDSA access token bound to it (`cnf.jkt`).
//!
//! The second form writes fresh DPoP proofs of one of those keys, one per
//! line: each a new `jti`, `iat` spread over the last `SPREAD` seconds (so
//! the filter's replay store files them over several time buckets, as
//! requests arriving over that time would be).
//!
//! Keys are generated on every run and never leave the temporary directory.
//!
//! Usage: authflow-bench-tokens DIR ISSUER AUDIENCE WARM COLD_EDDSA COLD_ES256 COLD_RS256
//!        authflow-bench-tokens proofs DIR ALG HTU COUNT SPREAD OUT

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use authflow_contract::dpop::client::ProofKey;
use jwt_simple::prelude::*;
use serde::Serialize;

#[derive(Serialize, Deserialize)]
struct Custom {
    sid: String,
    roles: Vec<String>,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Cnf>,
}

/// RFC 9449 §6.1: the key thumbprint a DPoP-bound token is bound to.
#[derive(Serialize, Deserialize)]
struct Cnf {
    jkt: String,
}

/// The DPoP proof algorithms the benchmark exercises.
const DPOP_ALGS: [&str; 2] = ["ES256", "EdDSA"];

#[derive(Clone, Copy)]
enum Alg {
    Ed,
    Es,
    Rs,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Ed => "EdDSA",
            Alg::Es => "ES256",
            Alg::Rs => "RS256",
        }
    }
}

struct Keys {
    ed: Ed25519KeyPair,
    es: ES256KeyPair,
    rs: RS256KeyPair,
}

fn claims(issuer: &str, audience: &str, user: &str, serial: &str) -> JWTClaims<Custom> {
    let custom = Custom { sid: format!("s-{serial}"), roles: vec!["user".into()], scope: "read".into(), cnf: None };
    let mut c = Claims::with_custom_claims(custom, Duration::from_hours(2))
        .with_issuer(issuer)
        .with_subject(user)
        .with_audience(audience)
        .with_jwt_id(format!("j-{serial}"));
    // A few seconds in the past, so no clock rounding makes it "issued in the future".
    let now = jwt_simple::reexports::coarsetime::Clock::now_since_epoch();
    c.issued_at = Some(now - Duration::from_secs(5));
    c
}

fn sign(keys: &Keys, alg: Alg, c: JWTClaims<Custom>) -> String {
    let r = match alg {
        Alg::Ed => keys.ed.sign(c),
        Alg::Es => keys.es.sign(c),
        Alg::Rs => keys.rs.sign(c),
    };
    r.unwrap_or_else(|e| fail(&format!("signing: {e}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("authflow-bench-tokens: {msg}");
    std::process::exit(1)
}

/// `count` tokens signed with `alg`, spread over the machine's cores.
fn many(keys: &Keys, alg: Alg, issuer: &str, audience: &str, prefix: &str, count: usize, users: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let chunk = count.div_ceil(threads).max(1);
    let mut out = vec![String::new(); count];
    std::thread::scope(|s| {
        for (t, slot) in out.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (i, tok) in slot.iter_mut().enumerate() {
                    let n = t * chunk + i;
                    let user = format!("user-{}", n % users.max(1));
                    *tok = sign(keys, alg, claims(issuer, audience, &user, &format!("{prefix}-{n}")));
                }
            });
        }
    });
    out
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    std::fs::write(dir.join(name), s).unwrap_or_else(|e| fail(&format!("{name}: {e}")));
}

/// Same header and signature, payload changed (`sub` swapped): must fail the signature check.
fn tamper(token: &str) -> String {
    use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
    let parts: Vec<&str> = token.split('.').collect();
    let payload = Base64UrlSafeNoPadding::decode_to_vec(parts[1], None).unwrap_or_else(|_| fail("payload"));
    let text = String::from_utf8(payload).unwrap_or_else(|_| fail("payload utf-8"));
    let changed = text.replacen("\"sub\":\"user-", "\"sub\":\"admin-", 1);
    let enc = Base64UrlSafeNoPadding::encode_to_string(changed.as_bytes()).unwrap_or_else(|_| fail("encode"));
    format!("{}.{}.{}", parts[0], enc, parts[2])
}

/// A DPoP client key of `alg` from its seed.
fn proof_key(alg: &str, seed: &[u8; 32]) -> ProofKey {
    match alg {
        "ES256" => ProofKey::es256(seed),
        "EdDSA" => ProofKey::ed25519(seed),
        other => fail(&format!("no DPoP proofs with {other}")),
    }
}

fn seed_path(dir: &Path, alg: &str) -> PathBuf {
    dir.join(format!("dpop-{alg}.seed"))
}

/// Per DPoP algorithm: a new client key (its seed kept for `proofs`) and a
/// warm EdDSA access token bound to it.
fn dpop_clients(dir: &Path, keys: &Keys, issuer: &str, audience: &str) {
    for alg in DPOP_ALGS {
        // Random and a valid P-256 scalar: the low half of a random key's bytes
        // is below the group order with overwhelming probability; retry otherwise.
        let seed: [u8; 32] = loop {
            let candidate = Ed25519KeyPair::generate().to_bytes();
            let mut s = [0u8; 32];
            s.copy_from_slice(&candidate[..32]);
            if s[0] < 0xff {
                break s;
            }
        };
        let key = proof_key(alg, &seed);
        std::fs::write(seed_path(dir, alg), seed).unwrap_or_else(|e| fail(&format!("seed: {e}")));
        let mut c = claims(issuer, audience, "user-dpop", &format!("dpop-{alg}"));
        c.custom.cnf = Some(Cnf { jkt: key.jkt() });
        write_lines(dir, &format!("dpop-token-{alg}.txt"), &[sign(keys, Alg::Ed, c)]);
    }
}

/// `proofs DIR ALG HTU COUNT SPREAD OUT`: fresh proofs for `GET HTU` with the
/// bound token's `ath`, signed over the machine's cores.
fn proofs(args: &[String]) {
    let [dir, alg, htu, count, spread, out] = args else {
        fail("usage: proofs DIR ALG HTU COUNT SPREAD OUT");
    };
    let dir = PathBuf::from(dir);
    let n = |s: &str| s.parse::<u64>().unwrap_or_else(|_| fail(&format!("`{s}` is not a count")));
    let (count, spread) = (n(count) as usize, n(spread).max(1));
    let seed: [u8; 32] = std::fs::read(seed_path(&dir, alg))
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| fail("no DPoP key seed: run the first form first"));
    let key = proof_key(alg, &seed);
    let token = std::fs::read_to_string(dir.join(format!("dpop-token-{alg}.txt"))).unwrap_or_else(|e| fail(&format!("token: {e}")));
    let token = token.trim();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let chunk = count.div_ceil(threads).max(1);
    let mut lines = vec![String::new(); count];
    std::thread::scope(|s| {
        for (t, slot) in lines.chunks_mut(chunk).enumerate() {
            let key = &key;
            s.spawn(move || {
                for (i, line) in slot.iter_mut().enumerate() {
                    let iat = now - ((t * chunk + i) as u64 % spread);
                    *line = key.proof_with("GET", htu, Some(token), |c| c["iat"] = iat.into());
                }
            });
        }
    });
    write_lines(Path::new("."), out, &lines);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proofs") {
        return proofs(&args[2..]);
    }
    if args.len() != 8 {
        fail("usage: DIR ISSUER AUDIENCE WARM COLD_EDDSA COLD_ES256 COLD_RS256");
    }
    let dir = PathBuf::from(&args[1]);
    let (issuer, audience) = (&args[2], &args[3]);
    let n = |i: usize| args[i].parse::<usize>().unwrap_or_else(|_| fail(&format!("`{}` is not a count", args[i])));
    let (warm, cold_ed, cold_es, cold_rs) = (n(4), n(5), n(6), n(7));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));

    let keys = Keys {
        ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
        es: ES256KeyPair::generate().with_key_id("es-1"),
        rs: RS256KeyPair::generate(2048).unwrap_or_else(|e| fail(&format!("RSA key: {e}"))).with_key_id("rs-1"),
    };
    let jwks = format!(
        r#"{{"keys":[{},{},{}]}}"#,
        keys.ed.public_key().to_jwk(),
        keys.es.public_key().to_jwk(),
        keys.rs.public_key().to_jwk()
    );
    // Round-trip check: the document is JSON with three keys.
    let doc: serde_json::Value = serde_json::from_str(&jwks).unwrap_or_else(|e| fail(&format!("jwks: {e}")));
    if doc["keys"].as_array().map(Vec::len) != Some(3) {
        fail("jwks: expected three keys");
    }
    std::fs::write(dir.join("jwks.json"), &jwks).unwrap_or_else(|e| fail(&format!("jwks.json: {e}")));

    let warm_tokens = many(&keys, Alg::Ed, issuer, audience, "warm", warm, warm);
    write_lines(&dir, "warm.txt", &warm_tokens);
    for (alg, count) in [(Alg::Ed, cold_ed), (Alg::Es, cold_es), (Alg::Rs, cold_rs)] {
        let tokens = many(&keys, alg, issuer, audience, &format!("cold-{}", alg.name()), count, 1000);
        write_lines(&dir, &format!("cold-{}.txt", alg.name()), &tokens);
        let one = sign(&keys, alg, claims(issuer, audience, "user-0", &format!("tampered-{}", alg.name())));
        write_lines(&dir, &format!("tampered-{}.txt", alg.name()), &[tamper(&one)]);
    }
    dpop_clients(&dir, &keys, issuer, audience);
}
