//! PostgreSQL, for any number of identical nodes, through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};

use crate::db::{Backend, Cols, Exec, Map, Value};
use crate::{Result, migrations};

pub struct Postgres {
    /// PostgreSQL has row locks, so writers need no queue of their own: reads and
    /// writes share one pool.
    pool: PgPool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl Postgres {
    pub(crate) async fn connect(url: &str) -> Result<Postgres> {
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let db = Postgres { pool };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // A transaction-scoped advisory lock: nodes starting together migrate once.
        sqlx::query("SELECT pg_advisory_xact_lock(7439152001)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT AS v FROM schema_version")
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
        migrations::check_not_newer(current)?;
        for m in migrations::MIGRATIONS
            .iter()
            .filter(|m| m.version > current)
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migrations::for_postgres(m.sql)))
                .execute(&mut *tx)
                .await?;
            if !m.postgres.is_empty() {
                sqlx::raw_sql(m.postgres).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)")
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn query<'q>(
    sql: &'static str,
    args: &'q [Value<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    args.iter().fold(sqlx::query(sql), |q, v| match *v {
        Value::Int(v) => q.bind(v),
        Value::Text(v) => q.bind(v),
        Value::Bytes(v) => q.bind(v),
    })
}

impl Cols for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(col)?)
    }
}

async fn execute(c: &mut PgConnection, sql: &'static str, args: &[Value<'_>]) -> Result<u64> {
    Ok(query(sql, args).execute(c).await?.rows_affected())
}

async fn fetch_optional<T>(
    c: &mut PgConnection,
    sql: &'static str,
    args: &[Value<'_>],
    map: Map<T>,
) -> Result<Option<T>> {
    let row = query(sql, args).fetch_optional(c).await?;
    row.as_ref().map(|r| map(r)).transpose()
}

async fn fetch_all<T>(
    c: &mut PgConnection,
    sql: &'static str,
    args: &[Value<'_>],
    map: Map<T>,
) -> Result<Vec<T>> {
    let rows = query(sql, args).fetch_all(c).await?;
    rows.iter().map(|r| map(r)).collect()
}

/// Statements on a pooled connection or in a transaction: both are a connection.
macro_rules! exec_on_connection {
    ($t:ty) => {
        #[async_trait]
        impl Exec for $t {
            async fn execute(&mut self, sql: &'static str, args: &[Value<'_>]) -> Result<u64> {
                execute(self, sql, args).await
            }

            async fn fetch_optional<T: Send + 'static>(
                &mut self,
                sql: &'static str,
                args: &[Value<'_>],
                map: Map<T>,
            ) -> Result<Option<T>> {
                fetch_optional(self, sql, args, map).await
            }

            async fn fetch_all<T: Send + 'static>(
                &mut self,
                sql: &'static str,
                args: &[Value<'_>],
                map: Map<T>,
            ) -> Result<Vec<T>> {
                fetch_all(self, sql, args, map).await
            }
        }
    };
}

exec_on_connection!(PoolConnection<sqlx::Postgres>);
exec_on_connection!(sqlx::Transaction<'static, sqlx::Postgres>);

#[async_trait]
impl Backend for Postgres {
    const NAME: &'static str = "postgres";
    type Conn<'a> = PoolConnection<sqlx::Postgres>;
    type Tx<'a> = sqlx::Transaction<'static, sqlx::Postgres>;

    async fn reader(&self) -> Result<Self::Conn<'_>> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Conn<'_>> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin(&self) -> Result<Self::Tx<'_>> {
        Ok(self.pool.begin().await?)
    }

    /// A transaction-scoped advisory lock: one node proceeds, the others skip.
    async fn begin_locked(&self, lock: i64) -> Result<Option<Self::Tx<'_>>> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind(lock)
            .fetch_one(&mut *tx)
            .await?
            .try_get("locked")?;
        Ok(locked.then_some(tx))
    }

    async fn commit(tx: Self::Tx<'_>) -> Result<()> {
        Ok(tx.commit().await?)
    }
}
