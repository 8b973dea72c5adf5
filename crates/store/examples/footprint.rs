//! Measures what the store costs: bytes per active grant on each backend, and the time
//! to sweep one million expired sessions in batches of 1,000.
//!
//! ```sh
//! cargo run --release -p latchkey-store --example footprint -- [--grants 10000] [--sessions 1000000] [--pg postgres://postgres@127.0.0.1:5432/test]
//! ```
//! SQLite runs in a temporary directory; PostgreSQL in a database created and dropped
//! for the run.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool"
)]

use std::time::Instant;

use latchkey_core::model::Grant;
use latchkey_core::scope::Scope;
use latchkey_store::{PgStore, SqliteStore, Store};
use sqlx::Connection;

const NOW: i64 = 1_800_000_000;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn grant(i: usize) -> Grant {
    Grant {
        grant_id: format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        user_id: format!("{:032x}", i as u128 * 31),
        client_id: "mC0gq1lYpJ6d8rZkT3xW2u".into(),
        scope: Scope::parse("openid profile email offline_access").unwrap(),
        auth_time: NOW,
        session_hash: Some("q3Yg7cJ0d8rZkT3xW2uPp1lYpJ6d8rZkT3xW2uPp1lY".into()),
        nonce: Some("n-0S6_WzA2Mj".into()),
        audience: None,
        refresh_generation: 1,
        refresh_hash: Some("Zk9qT3xW2uPp1lYpJ6d8rZkT3xW2uPp1lYq3Yg7cJ0d".into()),
        created_at: NOW,
        last_used_at: NOW,
        expires_at: NOW + 30 * 86400,
        revoked_at: None,
        grace_used: false,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let grants: usize = arg("--grants", "10000").parse().unwrap();
    let sessions: i64 = arg("--sessions", "1000000").parse().unwrap();
    let pg_admin = arg("--pg", "postgres://postgres@127.0.0.1:5432/test");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.db");
    let sqlite = SqliteStore::open(&file).await.unwrap();
    println!("SQLite ({})", file.display());
    let size = |f: &std::path::Path| -> u64 {
        ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", f.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    };
    let side = rusqlite::Connection::open(&file).unwrap();
    let checkpoint = || {
        side.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    };
    checkpoint();
    let before = size(&file);
    for i in 0..grants {
        sqlite.insert_grant(&grant(i)).await.unwrap();
    }
    checkpoint();
    let after = size(&file);
    println!(
        "  {grants} grants: {} bytes per grant (table and indexes), 1 row each",
        (after - before) / grants as u64
    );
    sweep_sessions_sqlite(&sqlite, &side, sessions).await;

    let mut admin = sqlx::PgConnection::connect(&pg_admin)
        .await
        .expect("PostgreSQL for the measurement");
    let name = format!("latchkey_footprint_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", pg_admin.rsplit_once('/').unwrap().0);
    {
        let pg = PgStore::connect(&url).await.unwrap();
        println!("PostgreSQL");
        let rel = "SELECT pg_total_relation_size('grants')::BIGINT AS n";
        let before: i64 =
            sqlx::Row::get(&sqlx::query(rel).fetch_one(pg.pool()).await.unwrap(), "n");
        for i in 0..grants {
            pg.insert_grant(&grant(i)).await.unwrap();
        }
        sqlx::query("VACUUM ANALYZE grants")
            .execute(pg.pool())
            .await
            .unwrap();
        let after: i64 = sqlx::Row::get(&sqlx::query(rel).fetch_one(pg.pool()).await.unwrap(), "n");
        println!(
            "  {grants} grants: {} bytes per grant (heap, TOAST and indexes), 1 row each",
            (after - before) / grants as i64
        );
        sweep_sessions_pg(&pg, sessions).await;
        pg.pool().close().await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

async fn sweep_sessions_sqlite(s: &SqliteStore, side: &rusqlite::Connection, n: i64) {
    let t = Instant::now();
    side.execute(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1)
         INSERT INTO sessions (session_hash, user_id, auth_time, expires_at)
         SELECT 's' || i, 'user', ?2, ?2 - 1 FROM seq",
        rusqlite::params![n, NOW],
    )
    .unwrap();
    println!(
        "  inserted {n} expired sessions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    sweep(s, n).await;
}

async fn sweep_sessions_pg(s: &PgStore, n: i64) {
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at)
         SELECT 's' || i, 'user', $2, $2 - 1 FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .bind(NOW)
    .execute(s.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE sessions")
        .execute(s.pool())
        .await
        .unwrap();
    println!(
        "  inserted {n} expired sessions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    sweep(s, n).await;
}

/// Sweeps the way the server does: batches of 1,000 until none is left.
async fn sweep(s: &dyn Store, n: i64) {
    let t = Instant::now();
    let mut total = 0u64;
    let mut batches = 0u64;
    let mut slowest = std::time::Duration::ZERO;
    loop {
        let b = Instant::now();
        let r = s
            .sweep(NOW, NOW - 3600, 1000)
            .await
            .unwrap()
            .expect("no other sweeper");
        slowest = slowest.max(b.elapsed());
        batches += 1;
        total += r.sessions;
        if r.sessions < 1000 {
            break;
        }
    }
    assert_eq!(total, u64::try_from(n).unwrap());
    println!(
        "  swept {total} expired sessions in {:.1} s ({batches} batches of 1,000; slowest batch {:.1} ms, so no lock is held longer)",
        t.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
}
