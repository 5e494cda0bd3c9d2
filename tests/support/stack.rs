//! The whole system, as a user meets it: the real auth service (SQLite,
//! development mailer), the echo backend, and Envoy (two workers) with the
//! filter trusting that service; users sign up and sign in through Envoy.
//! Test files keep only what they test on top of it.

use std::time::Duration;

use authflow_contract::fingerprint::DEVICE_HEADER;
use authflow_echo::EchoServer;
use serde_json::{json, Value};

use super::{eventually, repo_root, wasm_path, AuthService, Envoy, EnvoyOptions, Reply};

/// The device every test user signs in from (the attributes fingerprinted).
pub const UA: &str = "authflow-e2e/1.0";
pub const LANG: &str = "en-GB";
pub const PASSWORD: &str = "correct-horse-battery-staple-42";

/// The device's fingerprinted headers, as sent at sign-up and sign-in.
pub fn device_headers() -> [(&'static str, &'static str); 2] {
    [("user-agent", UA), ("accept-language", LANG)]
}

/// The filter configuration of the stack: one provider, the auth service
/// (keys and a revocation feed polled every 200 ms), device binding on
/// `user-agent` and `accept-language`; `/v1/auth/` and `/.well-known/` are
/// public and served by the auth service (which gets the credentials it
/// needs), `/v1/admin/` is for admins, `/public/` is public, everything else
/// is authenticated, on the echo backend.
pub fn filter_config(issuer: &str) -> Value {
    json!({
        "providers": [{
            "name": "authflow", "issuer": issuer, "audiences": ["authflow-demo"], "algorithms": ["EdDSA", "ES256"],
            "token_type": "at+jwt", "required_claims": ["sub", "jti", "sid"],
            "jwks": {"remote": {"cluster": "authflow_auth", "path": "/.well-known/jwks.json", "refresh_interval_secs": 60}},
            "revocations": {"cluster": "authflow_auth", "path": "/v1/revocations", "poll_interval_ms": 200}
        }],
        "device_binding": {"mode": "enforce", "attributes": ["user-agent", "accept-language"]},
        "revocation": {"max_staleness_secs": 120, "on_stale": "deny"},
        "routes": [
            {"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true},
            {"match": {"prefix": "/.well-known/"}, "policy": "public"},
            {"match": {"prefix": "/public/"}, "policy": "public"},
            {"match": {"prefix": "/v1/admin/"}, "policy": {"roles_any": ["admin"]}, "forward_credentials": true}
        ]
    })
}

/// What a test changes in the stack.
pub struct StackOptions<'a> {
    pub issuer: &'a str,
    /// Added to the auth service's environment (its keys are published at once).
    pub service_env: &'a [(&'a str, &'a str)],
    /// Clusters besides `backend` and `authflow_auth` (e.g. another feed).
    pub extra_clusters: &'a [(&'a str, u16)],
}

pub struct Stack {
    pub auth: AuthService,
    pub envoy: Envoy,
    _backend: Option<EchoServer>,
}

/// A signed-in device: its tokens and the secret it was given.
#[derive(Clone, Debug)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub device: String,
    /// `Bearer <access>`.
    pub bearer: String,
}

impl Session {
    /// What the signed-in device sends with every request.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("authorization", &self.bearer),
            (DEVICE_HEADER, &self.device),
            ("user-agent", UA),
            ("accept-language", LANG),
        ]
    }

    /// The `kid` of the access token: the key that signed it.
    pub fn kid(&self) -> String {
        use base64::Engine;
        let header = self.access.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The same device presenting another access token.
    pub fn with_access(&self, access: String) -> Session {
        Session {
            bearer: format!("Bearer {access}"),
            access,
            ..self.clone()
        }
    }
}

impl Stack {
    /// Starts the stack with [`filter_config`] as `tweak` edits it.
    pub fn start(opts: StackOptions, tweak: impl FnOnce(&mut Value)) -> Stack {
        let backend = EchoServer::start("127.0.0.1:0").unwrap();
        let port = backend.addr.port();
        Self::start_on(opts, port, Some(backend), tweak)
    }

    /// [`Stack::start`] with the test's own backend on 127.0.0.1:`backend_port`.
    pub fn start_with_backend(
        opts: StackOptions,
        backend_port: u16,
        tweak: impl FnOnce(&mut Value),
    ) -> Stack {
        Self::start_on(opts, backend_port, None, tweak)
    }

    fn start_on(
        opts: StackOptions,
        backend_port: u16,
        backend: Option<EchoServer>,
        tweak: impl FnOnce(&mut Value),
    ) -> Stack {
        let auth = AuthService::start(opts.issuer, opts.service_env);
        let mut filter = filter_config(opts.issuer);
        tweak(&mut filter);
        let mut clusters = vec![
            ("backend".to_owned(), backend_port),
            ("authflow_auth".to_owned(), auth.port),
        ];
        clusters.extend(
            opts.extra_clusters
                .iter()
                .map(|(name, port)| (name.to_string(), *port)),
        );
        let envoy = Envoy::start(EnvoyOptions {
            filter,
            routes: super::routes_to(
                "authflow_auth",
                &["/v1/auth/", "/v1/admin/", "/.well-known/", "/auth/"],
            ),
            clusters,
            concurrency: 2,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Stack {
            auth,
            envoy,
            _backend: backend,
        }
    }

    /// A stack of parts the test started itself (e.g. an Envoy of its own
    /// configuration); `auth` is the service users sign in at.
    pub fn from_parts(auth: AuthService, envoy: Envoy, backend: EchoServer) -> Stack {
        Stack {
            auth,
            envoy,
            _backend: Some(backend),
        }
    }

    /// `GET path` from the session's device.
    pub fn call(&self, path: &str, s: &Session) -> Reply {
        self.envoy.get(path, &s.headers())
    }

    /// Sign-up and e-mail verification, through Envoy; the mail comes from
    /// the development outbox. The new user's id.
    pub fn sign_up(&self, email: &str) -> String {
        let r = self.envoy.post(
            "/v1/auth/signup",
            &device_headers(),
            &json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 201, "signup: {r:?}");
        let user_id = r.json()["user_id"].as_str().unwrap().to_owned();
        let token = self.auth.latest_mail(email, "Verify", "token");
        let r = self.envoy.post(
            "/v1/auth/verify-email",
            &device_headers(),
            &json!({"token": token}),
        );
        assert_eq!(r.status, 200, "verify-email: {r:?}");
        user_id
    }

    /// Signs in with [`PASSWORD`].
    pub fn sign_in(&self, email: &str) -> Session {
        self.sign_in_with(email, PASSWORD)
    }

    /// The password, then the 6-digit code from the outbox; the device gets its secret.
    pub fn sign_in_with(&self, email: &str, password: &str) -> Session {
        let r = self.envoy.post(
            "/v1/auth/signin",
            &device_headers(),
            &json!({"email": email, "password": password}),
        );
        assert_eq!(r.status, 200, "signin: {r:?}");
        let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
        let code = self.auth.latest_mail(email, "sign-in code", "code");
        let r = self.envoy.post(
            "/v1/auth/signin/verify",
            &device_headers(),
            &json!({"challenge_id": challenge, "code": code}),
        );
        assert_eq!(r.status, 200, "second factor: {r:?}");
        assert!(
            r.header("set-cookie")
                .unwrap_or_default()
                .contains("__Host-authflow-device="),
            "device cookie: {r:?}"
        );
        let j = r.json();
        let text = |name: &str| j[name].as_str().unwrap().to_owned();
        Session {
            bearer: format!("Bearer {}", text("access_token")),
            access: text("access_token"),
            refresh: text("refresh_token"),
            device: text("device_secret"),
        }
    }

    /// An admin created with the service's CLI, signed in.
    pub fn admin(&self, email: &str) -> Session {
        self.create_admin(email);
        self.sign_in(email)
    }

    /// An admin created with the service's CLI (password [`PASSWORD`]), not signed in.
    pub fn create_admin(&self, email: &str) {
        self.auth.cli(&[
            "user",
            "create",
            "--email",
            email,
            "--password",
            PASSWORD,
            "--role",
            "admin",
        ]);
    }

    pub fn logout(&self, s: &Session) {
        let r = self.envoy.post("/v1/auth/logout", &s.headers(), &json!({}));
        assert_eq!(r.status, 200, "logout: {r:?}");
    }

    /// Waits (bounded) until every worker refuses `s` on `path`.
    pub fn refused(&self, path: &str, s: &Session) -> bool {
        eventually(Duration::from_secs(3), || {
            (0..6).all(|_| self.call(path, s).status == 401)
        })
    }
}

/// The gateway as shipped (`envoy/local.yaml`: routes, filter configuration,
/// rate limits) with the built module, one Envoy worker, in front of the real
/// auth service (issuer `issuer`, `service_env` added) and the echo backend.
pub struct ShippedGateway {
    pub auth: AuthService,
    pub envoy: Envoy,
    _backend: EchoServer,
}

impl ShippedGateway {
    pub fn start(issuer: &str, service_env: &[(&str, &str)]) -> ShippedGateway {
        let auth = AuthService::start(issuer, service_env);
        let backend = EchoServer::start("127.0.0.1:0").unwrap();
        let (auth_port, backend_port) = (auth.port, backend.addr.port());
        let envoy = Envoy::start_doc(1, |port, admin_port| {
            shipped_local_config(port, admin_port, auth_port, backend_port)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        ShippedGateway {
            auth,
            envoy,
            _backend: backend,
        }
    }
}

/// `envoy/local.yaml` as shipped, on the test's ports (the admin on a port of
/// its own) and with the built module: routes, filters and clusters unchanged.
pub fn shipped_local_config(
    port: u16,
    admin_port: u16,
    auth_port: u16,
    backend_port: u16,
) -> Value {
    let text = std::fs::read_to_string(repo_root().join("envoy/local.yaml")).unwrap();
    let mut doc: Value = serde_norway::from_str(&text).unwrap();
    // The test reads Envoy's admin on a port of its own: in place of the shipped unix
    // socket and the read-only listener in front of it.
    doc["admin"]["address"] =
        json!({"socket_address": {"address": "127.0.0.1", "port_value": admin_port}});
    let resources = &mut doc["static_resources"];
    for (list, fronting) in [("listeners", "admin_readonly"), ("clusters", "envoy_admin")] {
        if let Some(items) = resources[list].as_array_mut() {
            items.retain(|item| item["name"] != fronting);
        }
    }
    let listener = &mut doc["static_resources"]["listeners"][0];
    listener["address"]["socket_address"]["port_value"] = json!(port);
    for cluster in doc["static_resources"]["clusters"].as_array_mut().unwrap() {
        let to = match cluster["name"].as_str().unwrap() {
            "authflow_auth" => auth_port,
            "backend" => backend_port,
            other => panic!("unexpected cluster {other} in envoy/local.yaml"),
        };
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"] = json!(to);
    }
    let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    for filter in hcm["http_filters"].as_array_mut().unwrap() {
        if filter["name"] == "envoy.filters.http.wasm" {
            filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
                json!(wasm_path().to_string_lossy());
        }
    }
    doc
}
