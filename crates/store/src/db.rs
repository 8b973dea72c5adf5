//! The little the store needs of a SQL driver: run a statement with parameters, read
//! rows by column name, and hand out readers, the writer and transactions. The store
//! (`sql.rs`) is written once against this; `sqlite.rs` and `postgres.rs` provide it.

use async_trait::async_trait;

use crate::Result;

/// A statement parameter, typed even when null: PostgreSQL infers parameter types from
/// the values sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bytes(Option<&'a [u8]>),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(Some(i64::from(v)))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Value::Text(v.as_deref())
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(Some(v))
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Value::Bytes(Some(v))
    }
}

/// The parameters of a statement, `$1` first.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::db::Value::from($v)),*]
    };
}
pub(crate) use args;

/// One result row, read by column name.
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>>;
}

/// Turns a row into a value.
pub(crate) type Map<T> = fn(&dyn Cols) -> Result<T>;

/// Something statements run on: a connection or a transaction. Statements are
/// `'static` text, never built from input.
#[async_trait]
pub(crate) trait Exec: Send {
    /// Runs a statement; returns the rows it changed.
    async fn execute(&mut self, sql: &'static str, args: &[Value<'_>]) -> Result<u64>;

    async fn fetch_optional<T: Send + 'static>(
        &mut self,
        sql: &'static str,
        args: &[Value<'_>],
        map: Map<T>,
    ) -> Result<Option<T>>;

    async fn fetch_all<T: Send + 'static>(
        &mut self,
        sql: &'static str,
        args: &[Value<'_>],
        map: Map<T>,
    ) -> Result<Vec<T>>;
}

/// A database: where readers, the writer and transactions come from.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    const NAME: &'static str;
    type Conn<'a>: Exec + 'a
    where
        Self: 'a;
    type Tx<'a>: Exec + 'a
    where
        Self: 'a;

    /// A connection for reads. Drop it before asking for the writer or a
    /// transaction: on SQLite it may be the writer itself, lent while it was idle, and
    /// waiting for the writer while holding it never ends.
    async fn reader(&self) -> Result<Self::Conn<'_>>;
    /// A connection for a single-statement write (committed on its own).
    async fn writer(&self) -> Result<Self::Conn<'_>>;
    /// A write transaction; dropped without [`Backend::commit`], it rolls back. On
    /// SQLite it may see the uncommitted writes of other transactions of its batch, so
    /// what a caller decides from a read in it is answered through `commit` (which
    /// waits for the batch), not after a drop. A statement's error in it (a unique
    /// conflict) may likewise come from a write of the batch that is not committed
    /// yet: the store's transactions only ever turn such an error into a failure.
    async fn begin(&self) -> Result<Self::Tx<'_>>;
    /// A write transaction that holds `lock`, which one holder at a time has across
    /// every node; `None` if another holds it.
    async fn begin_locked(&self, lock: i64) -> Result<Option<Self::Tx<'_>>>;
    async fn commit(tx: Self::Tx<'_>) -> Result<()>;
}
