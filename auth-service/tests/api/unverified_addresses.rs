//! Unverified accounts and second spellings of an address: they prove
//! nothing about it, and give way to its owner.

use serde_json::json;

use crate::common::*;

/// `authflow-auth user create` on `app`'s database, as an operator runs it.
fn cli_user_create(app: &TestApp, email: &str, password: &str, roles: &[&str]) -> (bool, String) {
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let mut args = vec!["user", "create", "--email", email];
    for r in roles {
        args.extend(["--role", r]);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authflow-auth"))
        .args(&args)
        .env("AUTHFLOW_DATABASE__URL", url)
        .env("AUTHFLOW_SERVER__DATA_DIR", app.dir.path())
        .env("AUTHFLOW_KEK__KEY_FILE", app.dir.path().join("test-kek"))
        .env("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB", "1024")
        .env("AUTHFLOW_PASSWORDS__HASH_ITERATIONS", "1")
        .env("AUTHFLOW_NEW_PASSWORD", password)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Pre-hijacking the first admin: anyone can sign up, unverified, with the
/// address an operator is about to make an admin with the CLI (the service
/// is up and reachable before its first admin exists: the compose
/// walkthrough does exactly that). The CLI then refuses ("already exists"),
/// and nothing can give that address the admin role any more: no command or
/// endpoint sets roles, and a password reset only hands the operator the
/// squatter's plain `user` account. An unverified account proves nothing
/// about its address, so it must not block the address's owner.
#[tokio::test]
async fn an_unverified_sign_up_does_not_keep_the_cli_from_creating_that_address() {
    let app = spawn_app().await;
    let squatter = "squatter's own passphrase";
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "root@example.com", "password": squatter}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let operator = "the operator's passphrase";
    let (ok, out) = cli_user_create(&app, "root@example.com", operator, &["admin"]);
    assert!(
        ok,
        "the CLI refused the address an unverified sign-up holds: {out}"
    );

    // The operator's password, the admin role; the squatter's password no longer works.
    let t = app.signin("root@example.com", operator).await;
    let r = app
        .authed(reqwest::Method::GET, "/v1/admin/users", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": "root@example.com", "password": squatter}),
        )
        .await;
    assert_eq!(r.status(), 401);
}

/// The CLI taking over an unverified account (new password, the admin role)
/// is audited under that account: the row written first named the id the
/// command made up for a new user, which no account has, so the audit
/// listing of the account that became an admin (`?user_id=`) did not show
/// how it did.
#[tokio::test]
async fn the_cli_taking_over_an_unverified_account_is_audited_under_that_account() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "root@example.com", "password": "squatter's own passphrase"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (ok, out) = cli_user_create(
        &app,
        "root@example.com",
        "the operator's passphrase",
        &["admin"],
    );
    assert!(ok, "{out}");
    let taken = app
        .state
        .store
        .user_by_email("root@example.com")
        .await
        .unwrap()
        .unwrap();
    let log = app.audit_of(&taken.id).await;
    assert!(
        log.iter().any(|e| e.event == "cli_user_create"),
        "no cli_user_create row for the account that got the admin role: {:?}",
        app.state.store.audit_log(None, 100).await.unwrap()
    );
}

/// A verified address still refuses the CLI (nothing taken from its owner).
#[tokio::test]
async fn the_cli_still_refuses_a_verified_address() {
    let app = spawn_app().await;
    app.verified_user("owner@example.com").await;
    let (ok, out) = cli_user_create(&app, "owner@example.com", "another passphrase", &["admin"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    app.signin("owner@example.com", PASSWORD).await;
}

/// Lower-casing is not case folding: Rust's `to_lowercase` turns a final
/// capital sigma into `ς` (U+03C2), a non-final one into `σ` (U+03C3), so
/// `ΑΣ@…` (the upper case of both) and `ας@…` are one account and `ασ@…`
/// another, though a case-insensitive mailbox is the same for all three.
/// Likewise the Cyrillic letter variants U+1C80–U+1C88, which case-fold to
/// `в д о с т ъ ѣ ꙋ` and which NFKC keeps: two accounts (and two mail
/// budgets) for one inbox.
#[tokio::test]
async fn spellings_that_differ_only_in_case_folding_are_one_account() {
    use authflow_auth_service::domain::Email;
    let one = |a: &str, b: &str| {
        assert_eq!(
            Email::parse(a).unwrap().as_str(),
            Email::parse(b).unwrap().as_str(),
            "{a:?} vs {b:?}"
        );
    };
    one("\u{3b1}\u{3c3}@example.com", "\u{391}\u{3a3}@example.com");
    one("\u{3b1}\u{3c3}@example.com", "\u{3b1}\u{3c2}@example.com");
    one(
        "\u{3c3}\u{3b1}\u{3c3}@example.com",
        "\u{3a3}\u{391}\u{3a3}@example.com",
    );
    one("\u{1c82}lga@example.com", "\u{43e}lga@example.com");
    // And over HTTP: the second spelling is a taken address (a notice, no new account).
    let app = spawn_app().await;
    app.verified_user("\u{3b1}\u{3c3}@example.com").await;
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "\u{3b1}\u{3c2}@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let mails = app.outbox("\u{3b1}\u{3c3}@example.com", 2).await;
    assert_eq!(mails.last().unwrap()["subject"], "Sign-up attempt");
}

/// The start-up pass that brings addresses stored by an earlier release
/// (which only trimmed and lowercased) to today's form leaves an account
/// alone when another one holds its new form, whichever it is: an
/// *unverified* account someone else signed up under the other spelling of
/// the owner's address (here the ASCII form of its Unicode domain, accepted
/// as a different address by that release) wins over the owner's verified
/// one. From then on every spelling of the address signs in to (and resets)
/// the squatter's account: the owner's own — its roles, its authenticator,
/// its `sub` that the backends key their data by — is out of reach until an
/// admin edits the database. An unverified account proves nothing about its
/// address and must give way.
#[tokio::test]
async fn an_unverified_twin_does_not_keep_a_verified_account_from_its_normalized_address() {
    use authflow_auth_service::clock::now;
    use authflow_auth_service::domain::password::Hasher;
    use authflow_auth_service::store::User;
    let first = spawn_app().await;
    let hasher = Hasher::new(1024, 1).unwrap();
    let owner = User {
        email_verified: true,
        ..User::new(
            "ana@b\u{fc}cher.example",
            hasher.hash(PASSWORD).unwrap(),
            vec!["user".into(), "admin".into()],
            now(),
        )
    };
    let squatter = User::new(
        "ana@xn--bcher-kva.example",
        hasher.hash("squatter's own passphrase").unwrap(),
        vec!["user".into()],
        now(),
    );
    first.state.store.create_user(&owner).await.unwrap();
    first.state.store.create_user(&squatter).await.unwrap();

    let again = spawn_app_beside(&first, |_| {}).await;
    let found = again
        .state
        .store
        .user_by_email("ana@xn--bcher-kva.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.id, owner.id,
        "the address leads to the squatter's unverified account; the owner's cannot be signed in to"
    );
    let t = again.signin("ana@b\u{fc}cher.example", PASSWORD).await;
    assert_eq!(claims(&t.access)["sub"], owner.id.as_str());
}
