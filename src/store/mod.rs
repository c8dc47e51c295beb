//! Persistence: sea-orm entities and the queries the service runs. SQLite by default,
//! PostgreSQL when `DATABASE_URL` says so; the same migrations serve both.

pub mod carts;
pub mod customers;
pub mod entities;
pub mod housekeeping;
pub mod jobs;
pub mod order_history;
pub mod orders;
pub mod otp;
pub mod rate_limits;
pub mod registrations;
pub mod sessions;
mod sql;
pub mod webhooks;

use crate::config::DatabaseSettings;
use cbtl_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("database: stored data unreadable: {0}")]
    Corrupt(String),
    #[error("database: cannot create the directory for {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
}

/// Connects to `url` with the pool `settings` describe, creating a SQLite file's directory
/// when it is missing.
pub async fn connect(
    url: &str,
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, StoreError> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: path.to_owned(),
            source,
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(settings.pool_size(url))
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(settings.acquire_timeout())
        .sqlx_logging(false)
        // WAL lets readers and one writer work at once; the busy timeout makes concurrent
        // writers queue instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    Ok(Database::connect(options).await?)
}

/// How many SQL statements the service ran through its pool since start, in or out of a
/// transaction: one atomic add per statement, for tests (queries per request) and
/// diagnostics.
#[derive(Clone, Debug, Default)]
pub struct StatementCount(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl StatementCount {
    /// Statements run so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts every statement `db` (and every clone made of it from now on) runs, here and in
/// `also` (called once per statement, e.g. the Prometheus counter). sea-orm keeps one
/// metric callback per pool, so every count goes through this one.
pub fn count_statements(
    db: &mut DatabaseConnection,
    also: impl Fn() + Send + Sync + 'static,
) -> StatementCount {
    let count = StatementCount::default();
    let counter = count.0.clone();
    db.set_metric_callback(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        also();
    });
    count
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// True when the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths_are_found_in_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/cbtl.db?mode=rwc"),
            Some("data/cbtl.db")
        );
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://localhost/test"), None);
    }
}
