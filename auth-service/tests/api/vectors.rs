//! The fingerprint the service computes from request headers equals the
//! shared contract's test vectors.

use std::net::SocketAddr;

use authflow_auth_service::tokens::fingerprint;
use authflow_contract::DeviceAttribute;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    secret: String,
    attributes: Vec<(String, String)>,
    dfp: String,
    /// A header sent several times: the request carries these copies instead of the one value.
    #[serde(default)]
    header_copies: Vec<(String, Vec<String>)>,
}

#[test]
fn service_fingerprint_matches_contract_vectors() {
    let vectors: Vec<Vector> = serde_json::from_str(include_str!(
        "../../../crates/contract/vectors/fingerprint.json"
    ))
    .unwrap();
    assert!(vectors.len() >= 4);
    for v in &vectors {
        let mut headers = HeaderMap::new();
        let mut attributes = Vec::new();
        let mut peer: Option<SocketAddr> = None;
        for (name, value) in &v.attributes {
            let attribute = DeviceAttribute::parse(name).unwrap();
            match &attribute {
                DeviceAttribute::Header(h) if v.header_copies.iter().any(|(n, _)| n == h) => {
                    let copies = v
                        .header_copies
                        .iter()
                        .filter(|(n, _)| n == h)
                        .flat_map(|(_, c)| c);
                    for copy in copies {
                        headers.append(
                            HeaderName::from_bytes(h.as_bytes()).unwrap(),
                            HeaderValue::from_bytes(copy.as_bytes()).unwrap(),
                        );
                    }
                }
                DeviceAttribute::Header(h) => {
                    if !value.is_empty() {
                        headers.insert(
                            HeaderName::from_bytes(h.as_bytes()).unwrap(),
                            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                        );
                    }
                }
                DeviceAttribute::ClientIpPrefix => {
                    // The vector holds the prefix; the request holds an address inside it.
                    let ip = value.trim_end_matches("0/24").to_owned() + "77";
                    peer = Some(format!("{ip}:4242").parse().unwrap());
                }
            }
            attributes.push(attribute);
        }
        assert_eq!(
            fingerprint(&attributes, 0, &v.secret, &headers, peer),
            v.dfp,
            "vector {}",
            v.name
        );
        // Behind one trusted proxy the address it appended counts, not the
        // peer and not what the client wrote before it.
        if let Some(client) = peer {
            let xff = format!("198.51.100.1, {}", client.ip());
            headers.insert("x-forwarded-for", HeaderValue::from_str(&xff).unwrap());
            let proxy: SocketAddr = "10.1.1.1:1".parse().unwrap();
            assert_eq!(
                fingerprint(&attributes, 1, &v.secret, &headers, Some(proxy)),
                v.dfp,
                "vector {} via XFF",
                v.name
            );
        }
    }
}
