//! What a workload writes to the database: every row inserted, updated or deleted,
//! counted by triggers that append to a log table during an untimed pass (never during
//! a timed one), and the bytes the tables and their indexes grow by.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::postgres::PgPool;

pub enum Db {
    Sqlite(rusqlite::Connection),
    Pg(PgPool),
}

/// Rows written per (table, operation), and bytes per table (with its indexes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub writes: BTreeMap<String, i64>,
    pub bytes: BTreeMap<String, i64>,
}

impl Snapshot {
    /// What happened between `self` and `after`, leaving out zero entries.
    pub fn delta(&self, after: &Snapshot) -> Snapshot {
        let diff = |a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| {
            let mut out = BTreeMap::new();
            for (k, v) in b {
                let d = v - a.get(k).copied().unwrap_or(0);
                if d != 0 {
                    out.insert(k.clone(), d);
                }
            }
            for (k, v) in a {
                if !b.contains_key(k) && *v != 0 {
                    out.insert(k.clone(), -v);
                }
            }
            out
        };
        Snapshot {
            writes: diff(&self.writes, &after.writes),
            bytes: diff(&self.bytes, &after.bytes),
        }
    }
}

const LOG: &str = "bench_writes";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Name and count rows of `sql` on SQLite: (text, text, integer) or (text, integer).
fn sqlite_rows(c: &rusqlite::Connection, sql: &str) -> Result<Vec<(String, i64)>, String> {
    let mut stmt = c.prepare(sql).map_err(err)?;
    let columns = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            if columns == 3 {
                Ok((
                    format!("{} {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)?,
                ))
            } else {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            }
        })
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

impl Db {
    async fn tables(&self) -> Result<Vec<String>, String> {
        let rows = match self {
            Db::Sqlite(c) => {
                let mut stmt = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'bench_%' ORDER BY name")
                    .map_err(err)?;
                let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
                names.collect::<Result<Vec<_>, _>>().map_err(err)?
            }
            Db::Pg(p) => {
                sqlx::query("SELECT tablename::TEXT AS name FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'bench_%' ORDER BY tablename")
                    .fetch_all(p)
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|r| r.try_get::<String, _>("name"))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?
            }
        };
        Ok(rows)
    }

    /// Adds the log table and one trigger per table and operation.
    pub async fn install_counters(&self) -> Result<(), String> {
        self.remove_counters().await?;
        let tables = self.tables().await?;
        match self {
            Db::Sqlite(c) => {
                let mut sql = format!("CREATE TABLE {LOG} (tbl TEXT NOT NULL, op TEXT NOT NULL);");
                for t in &tables {
                    for op in ["INSERT", "UPDATE", "DELETE"] {
                        let lower = op.to_ascii_lowercase();
                        sql.push_str(&format!(
                            "CREATE TRIGGER bench_w_{t}_{lower} AFTER {op} ON {t} BEGIN INSERT INTO {LOG} (tbl, op) VALUES ('{t}', '{lower}'); END;"
                        ));
                    }
                }
                c.execute_batch(&sql).map_err(err)?;
            }
            Db::Pg(p) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE TABLE {LOG} (tbl TEXT NOT NULL, op TEXT NOT NULL);
                     CREATE OR REPLACE FUNCTION bench_count_write() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN INSERT INTO {LOG} (tbl, op) VALUES (TG_TABLE_NAME, lower(TG_OP)); RETURN NULL; END $$;"
                )))
                .execute(p)
                .await
                .map_err(err)?;
                for t in &tables {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "CREATE TRIGGER bench_w_{t} AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION bench_count_write()"
                    )))
                    .execute(p)
                    .await
                    .map_err(err)?;
                }
            }
        }
        Ok(())
    }

    pub async fn remove_counters(&self) -> Result<(), String> {
        let tables = self.tables().await?;
        match self {
            Db::Sqlite(c) => {
                let mut sql = String::new();
                for t in &tables {
                    for op in ["insert", "update", "delete"] {
                        sql.push_str(&format!("DROP TRIGGER IF EXISTS bench_w_{t}_{op};"));
                    }
                }
                sql.push_str(&format!("DROP TABLE IF EXISTS {LOG};"));
                c.execute_batch(&sql).map_err(err)?;
            }
            Db::Pg(p) => {
                for t in &tables {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP TRIGGER IF EXISTS bench_w_{t} ON {t}"
                    )))
                    .execute(p)
                    .await
                    .map_err(err)?;
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS {LOG}; DROP FUNCTION IF EXISTS bench_count_write()"
                )))
                .execute(p)
                .await
                .map_err(err)?;
            }
        }
        Ok(())
    }

    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let count_sql = format!("SELECT tbl, op, COUNT(*) AS n FROM {LOG} GROUP BY tbl, op");
        let mut writes = BTreeMap::new();
        let mut bytes = BTreeMap::new();
        match self {
            Db::Sqlite(c) => {
                writes.extend(sqlite_rows(c, &count_sql)?);
                // dbstat sees the WAL's pages too, so no checkpoint is needed.
                match sqlite_rows(
                    c,
                    "SELECT m.tbl_name AS t, SUM(s.pgsize) AS b FROM dbstat s JOIN sqlite_master m ON m.name = s.name WHERE m.tbl_name NOT LIKE 'bench_%' GROUP BY m.tbl_name",
                ) {
                    Ok(rows) => bytes.extend(rows),
                    Err(_) => {
                        // Without the dbstat table: the whole file, log table included.
                        let b: i64 = c
                            .query_row(
                                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                                [],
                                |r| r.get(0),
                            )
                            .map_err(err)?;
                        bytes.insert("(database file)".into(), b);
                    }
                }
            }
            Db::Pg(p) => {
                for r in sqlx::query(sqlx::AssertSqlSafe(count_sql))
                    .fetch_all(p)
                    .await
                    .map_err(err)?
                {
                    writes.insert(
                        format!(
                            "{} {}",
                            r.try_get::<String, _>("tbl").map_err(err)?,
                            r.try_get::<String, _>("op").map_err(err)?
                        ),
                        r.try_get::<i64, _>("n").map_err(err)?,
                    );
                }
                for r in sqlx::query(
                    "SELECT relname::TEXT AS t, pg_total_relation_size(relid)::BIGINT AS b FROM pg_stat_user_tables WHERE relname NOT LIKE 'bench_%'",
                )
                .fetch_all(p)
                .await
                .map_err(err)?
                {
                    bytes.insert(
                        r.try_get::<String, _>("t").map_err(err)?,
                        r.try_get::<i64, _>("b").map_err(err)?,
                    );
                }
            }
        }
        Ok(Snapshot { writes, bytes })
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(c) => drop(c),
            Db::Pg(p) => p.close().await,
        }
    }
}
