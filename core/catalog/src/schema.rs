use rusqlite_migration::{M, Migrations};

/// The hub schema, one migration per change; never edit a released step.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
        CREATE TABLE versions (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            target TEXT NOT NULL UNIQUE,
            manifest BLOB NOT NULL,
            manifest_sha256 BLOB NOT NULL,
            total_size INTEGER NOT NULL,
            file_count INTEGER NOT NULL,
            published_at INTEGER NOT NULL,
            published_by TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE TABLE objects (
            id BLOB PRIMARY KEY,
            size INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE version_objects (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            object BLOB NOT NULL REFERENCES objects(id),
            PRIMARY KEY (name, version, object),
            FOREIGN KEY (name, version) REFERENCES versions(name, version)
        ) WITHOUT ROWID;
        CREATE INDEX version_objects_by_object ON version_objects(object);
        CREATE TABLE chunks (
            digest BLOB PRIMARY KEY,
            object BLOB NOT NULL REFERENCES objects(id),
            offset INTEGER NOT NULL,
            len INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX chunks_by_object ON chunks(object);
        CREATE TABLE staged_chunks (
            digest BLOB PRIMARY KEY,
            pack BLOB NOT NULL,
            offset INTEGER NOT NULL,
            len INTEGER NOT NULL,
            staged_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX staged_chunks_by_pack ON staged_chunks(pack);
        CREATE INDEX staged_chunks_by_age ON staged_chunks(staged_at);
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            secret_sha256 BLOB NOT NULL,
            role TEXT NOT NULL,
            site TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER,
            used_by TEXT
        );
        CREATE TABLE clients (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            site TEXT,
            cert_sha256 BLOB NOT NULL UNIQUE,
            enrolled_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        "#,
        ),
        // Agents' reports: the hub keeps them; a relay keeps them until its
        // upstream holds them (its outbox).
        M::up(
            r#"
        CREATE TABLE reports (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX reports_by_arrival ON reports(received_at);
        CREATE INDEX reports_by_agent ON reports(agent, created_at);
        "#,
        ),
        // A relay's cache: when each version was last asked for, pins, and
        // versions evicted for the disk quota.
        M::up(
            r#"
        CREATE TABLE cache_entries (
            target TEXT PRIMARY KEY,
            last_used INTEGER NOT NULL DEFAULT 0,
            pinned_until INTEGER,
            pin_reason TEXT,
            evicted INTEGER NOT NULL DEFAULT 0
        );
        "#,
        ),
        // Tasks as the hub signed them, each agent's newest report per task,
        // groups of agents, and each agent's newest inventory.
        M::up(
            r#"
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            body TEXT NOT NULL,
            document TEXT NOT NULL
        );
        CREATE TABLE task_states (
            task TEXT NOT NULL,
            agent TEXT NOT NULL,
            seq INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            report TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (task, agent)
        ) WITHOUT ROWID;
        CREATE TABLE groups (
            name TEXT PRIMARY KEY,
            created_at INTEGER NOT NULL,
            selectors TEXT NOT NULL
        );
        CREATE TABLE inventories (
            agent TEXT PRIMARY KEY,
            reported_at INTEGER NOT NULL,
            body TEXT NOT NULL
        ) WITHOUT ROWID;
        "#,
        ),
        // Settings set centrally: one row, the values of every scope and
        // the signed document agents get.
        M::up(
            r#"
        CREATE TABLE settings (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            body TEXT NOT NULL,
            document TEXT NOT NULL
        );
        "#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
