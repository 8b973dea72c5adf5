//! The `latchkey` command: `serve`, `demo`, `migrate`, and the admin commands.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use latchkey_server::clock::{Clock, SystemClock};
use latchkey_server::config::{Config, Overrides};
use latchkey_server::{admin, build_state, open_existing_store, open_store};

/// mimalloc rather than the system allocator: a request allocates and frees a few
/// hundred small buffers (headers, claims, JSON), and glibc's malloc and free were
/// 8% of a token request's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Latchkey: an OAuth 2 authorization server and OpenID Connect provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run a server on a fresh embedded store with a demo user and a demo app, and print
    /// where to click.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where to keep the demo's data (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Manage registered clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect and revoke grants (one user's authorization of one client).
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Signing keys: list, rotate, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rotate: publish a new key that takes over after the pre-publication window, or
    /// with --now, signs at once (an emergency; the old key stays published).
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        /// EdDSA, ES256 or RS256 (default: all).
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        now: bool,
    },
    /// Revoke a compromised key: removed from the JWKS at once, its tokens stop
    /// verifying; a signing key is replaced.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        kid: String,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// List grants, newest first (active ones unless --all).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// User id or username.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        /// Include revoked and expired grants.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant: its refresh token, introspection and (through the feed) its
    /// access tokens stop working.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        grant_id: String,
    },
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…) instead of the embedded store.
    #[arg(long)]
    database_url: Option<String>,
}

impl StoreArgs {
    fn config(&self, listen: Option<String>, issuer: Option<String>) -> Result<Config, String> {
        Config::load(
            self.config.as_deref(),
            Overrides {
                data_dir: self.data_dir.clone(),
                listen,
                issuer,
                database_url: self.database_url.clone(),
            },
        )
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on, like 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Issuer URL; defaults to http://<listen address>.
    #[arg(long)]
    issuer: Option<String>,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; prints its id and, for a confidential client, its secret (once).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (native or browser app): no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// Comma-separated: authorization_code, refresh_token, client_credentials.
        #[arg(long)]
        grant_types: Option<String>,
        /// Space-separated scopes the client may request (default "openid profile email").
        #[arg(long)]
        scopes: Option<String>,
        /// Trusted by the admin: users are not asked for consent.
        #[arg(long)]
        first_party: bool,
        /// Where RP-initiated logout may send the browser afterwards (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// This client is the API (resource server) for AUD: it may introspect tokens for
        /// AUD and read the revocation feed (repeatable).
        #[arg(long = "serves-audience")]
        audiences: Vec<String>,
        /// An API (RFC 8707 resource indicator) this client may request tokens for; such
        /// tokens carry it as `aud` (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Algorithm of this client's ID tokens: RS256 (default), ES256 or EdDSA.
        #[arg(long)]
        id_token_alg: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Give a confidential client a new secret (printed once); running servers stop
    /// accepting the old one within client_check_interval_ms (250 ms). With
    /// --revoke-grants, every grant the client holds is revoked too.
    RotateSecret {
        #[command(flatten)]
        store: StoreArgs,
        client_id: String,
        #[arg(long)]
        revoke_grants: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and revoke every grant it holds.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        client_id: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete a user (by id or username), end their sessions and revoke their grants.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        user: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now() -> i64 {
    SystemClock.now().0
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo { listen, data_dir } => demo(listen, data_dir).await,
        Command::Migrate(store) => {
            let config = store.config(None, None)?;
            let (store, notes) = open_store(&config).await?;
            notes.iter().for_each(|n| println!("{n}"));
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Client(c) => client_command(c).await,
        Command::User(u) => user_command(u).await,
        Command::Grant(g) => grant_command(g).await,
        Command::Keys(k) => keys_command(k).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = args.store.config(args.listen, args.issuer)?;
    let (store, mut notes) = open_store(&config).await?;
    let (listener, issuer) = latchkey_server::bind(&config).await?;
    let (state, key_notes) = build_state(config, store, issuer.clone(), None).await?;
    notes.extend(key_notes);
    notes.iter().for_each(|n| println!("{n}"));
    if let Ok(addr) = listener.local_addr() {
        println!("bound to {addr}");
    }
    println!("listening on {issuer}");
    latchkey_server::serve(listener, state).await
}

async fn demo(listen: String, data_dir: Option<PathBuf>) -> Result<(), String> {
    let temporary = data_dir.is_none();
    let data_dir = match data_dir {
        Some(d) => d,
        None => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let suffix =
                latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed")?;
            std::env::temp_dir().join(format!("latchkey-demo-{}", &suffix[..10]))
        }
    };
    let overrides = Overrides {
        data_dir: Some(data_dir.clone()),
        listen: Some(listen),
        issuer: None,
        database_url: None,
    };
    let config = Config::load(None, overrides)?;
    // Bind first: a busy port should not leave a data directory behind.
    let (listener, issuer) = latchkey_server::bind(&config)
        .await
        .map_err(|e| format!("{e} (pick another address with --listen)"))?;
    let (store, mut notes) = open_store(&config).await?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let password = latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed")?
        [..12]
        .to_owned();
    let user = admin::create_user(
        store.as_ref(),
        admin::NewUser {
            username: "demo".into(),
            password: password.clone(),
            email: Some("demo@example.com".into()),
            name: Some("Demo User".into()),
        },
        now(),
    )
    .await
    .map_err(|e| format!("{e} (use a fresh --data-dir for the demo)"))?;
    let redirect_uri = format!("{issuer}/demo/callback");
    let created = admin::create_client(
        store.as_ref(),
        admin::NewClient {
            name: "Latchkey demo app".into(),
            redirect_uris: vec![redirect_uri.clone()],
            public: false,
            grant_types: None,
            scopes: None,
            first_party: false,
            post_logout_redirect_uris: vec![format!("{issuer}/demo")],
            audiences: vec![],
            resources: vec![],
            id_token_alg: None,
        },
        now(),
    )
    .await?;
    let demo = latchkey_server::http::demo::DemoClient {
        client_id: created.client.client_id.clone(),
        client_secret: created.secret.unwrap_or_default(),
        redirect_uri,
    };
    let (state, key_notes) = build_state(config, store, issuer.clone(), Some(demo)).await?;
    notes.extend(key_notes);
    notes.iter().for_each(|n| println!("{n}"));
    println!("listening on {issuer}");
    println!();
    println!("  Latchkey demo is running.");
    println!("  1. Open {issuer}/demo in a browser.");
    println!(
        "  2. Sign in as username: {}  password: {password}",
        user.username
    );
    println!(
        "  3. Allow the demo app; you land on a page with its tokens and the userinfo answer."
    );
    println!("  Data directory: {} (Ctrl-C to stop)", data_dir.display());
    println!();
    let served = latchkey_server::serve(listener, state).await;
    if temporary {
        // The demo's store lived only for this run.
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    served
}

async fn client_command(c: ClientCommand) -> Result<(), String> {
    match c {
        ClientCommand::Create {
            store,
            name,
            redirect_uris,
            public,
            grant_types,
            scopes,
            first_party,
            post_logout_redirect_uris,
            audiences,
            resources,
            id_token_alg,
            json,
        } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let created = admin::create_client(
                store.as_ref(),
                admin::NewClient {
                    name,
                    redirect_uris,
                    public,
                    grant_types,
                    scopes,
                    first_party,
                    post_logout_redirect_uris,
                    audiences,
                    resources,
                    id_token_alg,
                },
                now(),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client_id": created.client.client_id, "client_secret": created.secret})
                );
            } else {
                println!("client_id: {}", created.client.client_id);
                match created.secret {
                    Some(s) => println!(
                        "client_secret: {s}\n(the secret is shown only now; only its digest is stored)"
                    ),
                    None => println!("public client: no secret; use PKCE"),
                }
            }
            Ok(())
        }
        ClientCommand::List { store, json } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let clients = store.list_clients().await.map_err(|e| e.to_string())?;
            if json {
                let list: Vec<_> = clients
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "client_id": c.client_id,
                            "name": c.name,
                            "type": c.kind.as_str(),
                            "redirect_uris": c.redirect_uris.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                            "grant_types": c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                            "scopes": c.scopes.to_string(),
                            "first_party": c.first_party,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for c in clients {
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.client_id,
                        c.kind.as_str(),
                        c.name,
                        c.redirect_uris
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
            }
            Ok(())
        }
        ClientCommand::RotateSecret {
            store,
            client_id,
            revoke_grants,
            json,
        } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let secret =
                latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed")?;
            if !store
                .set_client_secret(&client_id, &latchkey_core::secret::digest(&secret))
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no confidential client {client_id}"));
            }
            let revoked = if revoke_grants {
                let filter = latchkey_store::GrantFilter {
                    client_id: Some(client_id.clone()),
                    ..Default::default()
                };
                store
                    .revoke_grants(&filter, now())
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                0
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client_id": client_id, "client_secret": secret, "revoked_grants": revoked})
                );
            } else {
                println!(
                    "client_secret: {secret}\n(servers refuse the old secret within client_check_interval_ms; this one is shown only now)"
                );
                if revoke_grants {
                    println!("revoked {revoked} grants");
                }
            }
            Ok(())
        }
        ClientCommand::Delete { store, client_id } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            if store
                .delete_client(&client_id, now())
                .await
                .map_err(|e| e.to_string())?
            {
                println!("deleted client {client_id} and revoked its grants");
                Ok(())
            } else {
                Err(format!("no client {client_id}"))
            }
        }
    }
}

async fn user_command(u: UserCommand) -> Result<(), String> {
    match u {
        UserCommand::Create {
            store,
            username,
            password_stdin,
            email,
            name,
            json,
        } => {
            if !password_stdin {
                return Err("pass the password on standard input with --password-stdin".into());
            }
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let user = admin::create_user(
                store.as_ref(),
                admin::NewUser {
                    username,
                    password,
                    email,
                    name,
                },
                now(),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"user_id": user.user_id, "username": user.username})
                );
            } else {
                println!("user_id: {}\nusername: {}", user.user_id, user.username);
            }
            Ok(())
        }
        UserCommand::List { store, json } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let users = store.list_users().await.map_err(|e| e.to_string())?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"user_id": u.user_id, "username": u.username, "email": u.email, "name": u.name, "disabled": u.disabled}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for u in users {
                    println!(
                        "{}\t{}\t{}",
                        u.user_id,
                        u.username,
                        u.email.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        UserCommand::Delete { store, user } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let found = admin::find_user(store.as_ref(), &user)
                .await?
                .ok_or_else(|| format!("no user {user}"))?;
            store
                .delete_user(&found.user_id, now())
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted user {} and revoked their grants", found.username);
            Ok(())
        }
    }
}

async fn grant_command(g: GrantCommand) -> Result<(), String> {
    match g {
        GrantCommand::List {
            store,
            user,
            client,
            all,
            json,
        } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let user_id = match user {
                Some(u) => Some(
                    admin::find_user(store.as_ref(), &u)
                        .await?
                        .ok_or_else(|| format!("no user {u}"))?
                        .user_id,
                ),
                None => None,
            };
            let filter = latchkey_store::GrantFilter {
                user_id,
                client_id: client,
                session_hash: None,
                active_only: !all,
            };
            let grants = store
                .list_grants(&filter, now(), 10_000)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                let list: Vec<_> = grants
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "grant_id": g.grant_id,
                            "user_id": g.user_id,
                            "client_id": g.client_id,
                            "scope": g.scope.to_string(),
                            "created_at": g.created_at,
                            "last_used_at": g.last_used_at,
                            "expires_at": g.expires_at,
                            "revoked_at": g.revoked_at,
                            "refresh_generation": g.refresh_generation,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for g in grants {
                    let state = if g.revoked_at.is_some() {
                        "revoked"
                    } else if g.expires_at <= now() {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        g.grant_id, state, g.user_id, g.client_id, g.scope
                    );
                }
            }
            Ok(())
        }
        GrantCommand::Revoke { store, grant_id } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            match store.grant(&grant_id).await.map_err(|e| e.to_string())? {
                None => Err(format!("no grant {grant_id}")),
                Some(g) if g.revoked_at.is_some() => {
                    println!("grant {grant_id} was already revoked");
                    Ok(())
                }
                Some(_) => {
                    store
                        .revoke_grant(&grant_id, now())
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("revoked grant {grant_id}");
                    Ok(())
                }
            }
        }
    }
}

async fn keys_command(k: KeysCommand) -> Result<(), String> {
    use latchkey_server::keys;
    match k {
        KeysCommand::List { store, json } => {
            let (store, _) = open_existing_store(&store.config(None, None)?).await?;
            let records = store.keys().await.map_err(|e| e.to_string())?;
            if json {
                let list: Vec<_> = records
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "kid": k.kid,
                            "alg": k.alg.as_str(),
                            "state": k.state.as_str(),
                            "published": k.state.is_published(),
                            "created_at": k.created_at,
                            "state_since": k.state_since,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for k in records {
                    println!(
                        "{}\t{}\t{}\tsince {}",
                        k.kid,
                        k.alg.as_str(),
                        k.state.as_str(),
                        k.state_since
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Rotate {
            store,
            alg,
            now: immediately,
        } => {
            let config = store.config(None, None)?;
            let (store, _) = open_existing_store(&config).await?;
            let (master, _) = latchkey_server::load_master_key(&config, store.as_ref()).await?;
            let algs = match alg {
                Some(a) => vec![
                    latchkey_core::jose::Alg::ALL
                        .into_iter()
                        .find(|x| x.as_str().eq_ignore_ascii_case(&a))
                        .ok_or_else(|| {
                            format!("unknown algorithm {a}; use EdDSA, ES256 or RS256")
                        })?,
                ],
                None => latchkey_core::jose::Alg::ALL.to_vec(),
            };
            let writes = keys::rotate(
                store.as_ref(),
                &std::sync::Arc::new(master),
                &algs,
                immediately,
                now(),
            )
            .await
            .map_err(|e| e.to_string())?;
            for w in writes {
                if let latchkey_store::KeyWrite::Insert(k) = w {
                    if immediately {
                        println!(
                            "{} ({}) signs now; the previous key stays published until its tokens expire",
                            k.kid,
                            k.alg.as_str()
                        );
                    } else {
                        println!(
                            "{} ({}) is published and takes over after {} s",
                            k.kid,
                            k.alg.as_str(),
                            config.prepublish()
                        );
                    }
                }
            }
            Ok(())
        }
        KeysCommand::Revoke { store, kid } => {
            let config = store.config(None, None)?;
            let (store, _) = open_existing_store(&config).await?;
            let (master, _) = latchkey_server::load_master_key(&config, store.as_ref()).await?;
            match keys::revoke(store.as_ref(), &std::sync::Arc::new(master), &kid, now())
                .await
                .map_err(|e| e.to_string())?
            {
                None => Err(format!("no key {kid}")),
                Some(writes) => {
                    println!(
                        "revoked {kid}: removed from the JWKS; servers drop it within key_check_interval, and verifiers following the feed at once"
                    );
                    for w in writes {
                        if let latchkey_store::KeyWrite::Insert(k) = w {
                            println!("{} ({}) signs in its place", k.kid, k.alg.as_str());
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}
