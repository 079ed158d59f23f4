-- One row that the health check rewrites: a check that writes notices a database that still
-- reads but no longer writes (a full disk, a read-only file, a PostgreSQL replica).
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY NOT NULL,
    checked_at BIGINT NOT NULL
);
