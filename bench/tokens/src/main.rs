//! Writes the benchmark's key set and tokens into a directory:
//!
//! - `jwks.json`: the public keys (EdDSA `ed-1`, ES256 `es-1`, RS256 `rs-1`),
//! - `warm.txt`: one EdDSA token per user for a set of users who reuse them,
//! - `cold-<ALG>.txt`: distinct tokens per algorithm (each one new to a cache),
//! - `tampered-<ALG>.txt`: a token whose payload was changed after signing.
//!
//! Keys are generated on every run and never leave the temporary directory.
//!
//! Usage: authflow-bench-tokens DIR ISSUER AUDIENCE WARM COLD_EDDSA COLD_ES256 COLD_RS256

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jwt_simple::prelude::*;
use serde::Serialize;

#[derive(Serialize, Deserialize)]
struct Custom {
    sid: String,
    roles: Vec<String>,
    scope: String,
}

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
    let custom = Custom { sid: format!("s-{serial}"), roles: vec!["user".into()], scope: "read".into() };
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
}
