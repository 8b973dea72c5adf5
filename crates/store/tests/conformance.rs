//! One conformance suite for every `Store` implementation, run against SQLite (a fresh
//! file) and PostgreSQL (a fresh database on LATCHKEY_TEST_DATABASE_URL's server).
//! The PostgreSQL half never skips: if the server cannot be reached the test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use latchkey_core::client::{AuthMethod, Client, ClientKind, GrantType};
use latchkey_core::jose::Alg;
use latchkey_core::model::{AuthorizationCode, Grant, KeyRecord, KeyState, Session, User};
use latchkey_core::pkce::CodeChallenge;
use latchkey_core::redirect_uri::RedirectUri;
use latchkey_core::scope::Scope;
use latchkey_store::{
    CurrentRefresh, GrantFilter, KeyWrite, NewGrant, PgStore, Redemption, SqliteStore, Store,
    StoreError, SweepReport,
};

const NOW: i64 = 1_800_000_000;

fn client(id: &str) -> Client {
    Client {
        client_id: id.into(),
        name: "App".into(),
        kind: ClientKind::Confidential,
        secret_hash: Some("hash".into()),
        redirect_uris: vec![RedirectUri::register("https://app.example/cb").unwrap()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: Scope::parse("openid email").unwrap(),
        auth_methods: vec![AuthMethod::ClientSecretBasic],
        first_party: false,
        post_logout_redirect_uris: vec![],
        audiences: vec![],
        resources: vec!["https://api.example.com".into()],
        access_token_ttl: 300,
        id_token_alg: Alg::RS256,
        created_at: NOW,
    }
}

fn user(id: &str, name: &str) -> User {
    User {
        user_id: id.into(),
        username: name.into(),
        password_hash: "$argon2id$x".into(),
        email: Some(format!("{name}@example.com")),
        email_verified: true,
        name: None,
        disabled: false,
        created_at: NOW,
    }
}

fn grant(id: &str, user: &str, client: &str) -> Grant {
    Grant {
        grant_id: id.into(),
        user_id: user.into(),
        client_id: client.into(),
        scope: Scope::parse("openid email").unwrap(),
        auth_time: NOW,
        session_hash: None,
        nonce: Some("n".into()),
        audience: Some("https://api.example.com".into()),
        refresh_generation: 1,
        refresh_hash: Some("h1".into()),
        created_at: NOW,
        last_used_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
        grace_used: false,
    }
}

/// A code that names the grant `grant_id` (what `latchkey_core::code` seals).
fn code(grant_id: &str) -> AuthorizationCode {
    AuthorizationCode {
        grant_id: grant_id.into(),
        client_id: "c1".into(),
        user_id: "u1".into(),
        session_hash: Some("s".into()),
        redirect_uri: "https://app.example/cb".into(),
        scope: Scope::parse("openid").unwrap(),
        nonce: None,
        code_challenge: CodeChallenge::from_stored(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        ),
        auth_time: NOW,
        expires_at: NOW + 60,
        resource: Some("https://api.example.com".into()),
    }
}

fn new_grant() -> NewGrant {
    NewGrant {
        refresh_generation: 1,
        refresh_hash: Some("rh".into()),
        expires_at: NOW + 3600,
    }
}

async fn suite(store: Arc<dyn Store>) {
    clients(&*store).await;
    users(&*store).await;
    sessions(&*store).await;
    codes(store.clone()).await;
    grants(store.clone()).await;
    remembered_consent(&*store).await;
    keys_and_secrets(&*store).await;
    feed_and_bulk_revocation(&*store).await;
    sweeping(&*store).await;
    every_grant_filter(&*store).await;
}

async fn clients(s: &dyn Store) {
    let v0 = s.versions().await.unwrap().clients;
    s.create_client(&client("c1")).await.unwrap();
    let v1 = s.versions().await.unwrap().clients;
    assert!(v1 > v0, "creating a client bumps the clients version");
    assert!(matches!(
        s.create_client(&client("c1")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.versions().await.unwrap().clients,
        v1,
        "a refused create changes nothing"
    );
    let c = s.client("c1").await.unwrap().unwrap();
    assert_eq!(c.redirect_uris[0].as_str(), "https://app.example/cb");
    assert_eq!(
        c.grant_types,
        vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
    );
    assert_eq!(c.scopes.to_string(), "email openid");
    assert_eq!(c.secret_hash.as_deref(), Some("hash"));
    assert_eq!(c.resources, vec!["https://api.example.com".to_owned()]);
    assert!(s.client("nope").await.unwrap().is_none());
    assert!(s.set_client_secret("c1", "hash2").await.unwrap());
    let v2 = s.versions().await.unwrap().clients;
    assert!(v2 > v1, "a new secret bumps the clients version");
    assert_eq!(
        s.client("c1")
            .await
            .unwrap()
            .unwrap()
            .secret_hash
            .as_deref(),
        Some("hash2")
    );
    assert!(!s.set_client_secret("nope", "x").await.unwrap());
    s.create_client(&client("c2")).await.unwrap();
    assert_eq!(s.list_clients().await.unwrap().len(), 2);
    s.insert_grant(&grant("g-c2", "u9", "c2")).await.unwrap();
    let v3 = s.versions().await.unwrap().clients;
    assert!(s.delete_client("c2", NOW).await.unwrap());
    assert!(
        s.versions().await.unwrap().clients > v3,
        "deleting a client bumps the clients version"
    );
    assert!(!s.delete_client("c2", NOW).await.unwrap());
    assert!(
        s.grant("g-c2").await.unwrap().unwrap().revoked_at.is_some(),
        "deleting a client revokes its grants"
    );
}

async fn users(s: &dyn Store) {
    let v0 = s.versions().await.unwrap().users;
    s.create_user(&user("u1", "alice")).await.unwrap();
    let v1 = s.versions().await.unwrap().users;
    assert!(v1 > v0, "creating a user bumps the users version");
    assert!(matches!(
        s.create_user(&user("u2", "alice")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.user_by_username("alice").await.unwrap().unwrap().user_id,
        "u1"
    );
    s.create_user(&user("u3", "bob")).await.unwrap();
    s.insert_grant(&grant("g-bob", "u3", "c1")).await.unwrap();
    s.create_session(&Session {
        session_hash: "sess-bob".into(),
        user_id: "u3".into(),
        auth_time: NOW,
        expires_at: NOW + 60,
    })
    .await
    .unwrap();
    let v2 = s.versions().await.unwrap().users;
    assert!(s.delete_user("u3", NOW).await.unwrap());
    assert!(
        s.versions().await.unwrap().users > v2,
        "deleting a user bumps the users version"
    );
    assert!(s.user("u3").await.unwrap().is_none());
    assert!(
        s.session("sess-bob", NOW).await.unwrap().is_none(),
        "deleting a user ends their sessions"
    );
    assert!(
        s.grant("g-bob")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some(),
        "deleting a user revokes their grants"
    );
    assert_eq!(s.list_users().await.unwrap().len(), 1);
}

async fn sessions(s: &dyn Store) {
    s.create_session(&Session {
        session_hash: "s1".into(),
        user_id: "u1".into(),
        auth_time: NOW,
        expires_at: NOW + 10,
    })
    .await
    .unwrap();
    assert_eq!(s.session("s1", NOW).await.unwrap().unwrap().auth_time, NOW);
    assert!(
        s.session("s1", NOW + 10).await.unwrap().is_none(),
        "expired sessions are not returned"
    );
    s.delete_session("s1").await.unwrap();
    assert!(s.session("s1", NOW).await.unwrap().is_none());
}

async fn codes(s: Arc<dyn Store>) {
    assert_eq!(
        s.redeem_code(&code("g-code1"), &new_grant(), NOW, false)
            .await
            .unwrap(),
        Redemption::Redeemed
    );
    // The redemption made the grant the code names, from the code.
    let g = s
        .grant("g-code1")
        .await
        .unwrap()
        .expect("redemption makes the grant");
    assert_eq!(
        (
            g.user_id.as_str(),
            g.client_id.as_str(),
            g.refresh_hash.as_deref()
        ),
        ("u1", "c1", Some("rh"))
    );
    assert_eq!(g.audience.as_deref(), Some("https://api.example.com"));
    assert!(g.revoked_at.is_none());
    // What the redemption inserted is what `grant_from` says it did (the token endpoint
    // uses that instead of reading the grant back).
    assert_eq!(
        format!("{:?}", new_grant().grant_from(&code("g-code1"), NOW)),
        format!("{g:?}")
    );
    // A second redemption, even once the grant is revoked, finds it (RFC 9700 §4.2.4)
    // and changes nothing.
    s.revoke_grant("g-code1", NOW).await.unwrap();
    assert_eq!(
        s.redeem_code(&code("g-code1"), &new_grant(), NOW + 30, false)
            .await
            .unwrap(),
        Redemption::AlreadyRedeemed
    );
    let again = s.grant("g-code1").await.unwrap().unwrap();
    assert_eq!((again.created_at, again.revoked_at), (NOW, Some(NOW)));

    // A code whose client or user was deleted (issued from a server's cached copy)
    // makes no grant; nor, when its session is required, one whose session ended.
    let mut orphans = [
        (code("g-orphan-client"), false),
        (code("g-orphan-user"), false),
        (code("g-session-ended"), true),
    ];
    orphans[0].0.client_id = "deleted-client".into();
    orphans[1].0.user_id = "deleted-user".into();
    orphans[2].0.session_hash = Some("no-such-session".into());
    for (orphan, session_required) in &orphans {
        assert_eq!(
            s.redeem_code(orphan, &new_grant(), NOW, *session_required)
                .await
                .unwrap(),
            Redemption::Orphaned,
            "{}",
            orphan.grant_id
        );
        assert!(s.grant(&orphan.grant_id).await.unwrap().is_none());
    }
    // A code whose session lives, when it is required, makes its grant.
    s.create_session(&Session {
        session_hash: "code-session".into(),
        user_id: "u1".into(),
        auth_time: NOW,
        expires_at: NOW + 100,
    })
    .await
    .unwrap();
    let mut live = code("g-session-live");
    live.session_hash = Some("code-session".into());
    assert_eq!(
        s.redeem_code(&live, &new_grant(), NOW, true).await.unwrap(),
        Redemption::Redeemed
    );
    s.revoke_grant("g-session-live", NOW).await.unwrap();
    s.delete_session("code-session").await.unwrap();

    // REL-01: of many racing redemptions exactly one wins, and every loser, even one
    // that raced the winner's commit, sees the winner's grant (so that reuse revokes
    // it).
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.redeem_code(&code("g-race"), &new_grant(), NOW, false)
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let won = outcomes
        .iter()
        .filter(|o| **o == Redemption::Redeemed)
        .count();
    assert_eq!(won, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Redemption::Redeemed | Redemption::AlreadyRedeemed)),
        "{outcomes:?}"
    );
    s.revoke_grant("g-race", NOW).await.unwrap();
}

async fn grants(s: Arc<dyn Store>) {
    s.insert_grant(&grant("g1", "u1", "c1")).await.unwrap();
    assert!(
        s.grant("g1")
            .await
            .unwrap()
            .unwrap()
            .is_active(latchkey_core::UnixTime(NOW))
    );
    let remembered = |user: &'static str, client: &'static str, scope: &'static str, now| {
        let s = s.clone();
        async move {
            s.remembered_consent(user, client, &Scope::parse(scope).unwrap(), now)
                .await
                .unwrap()
        }
    };
    assert!(remembered("u1", "c1", "openid email", NOW).await);
    assert!(
        remembered("u1", "c1", "email", NOW).await,
        "a narrower request"
    );
    assert!(!remembered("u1", "c1", "openid email phone", NOW).await);
    assert!(
        !remembered("u1", "c2", "openid", NOW).await,
        "another client"
    );
    assert!(!remembered("u2", "c1", "openid", NOW).await, "another user");
    assert!(
        !remembered("u1", "c1", "openid", NOW + 3600).await,
        "an expired grant remembers nothing"
    );
    assert!(
        !s.rotate_refresh("g1", 2, "h3", NOW, NOW + 3600)
            .await
            .unwrap(),
        "wrong generation does not rotate"
    );
    assert!(
        s.rotate_refresh("g1", 1, "h2", NOW + 5, NOW + 7200)
            .await
            .unwrap()
    );
    let g = s.grant("g1").await.unwrap().unwrap();
    assert_eq!(
        (
            g.refresh_generation,
            g.refresh_hash.as_deref(),
            g.last_used_at,
            g.expires_at
        ),
        (2, Some("h2"), NOW + 5, NOW + 7200)
    );

    // Racing rotations from one generation: exactly one succeeds.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.rotate_refresh("g1", 2, &format!("h-{i}"), NOW, NOW + 3600)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(s.grant("g1").await.unwrap().unwrap().refresh_generation, 3);

    // The one-statement rotation: every condition must hold, and the grant comes back
    // as it now is.
    s.insert_grant(&grant("g-fast", "u1", "c1")).await.unwrap();
    let base = CurrentRefresh {
        grant_id: "g-fast",
        client_id: "c1",
        generation: 1,
        current_hash: "h1",
        new_hash: "h2",
        audience: Some("https://api.example.com"),
        now: NOW + 10,
        absolute_ttl: 100,
        idle_ttl: 50,
    };
    for (why, r) in [
        (
            "another client",
            CurrentRefresh {
                client_id: "c2",
                ..base.clone()
            },
        ),
        (
            "an old generation",
            CurrentRefresh {
                generation: 0,
                ..base.clone()
            },
        ),
        (
            "a wrong secret",
            CurrentRefresh {
                current_hash: "hx",
                ..base.clone()
            },
        ),
        (
            "another audience",
            CurrentRefresh {
                audience: Some("https://other.example"),
                ..base.clone()
            },
        ),
        (
            "after expiry",
            CurrentRefresh {
                now: NOW + 3600,
                ..base.clone()
            },
        ),
        (
            "an unknown grant",
            CurrentRefresh {
                grant_id: "nope",
                ..base.clone()
            },
        ),
    ] {
        assert!(
            s.rotate_current_refresh(&r).await.unwrap().is_none(),
            "rotated despite {why}"
        );
    }
    let g = s
        .rotate_current_refresh(&base)
        .await
        .unwrap()
        .expect("rotated");
    // The idle limit (NOW + 10 + 50) comes before the absolute one (NOW + 100).
    assert_eq!(
        (
            g.refresh_generation,
            g.refresh_hash.as_deref(),
            g.last_used_at,
            g.expires_at
        ),
        (2, Some("h2"), NOW + 10, NOW + 60)
    );
    assert!(
        s.rotate_current_refresh(&base).await.unwrap().is_none(),
        "the same token rotates once"
    );
    let g = s
        .rotate_current_refresh(&CurrentRefresh {
            generation: 2,
            current_hash: "h2",
            new_hash: "h3",
            audience: None,
            now: NOW + 55,
            ..base.clone()
        })
        .await
        .unwrap()
        .expect("no resource named: any audience");
    assert_eq!(
        g.expires_at,
        NOW + 100,
        "the absolute limit comes first now"
    );
    assert!(s.revoke_grant("g-fast", NOW).await.unwrap());
    assert!(
        s.rotate_current_refresh(&CurrentRefresh {
            generation: 3,
            current_hash: "h3",
            now: NOW + 57,
            ..base.clone()
        })
        .await
        .unwrap()
        .is_none(),
        "a revoked grant does not rotate"
    );

    // The grace retry of a generation can be spent once, and rotation resets it.
    assert!(s.use_refresh_grace("g1", 3).await.unwrap());
    assert!(!s.use_refresh_grace("g1", 3).await.unwrap());
    assert!(
        !s.use_refresh_grace("g1", 2).await.unwrap(),
        "only the current generation"
    );
    assert!(s.grant("g1").await.unwrap().unwrap().grace_used);

    assert!(s.revoke_grant("g1", NOW).await.unwrap());
    assert!(
        !s.revoke_grant("g1", NOW).await.unwrap(),
        "revoking twice reports no change"
    );
    assert!(
        !s.grant("g1")
            .await
            .unwrap()
            .unwrap()
            .is_active(latchkey_core::UnixTime(NOW))
    );
    assert!(
        !s.rotate_refresh("g1", 3, "h4", NOW, NOW + 3600)
            .await
            .unwrap(),
        "a revoked grant never rotates"
    );
    assert!(
        !s.remembered_consent("u1", "c1", &Scope::parse("openid").unwrap(), NOW)
            .await
            .unwrap(),
        "a revoked grant remembers nothing"
    );
}

/// Consent is remembered from any of the newest active grants, not only the newest:
/// a later, narrower authorization does not hide an earlier, wider one.
async fn remembered_consent(s: &dyn Store) {
    let wide = Grant {
        scope: Scope::parse("openid email profile").unwrap(),
        created_at: NOW - 20,
        ..grant("rc-wide", "u-rc", "c1")
    };
    let narrow = Grant {
        scope: Scope::parse("openid").unwrap(),
        created_at: NOW - 10,
        ..grant("rc-narrow", "u-rc", "c1")
    };
    let newest_revoked = Grant {
        scope: Scope::parse("openid email profile phone").unwrap(),
        created_at: NOW,
        revoked_at: Some(NOW),
        ..grant("rc-revoked", "u-rc", "c1")
    };
    for g in [&wide, &narrow, &newest_revoked] {
        s.insert_grant(g).await.unwrap();
    }
    let remembered = async |scope: &str| {
        s.remembered_consent("u-rc", "c1", &Scope::parse(scope).unwrap(), NOW)
            .await
            .unwrap()
    };
    assert!(remembered("openid").await, "the newest active grant");
    assert!(
        remembered("openid profile").await,
        "an older grant covers what the newest does not"
    );
    assert!(
        !remembered("openid phone").await,
        "only the revoked grant had phone"
    );
}

async fn keys_and_secrets(s: &dyn Store) {
    let key = KeyRecord {
        kid: "k1".into(),
        alg: Alg::EdDSA,
        state: KeyState::Active,
        private_pkcs8: vec![1, 2, 3, 0, 255],
        created_at: NOW,
        state_since: NOW,
    };
    s.insert_key(&key).await.unwrap();
    let keys = s.keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].state_since, NOW);
    assert_eq!(keys[0].private_pkcs8, vec![1, 2, 3, 0, 255]);
    assert_eq!(keys[0].state, KeyState::Active);
    // Key maintenance: the planner sees the current keys and its writes are applied;
    // a transition from a state the key is no longer in does nothing.
    let writes = s
        .maintain_keys(
            &|keys: &[KeyRecord]| {
                assert_eq!(keys.len(), 1);
                Ok(vec![
                    KeyWrite::Transition {
                        kid: "k1".into(),
                        from: KeyState::Active,
                        to: KeyState::Retiring,
                    },
                    KeyWrite::Insert(KeyRecord {
                        kid: "k2".into(),
                        state_since: NOW + 1,
                        ..keys[0].clone()
                    }),
                    KeyWrite::Transition {
                        kid: "k1".into(),
                        from: KeyState::Next,
                        to: KeyState::Retired,
                    },
                ])
            },
            NOW + 1,
        )
        .await
        .unwrap()
        .expect("the lock is free");
    assert_eq!(writes.len(), 3);
    let keys = s.keys().await.unwrap();
    assert_eq!(
        (keys[0].state, keys[0].state_since),
        (KeyState::Retiring, NOW + 1)
    );
    assert_eq!(
        (keys[1].kid.as_str(), keys[1].state),
        ("k2", KeyState::Active)
    );
    s.maintain_keys(
        &|_: &[KeyRecord]| Ok(vec![KeyWrite::Revoke { kid: "k2".into() }]),
        NOW - 5,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(s.keys().await.unwrap()[1].state, KeyState::Retired);
    assert!(
        s.revocations_since(NOW - 5, 10)
            .await
            .unwrap()
            .iter()
            .any(|r| r.kind == "key" && r.subject == "k2"),
        "a revoked key enters the feed"
    );
    let refused = s
        .maintain_keys(&|_: &[KeyRecord]| Err("no".to_owned()), NOW)
        .await;
    assert!(matches!(refused, Err(StoreError::Plan(_))));

    let first = s.server_secret("mac", "one").await.unwrap();
    let second = s.server_secret("mac", "two").await.unwrap();
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("one", "one"),
        "the first value wins on every node"
    );
}

async fn feed_and_bulk_revocation(s: &dyn Store) {
    // g1 was revoked by `grants`; g-c2 by deleting client c2 (a client entry); u3 deleted.
    let feed = s.revocations_since(NOW, 100).await.unwrap();
    let has =
        |kind: &str, subject: &str| feed.iter().any(|r| r.kind == kind && r.subject == subject);
    assert!(has("grant", "g1"), "{feed:?}");
    assert!(has("client", "c2"), "{feed:?}");
    assert!(has("user", "u3"), "{feed:?}");
    assert!(
        s.revocations_since(NOW + 1, 100).await.unwrap().is_empty(),
        "the cursor bounds the feed"
    );

    for (id, session) in [("ga", "sa"), ("gb", "sa"), ("gc", "sb")] {
        let mut g = grant(id, "u1", "c1");
        g.session_hash = Some(session.into());
        s.insert_grant(&g).await.unwrap();
    }
    let by_session = GrantFilter {
        session_hash: Some("sa".into()),
        ..Default::default()
    };
    assert_eq!(s.list_grants(&by_session, NOW, 10).await.unwrap().len(), 2);
    assert_eq!(s.revoke_grants(&by_session, NOW + 2).await.unwrap(), 2);
    assert_eq!(
        s.revoke_grants(&by_session, NOW + 2).await.unwrap(),
        0,
        "already revoked"
    );
    let active = GrantFilter {
        user_id: Some("u1".into()),
        client_id: Some("c1".into()),
        active_only: true,
        ..Default::default()
    };
    let ids: Vec<String> = s
        .list_grants(&active, NOW, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.grant_id)
        .collect();
    assert_eq!(ids, vec!["gc".to_owned()]);
    let later = s.revocations_since(NOW + 2, 100).await.unwrap();
    assert_eq!(
        later.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>(),
        vec!["ga", "gb"]
    );
}

async fn sweeping(s: &dyn Store) {
    for i in 0..5 {
        s.create_session(&Session {
            session_hash: format!("sweep-old-{i}"),
            user_id: "u1".into(),
            auth_time: NOW - 100,
            expires_at: NOW - 1,
        })
        .await
        .unwrap();
    }
    s.create_session(&Session {
        session_hash: "sweep-fresh".into(),
        user_id: "u1".into(),
        auth_time: NOW,
        expires_at: NOW + 100,
    })
    .await
    .unwrap();
    let before = s.row_counts().await.unwrap();
    let count = |rows: &[(&str, i64)], t: &str| rows.iter().find(|(n, _)| *n == t).unwrap().1;
    // Batches of 2: three sweeps clear the five expired sessions, the fresh one stays.
    let mut swept = SweepReport::default();
    for _ in 0..3 {
        let r = s
            .sweep(NOW, NOW - 3600, 2)
            .await
            .unwrap()
            .expect("no other sweeper");
        assert!(r.sessions <= 2);
        swept.sessions += r.sessions;
    }
    assert!(swept.sessions >= 5, "{swept:?}");
    let after = s.row_counts().await.unwrap();
    assert_eq!(
        count(&after, "sessions"),
        count(&before, "sessions") - i64::try_from(swept.sessions).unwrap()
    );
    assert!(s.session("sweep-fresh", NOW).await.unwrap().is_some());
    // Revoked grants and feed entries go once the horizon passes them.
    let r = s.sweep(NOW, NOW + 10, 1000).await.unwrap().unwrap();
    assert!(r.grants >= 3 && r.revocations >= 3, "{r:?}");
    assert!(s.revocations_since(0, 100).await.unwrap().is_empty());
}

/// Each of the eight shapes of a [`GrantFilter`] (each field given or not) selects
/// exactly the grants it names, and revokes only those (the store writes one statement
/// per shape, so that each can use its index).
async fn every_grant_filter(s: &dyn Store) {
    let mut all = Vec::new();
    for (i, (user, client, session)) in [
        ("fu1", "c1", "fs1"),
        ("fu1", "c1", "fs2"),
        ("fu1", "c3", "fs1"),
        ("fu2", "c1", "fs3"),
        ("fu2", "c3", "fs3"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = grant(&format!("gf{i}"), user, client);
        g.session_hash = Some(session.into());
        s.insert_grant(&g).await.unwrap();
        all.push(g);
    }
    let ours = |gs: Vec<Grant>| -> Vec<String> {
        let mut ids: Vec<String> = gs
            .into_iter()
            .filter(|g| g.grant_id.starts_with("gf"))
            .map(|g| g.grant_id)
            .collect();
        ids.sort();
        ids
    };
    let shapes = |user: Option<&str>, client: Option<&str>, session: Option<&str>| GrantFilter {
        user_id: user.map(str::to_owned),
        client_id: client.map(str::to_owned),
        session_hash: session.map(str::to_owned),
        active_only: false,
    };
    for user in [None, Some("fu1"), Some("fu2")] {
        for client in [None, Some("c1"), Some("c3")] {
            for session in [None, Some("fs1"), Some("fs3")] {
                let f = shapes(user, client, session);
                let mut want: Vec<String> = all
                    .iter()
                    .filter(|g| user.is_none_or(|u| g.user_id == u))
                    .filter(|g| client.is_none_or(|c| g.client_id == c))
                    .filter(|g| session.is_none_or(|x| g.session_hash.as_deref() == Some(x)))
                    .map(|g| g.grant_id.clone())
                    .collect();
                want.sort();
                let got = ours(s.list_grants(&f, NOW, 1000).await.unwrap());
                assert_eq!(got, want, "{f:?}");
            }
        }
    }
    // Revoking by user and session touches that pair's grants only.
    let f = shapes(Some("fu1"), None, Some("fs1"));
    assert_eq!(s.revoke_grants(&f, NOW + 3).await.unwrap(), 2);
    let active = GrantFilter {
        active_only: true,
        ..shapes(Some("fu1"), None, None)
    };
    assert_eq!(
        ours(s.list_grants(&active, NOW, 1000).await.unwrap()),
        vec!["gf1"]
    );
    let f = shapes(None, Some("c3"), None);
    assert_eq!(
        s.revoke_grants(&f, NOW + 3).await.unwrap(),
        1,
        "gf2 was revoked already"
    );
    let active = GrantFilter {
        active_only: true,
        ..shapes(None, None, None)
    };
    assert_eq!(
        ours(s.list_grants(&active, NOW, 1000).await.unwrap()),
        vec!["gf1", "gf3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    // Migrating an already migrated database is a no-op.
    let again = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    drop(again);
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let url = std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let db = pg::fresh_database(&url).await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let again = PgStore::connect(&db.url).await.unwrap();
    drop(again);
    suite(Arc::new(store)).await;
    db.drop().await;
}

mod pg {
    use sqlx::Connection;

    pub struct FreshDb {
        admin_url: String,
        name: String,
        pub url: String,
    }

    /// Creates a uniquely named database on the server of `url`. Fails loudly when the
    /// server cannot be reached: the PostgreSQL half must run.
    pub async fn fresh_database(url: &str) -> FreshDb {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is required for the store suite (scripts/ensure-postgres): {e}"
            )
        });
        let name = format!("latchkey_test_{}_{}", std::process::id(), nanos());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = url.rsplit_once('/').map(|(b, _)| b).unwrap();
        FreshDb {
            admin_url: url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    impl FreshDb {
        pub async fn drop(self) {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .execute(&mut conn)
                .await;
            }
        }
    }

    fn nanos() -> u128 {
        #[allow(
            clippy::disallowed_methods,
            reason = "a unique name, not protocol time"
        )]
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }
}

/// Under steady writes with reads in between, the SQLite WAL is started over and does
/// not grow with the number of commits: a checkpoint alone never lets it restart while
/// there is always a newer frame, and it grew by hundreds of megabytes a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    store.create_client(&client("c1")).await.unwrap();
    store.create_user(&user("u1", "alice")).await.unwrap();
    let wal = dir.path().join("t.db-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // Readers keep a snapshot open somewhere nearly all the time, as under load.
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (s, reading) = (store.clone(), reading.clone());
        tokio::spawn(async move {
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                s.remembered_consent("u1", "c1", &Scope::parse("openid").unwrap(), NOW)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    // The largest size seen in each of six equal spans of commits. The file is
    // reused, not truncated, so its size is the most it ever held.
    let mut largest = [0u64; 6];
    let commits = 45_000;
    for n in 0..commits {
        store
            .create_session(&Session {
                session_hash: format!("wal-{n}"),
                user_id: "u1".into(),
                auth_time: NOW,
                expires_at: NOW + 60,
            })
            .await
            .unwrap();
        if n % 250 == 0 {
            let span = &mut largest[n * largest.len() / commits];
            *span = (*span).max(wal_len());
        }
    }
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    // Left alone the WAL grows with every commit (680 MB here, six times the first
    // span's); started over, it stays near what the first span needed.
    let (first, last) = (largest[0], largest[5]);
    assert!(
        first > 0 && last < 3 * first && last < 256 << 20,
        "the WAL grew from {first} to {last} bytes over {commits} commits"
    );
}
