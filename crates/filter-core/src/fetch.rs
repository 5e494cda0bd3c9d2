//! The background fetch of one provider's documents (its key set and its
//! revocation list), as pure decisions the proxy-wasm glue carries out.

use crate::config::Upstream;

/// The two documents a provider fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Jwks,
    Revocations,
}

impl Document {
    pub fn label(self) -> &'static str {
        match self {
            Document::Jwks => "jwks",
            Document::Revocations => "revocations",
        }
    }
}

/// The name under which every worker VM of one Envoy shares a fetched
/// document (and the lease to fetch it). It says what the document *is* —
/// which issuer it belongs to and where it comes from — and not what a
/// configuration calls its provider: two filter configurations on one VM may
/// both name a provider `main`, and one must never adopt the other's keys.
/// Filters that trust the same issuer through the same source share one fetch.
pub fn shared_key(document: Document, issuer: &str, source: &Upstream) -> String {
    // JSON quoting keeps the parts apart whatever characters they hold.
    let parts = serde_json::json!([issuer, source.cluster, source.authority, source.path]);
    format!("authflow:{}:{parts}", document.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(cluster: &str, path: &str) -> Upstream {
        Upstream {
            cluster: cluster.into(),
            path: path.into(),
            authority: cluster.into(),
            interval_ms: 1_000,
            timeout_ms: 1_000,
            min_refetch_interval_ms: 1_000,
        }
    }

    #[test]
    fn shared_key_is_what_the_document_is_not_what_it_is_called() {
        let a = shared_key(Document::Jwks, "https://a", &upstream("auth", "/jwks"));
        assert_eq!(a, shared_key(Document::Jwks, "https://a", &upstream("auth", "/jwks")), "same issuer and source: one fetch");
        assert_ne!(a, shared_key(Document::Jwks, "https://b", &upstream("auth", "/jwks")), "another issuer");
        assert_ne!(a, shared_key(Document::Jwks, "https://a", &upstream("other", "/jwks")), "another cluster");
        assert_ne!(a, shared_key(Document::Jwks, "https://a", &upstream("auth", "/keys")), "another path");
        assert_ne!(a, shared_key(Document::Revocations, "https://a", &upstream("auth", "/jwks")), "another document");
        let mut other_host = upstream("auth", "/jwks");
        other_host.authority = "auth.other".into();
        assert_ne!(a, shared_key(Document::Jwks, "https://a", &other_host), "another authority");
        // Separators inside a part cannot make two sources collide.
        assert_ne!(
            shared_key(Document::Jwks, "i\",\"x", &upstream("c", "/p")),
            shared_key(Document::Jwks, "i", &upstream("x\",\"c", "/p"))
        );
    }
}
