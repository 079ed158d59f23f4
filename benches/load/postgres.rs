//! A PostgreSQL schema of the run's own, so the server starts on an empty database and
//! nothing is left behind.

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;

/// A schema created for this run; dropped by [`Schema::drop_now`] or when dropped.
pub struct Schema {
    base: String,
    name: String,
    dropped: bool,
}

impl Schema {
    /// Creates a fresh schema on the database `base` names.
    pub fn create(base: &str) -> Result<Self, String> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = format!("bench_load_{}_{millis}", std::process::id());
        connect(base)?
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .map_err(|e| format!("creating schema {name}: {e}"))?;
        Ok(Self {
            base: base.to_owned(),
            name,
            dropped: false,
        })
    }

    /// The database URL with this schema first on the search path.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// Drops the schema and all it holds.
    pub fn drop_now(mut self) {
        self.drop_schema();
    }

    fn drop_schema(&mut self) {
        if std::mem::replace(&mut self.dropped, true) {
            return;
        }
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) =
            connect(&self.base).and_then(|mut c| c.batch_execute(&sql).map_err(|e| e.to_string()))
        {
            eprintln!("load: could not drop schema {}: {e}", self.name);
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.drop_schema();
    }
}

fn connect(url: &str) -> Result<diesel::PgConnection, String> {
    diesel::PgConnection::establish(url).map_err(|e| format!("connecting to PostgreSQL: {e}"))
}
