use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_content::{Digest, PackageName};
use rusqlite::{Connection, OptionalExtension, params};
use subtle::ConstantTimeEq;

use crate::{
    CatalogError, ChunkIndex, ChunkLocation, ChunkSource, ClientRecord, Enrollment, NewVersion,
    Role, TargetRecord, TokenRecord, VersionCatalog, VersionRecord, schema,
};

/// Reader connections beside the one writer: WAL lets them read while a
/// publish writes, so downloads do not queue behind a large commit.
const READERS: usize = 4;

/// The SQLite catalog: one file, WAL, `synchronous=FULL`, foreign keys on;
/// one writer connection and a small pool of readers.
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn digest(bytes: Vec<u8>) -> Result<Digest, CatalogError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CatalogError::Corrupt("a stored digest is not 32 bytes".into()))?;
    Ok(Digest(arr))
}

fn role(text: String) -> Result<Role, CatalogError> {
    text.parse().map_err(CatalogError::Corrupt)
}

impl SqliteCatalog {
    /// Opens or creates the catalog at `path` and migrates it to the latest
    /// schema.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrations().to_latest(&mut conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(10))?;
            readers.push(Mutex::new(reader));
        }
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// The writer connection.
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader connection: the first idle one, else the next in turn.
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChunkIndex for SqliteCatalog {
    fn chunk_locations(
        &self,
        digests: &[Digest],
    ) -> Result<Vec<Option<ChunkLocation>>, CatalogError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare_cached("SELECT object, offset, len FROM chunks WHERE digest = ?1")?;
        digests
            .iter()
            .map(|d| {
                stmt.query_row(params![&d.0[..]], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()?
                .map(|(object, offset, len)| {
                    Ok(ChunkLocation {
                        object: digest(object)?,
                        offset: offset as u64,
                        len: len as u32,
                    })
                })
                .transpose()
            })
            .collect()
    }

    fn missing_chunks(
        &self,
        prefixes: &[u8],
        prefix_len: usize,
    ) -> Result<Vec<bool>, CatalogError> {
        if !(1..=32).contains(&prefix_len) || !prefixes.len().is_multiple_of(prefix_len) {
            return Err(CatalogError::Invalid(format!(
                "{} bytes are not whole digest prefixes of {prefix_len} bytes (1-32)",
                prefixes.len()
            )));
        }
        let mut missing = Vec::with_capacity(prefixes.len() / prefix_len);
        // A reader connection is held per batch, not for the whole query, so
        // a long query on a low-priority thread cannot keep readers from
        // serving requests.
        for batch in prefixes.chunks(prefix_len * 4096) {
            let conn = self.read();
            let mut stored =
                conn.prepare_cached("SELECT 1 FROM chunks WHERE digest BETWEEN ?1 AND ?2 LIMIT 1")?;
            let mut staged = conn.prepare_cached(
                "SELECT 1 FROM staged_chunks WHERE digest BETWEEN ?1 AND ?2 LIMIT 1",
            )?;
            for prefix in batch.chunks_exact(prefix_len) {
                let (low, high) = prefix_range(prefix);
                missing.push(
                    !stored.exists(params![&low[..], &high[..]])?
                        && !staged.exists(params![&low[..], &high[..]])?,
                );
            }
        }
        Ok(missing)
    }

    fn chunks_with_prefix(
        &self,
        prefix: &[u8],
        len: u32,
        limit: usize,
    ) -> Result<Vec<Digest>, CatalogError> {
        if !(1..=32).contains(&prefix.len()) {
            return Err(CatalogError::Invalid(format!(
                "a digest prefix of {} bytes (1-32)",
                prefix.len()
            )));
        }
        let (low, high) = prefix_range(prefix);
        let conn = self.read();
        let mut found = Vec::new();
        for sql in [
            "SELECT digest FROM chunks WHERE digest BETWEEN ?1 AND ?2 AND len = ?3 LIMIT ?4",
            "SELECT digest FROM staged_chunks WHERE digest BETWEEN ?1 AND ?2 AND len = ?3 LIMIT ?4",
        ] {
            let mut query = conn.prepare_cached(sql)?;
            let rows = query.query_map(
                params![&low[..], &high[..], len as i64, limit as i64],
                |r| r.get::<_, Vec<u8>>(0),
            )?;
            for row in rows {
                let d = digest(row?)?;
                if !found.contains(&d) {
                    found.push(d);
                }
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    fn chunk_location(&self, d: &Digest) -> Result<Option<ChunkLocation>, CatalogError> {
        let found = locate(
            &self.conn(),
            "SELECT object, offset, len FROM chunks WHERE digest = ?1",
            d,
        )?;
        Ok(found.map(|(object, offset, len)| ChunkLocation {
            object,
            offset,
            len,
        }))
    }

    fn chunk_source(&self, d: &Digest) -> Result<Option<ChunkSource>, CatalogError> {
        if let Some(at) = self.chunk_location(d)? {
            return Ok(Some(ChunkSource::Stored(at)));
        }
        let found = locate(
            &self.conn(),
            "SELECT pack, offset, len FROM staged_chunks WHERE digest = ?1",
            d,
        )?;
        Ok(found.map(|(pack, offset, len)| ChunkSource::Staged { pack, offset, len }))
    }

    fn stage_chunks(
        &self,
        pack: &Digest,
        chunks: &[(Digest, u64, u32)],
        now: i64,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO staged_chunks (digest, pack, offset, len, staged_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (d, offset, len) in chunks {
                insert.execute(params![
                    &d.0[..],
                    &pack.0[..],
                    *offset as i64,
                    *len as i64,
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn unstage(&self, digests: &[Digest]) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM staged_chunks WHERE digest = ?1")?;
            for d in digests {
                delete.execute(params![&d.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn expire_staged(&self, before: i64) -> Result<usize, CatalogError> {
        let conn = self.conn();
        Ok(conn.execute(
            "DELETE FROM staged_chunks WHERE staged_at < ?1",
            params![before],
        )?)
    }

    fn live_packs(&self) -> Result<Vec<Digest>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT pack FROM staged_chunks")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| digest(r?)).collect()
    }
}

impl VersionCatalog for SqliteCatalog {
    fn version_exists(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<bool, CatalogError> {
        let conn = self.read();
        Ok(conn
            .prepare_cached("SELECT 1 FROM versions WHERE name = ?1 AND version = ?2")?
            .exists(params![name.as_str(), version.to_string()])?)
    }

    fn commit_version(&self, v: &NewVersion) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO versions
             (name, version, target, manifest, manifest_sha256, total_size, file_count,
              published_at, published_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                v.name,
                v.version.to_string(),
                v.target,
                v.manifest,
                &Digest::of(&v.manifest).0[..],
                v.total_size as i64,
                v.file_count as i64,
                v.published_at,
                v.published_by
            ],
        )?;
        if inserted == 0 {
            return Err(CatalogError::DuplicateVersion {
                name: v.name.clone(),
                version: v.version.to_string(),
            });
        }
        {
            let mut obj =
                tx.prepare_cached("INSERT OR IGNORE INTO objects (id, size) VALUES (?1, ?2)")?;
            let mut link = tx.prepare_cached(
                "INSERT OR IGNORE INTO version_objects (name, version, object) VALUES (?1, ?2, ?3)",
            )?;
            let mut chunk = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (digest, object, offset, len) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let version = v.version.to_string();
            for o in &v.objects {
                let fresh = obj.execute(params![&o.id.0[..], o.size as i64])? == 1;
                link.execute(params![v.name, version, &o.id.0[..]])?;
                if fresh {
                    for (d, offset, len) in &o.chunks {
                        chunk.execute(params![
                            &d.0[..],
                            &o.id.0[..],
                            *offset as i64,
                            *len as i64
                        ])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_version(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<bool, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let v = version.to_string();
        tx.execute(
            "DELETE FROM version_objects WHERE name = ?1 AND version = ?2",
            params![name.as_str(), v],
        )?;
        let n = tx.execute(
            "DELETE FROM versions WHERE name = ?1 AND version = ?2",
            params![name.as_str(), v],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn list_versions(
        &self,
        name: Option<&PackageName>,
    ) -> Result<Vec<VersionRecord>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT name, version, target, total_size, file_count, published_at, published_by,
                    manifest_sha256
             FROM versions WHERE ?1 IS NULL OR name = ?1",
        )?;
        let rows = stmt.query_map(params![name.map(|n| n.as_str())], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Vec<u8>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, version, target, total, files, at, by, sha) = row?;
            let version = semver::Version::parse(&version)
                .map_err(|e| CatalogError::Corrupt(format!("version {version:?}: {e}")))?;
            out.push(VersionRecord {
                name,
                version,
                target,
                total_size: total as u64,
                file_count: files as u64,
                published_at: at,
                published_by: by,
                manifest_sha256: digest(sha)?,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
        Ok(out)
    }

    fn manifest_by_target(&self, target: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT manifest FROM versions WHERE target = ?1",
                params![target],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn all_targets(&self) -> Result<Vec<TargetRecord>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT target, length(manifest), manifest_sha256 FROM versions ORDER BY target",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, length, sha) = row?;
            out.push(TargetRecord {
                name,
                length: length as u64,
                sha256: digest(sha)?,
            });
        }
        Ok(out)
    }

    fn unreferenced_objects(&self) -> Result<Vec<Digest>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM objects WHERE id NOT IN (SELECT object FROM version_objects)",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| digest(r?)).collect()
    }

    fn delete_object(&self, id: &Digest) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM chunks WHERE object = ?1", params![&id.0[..]])?;
        tx.execute("DELETE FROM objects WHERE id = ?1", params![&id.0[..]])?;
        tx.commit()?;
        Ok(())
    }

    fn object_known(&self, id: &Digest) -> Result<bool, CatalogError> {
        let conn = self.read();
        Ok(conn
            .prepare_cached("SELECT 1 FROM objects WHERE id = ?1")?
            .exists(params![&id.0[..]])?)
    }
}

impl Enrollment for SqliteCatalog {
    fn insert_token(&self, t: &TokenRecord) -> Result<(), CatalogError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tokens (id, secret_sha256, role, site, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.id,
                &t.secret_sha256[..],
                t.role.as_str(),
                t.site,
                t.created_at,
                t.expires_at
            ],
        )?;
        Ok(())
    }

    fn peek_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8; 32],
        now: i64,
    ) -> Result<TokenRecord, CatalogError> {
        check_token(&self.conn(), token_id, secret_sha256, now)
    }

    fn redeem_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8; 32],
        now: i64,
        client: &ClientRecord,
    ) -> Result<TokenRecord, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let token = check_token(&tx, token_id, secret_sha256, now)?;
        tx.execute(
            "UPDATE tokens SET used_at = ?1, used_by = ?2 WHERE id = ?3",
            params![now, client.id, token_id],
        )?;
        tx.execute(
            "INSERT INTO clients (id, role, site, cert_sha256, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                client.id,
                token.role.as_str(),
                token.site,
                &client.cert_sha256[..],
                client.enrolled_at
            ],
        )?;
        tx.commit()?;
        Ok(token)
    }

    fn client_by_cert(&self, cert: &[u8; 32]) -> Result<Option<ClientRecord>, CatalogError> {
        let conn = self.read();
        let row = conn
            .query_row(
                "SELECT id, role, site, enrolled_at, revoked_at FROM clients WHERE cert_sha256 = ?1",
                params![&cert[..]],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(id, role_text, site, enrolled_at, revoked_at)| {
            Ok(ClientRecord {
                id,
                role: role(role_text)?,
                site,
                cert_sha256: *cert,
                enrolled_at,
                revoked_at,
            })
        })
        .transpose()
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, role, site, cert_sha256, enrolled_at, revoked_at FROM clients ORDER BY enrolled_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, role_text, site, cert, enrolled_at, revoked_at) = row?;
            out.push(ClientRecord {
                id,
                role: role(role_text)?,
                site,
                cert_sha256: digest(cert)?.0,
                enrolled_at,
                revoked_at,
            });
        }
        Ok(out)
    }

    fn revoke_client(&self, id: &str, now: i64) -> Result<bool, CatalogError> {
        let conn = self.conn();
        Ok(conn.execute(
            "UPDATE clients SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![now, id],
        )? == 1)
    }
}

/// Runs `sql`, a query for one row of (file digest, offset, length) by
/// chunk digest, and decodes the row.
fn locate(
    conn: &Connection,
    sql: &str,
    chunk: &Digest,
) -> Result<Option<(Digest, u64, u32)>, CatalogError> {
    let row = conn
        .prepare_cached(sql)?
        .query_row(params![&chunk.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    row.map(|(file, offset, len)| Ok((digest(file)?, offset as u64, len as u32)))
        .transpose()
}

/// The lowest and highest 32-byte digests that start with `prefix`.
fn prefix_range(prefix: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut low = [0u8; 32];
    let mut high = [0xffu8; 32];
    low[..prefix.len()].copy_from_slice(prefix);
    high[..prefix.len()].copy_from_slice(prefix);
    (low, high)
}

/// Looks a token up and checks secret, use and expiry.
fn check_token(
    conn: &Connection,
    token_id: &str,
    secret_sha256: &[u8; 32],
    now: i64,
) -> Result<TokenRecord, CatalogError> {
    let row = conn
        .query_row(
            "SELECT secret_sha256, role, site, created_at, expires_at, used_at
             FROM tokens WHERE id = ?1",
            params![token_id],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((stored, role_text, site, created_at, expires_at, used_at)) = row else {
        return Err(CatalogError::TokenInvalid);
    };
    // Compare in constant time so the check leaks nothing about the secret.
    let matches: bool = stored.as_slice().ct_eq(secret_sha256.as_slice()).into();
    if !matches {
        return Err(CatalogError::TokenInvalid);
    }
    if used_at.is_some() {
        return Err(CatalogError::TokenUsed);
    }
    if now >= expires_at {
        return Err(CatalogError::TokenExpired(expires_at));
    }
    Ok(TokenRecord {
        id: token_id.to_owned(),
        secret_sha256: *secret_sha256,
        role: role(role_text)?,
        site,
        created_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewObject;

    fn catalog(tag: &str) -> (SqliteCatalog, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferry-cat-{tag}"))
            .tempdir()
            .unwrap();
        (
            SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap(),
            dir,
        )
    }

    fn version(v: &str, object: Digest) -> NewVersion {
        NewVersion {
            name: "demo".into(),
            version: v.parse().unwrap(),
            target: format!("demo@{v}.json"),
            manifest: b"{}".to_vec(),
            total_size: 3,
            file_count: 1,
            published_at: 1,
            published_by: "pub".into(),
            objects: vec![NewObject {
                id: object,
                size: 3,
                chunks: vec![(Digest::of(b"abc"), 0, 3)],
            }],
        }
    }

    #[test]
    fn publish_is_immutable_and_indexed() {
        let (c, dir) = catalog("ver");
        let obj = Digest::of(b"obj");
        c.commit_version(&version("1.0.0", obj)).unwrap();
        assert!(matches!(
            c.commit_version(&version("1.0.0", obj)),
            Err(CatalogError::DuplicateVersion { .. })
        ));
        let query = |digests: &[Digest], len: usize| {
            let prefixes: Vec<u8> = digests.iter().flat_map(|d| d.0[..len].to_vec()).collect();
            c.missing_chunks(&prefixes, len).unwrap()
        };
        let abc = Digest::of(b"abc");
        assert_eq!(query(&[abc, Digest::of(b"x")], 32), vec![false, true]);
        assert_eq!(query(&[abc, Digest::of(b"x")], 8), vec![false, true]);
        let mut near = abc;
        near.0[31] ^= 1;
        assert_eq!(query(&[near], 32), vec![true], "exact at 32 bytes");
        assert_eq!(query(&[near], 31), vec![false], "a prefix match below 32");
        assert_eq!(c.chunks_with_prefix(&abc.0[..4], 3, 2).unwrap(), vec![abc]);
        assert!(
            c.chunks_with_prefix(&abc.0[..4], 4, 2).unwrap().is_empty(),
            "length differs"
        );
        assert!(
            c.missing_chunks(&[1, 2, 3], 2).is_err(),
            "ragged query accepted"
        );
        let pack = Digest::of(b"pack");
        c.stage_chunks(&pack, &[(Digest::of(b"x"), 36, 1)], 10)
            .unwrap();
        assert_eq!(
            query(&[Digest::of(b"x")], 32),
            vec![false],
            "staged counts as present"
        );
        assert_eq!(
            c.chunks_with_prefix(&Digest::of(b"x").0[..8], 1, 2)
                .unwrap(),
            vec![Digest::of(b"x")]
        );
        assert!(matches!(
            c.chunk_source(&Digest::of(b"x")).unwrap(),
            Some(ChunkSource::Staged { offset: 36, .. })
        ));
        assert_eq!(c.live_packs().unwrap(), vec![pack]);
        assert_eq!(c.expire_staged(10).unwrap(), 0);
        assert_eq!(c.expire_staged(11).unwrap(), 1);
        assert!(c.live_packs().unwrap().is_empty());
        let targets = c.all_targets().unwrap();
        assert_eq!(
            (targets[0].length, targets[0].sha256),
            (2, Digest::of(b"{}"))
        );
        assert_eq!(
            c.chunk_location(&Digest::of(b"abc"))
                .unwrap()
                .unwrap()
                .object,
            obj
        );
        c.commit_version(&version("1.1.0", obj)).unwrap();
        let listed: Vec<_> = c
            .list_versions(None)
            .unwrap()
            .into_iter()
            .map(|v| v.version.to_string())
            .collect();
        assert_eq!(listed, ["1.1.0", "1.0.0"]);
        assert!(c.unreferenced_objects().unwrap().is_empty());
        let name = PackageName::new("demo").unwrap();
        assert!(c.delete_version(&name, &"1.0.0".parse().unwrap()).unwrap());
        assert!(
            c.unreferenced_objects().unwrap().is_empty(),
            "1.1.0 still uses it"
        );
        assert!(c.delete_version(&name, &"1.1.0".parse().unwrap()).unwrap());
        assert_eq!(c.unreferenced_objects().unwrap(), vec![obj]);
        c.delete_object(&obj).unwrap();
        assert_eq!(query(&[Digest::of(b"abc")], 32), vec![true]);
        drop(dir);
    }

    #[test]
    fn tokens_are_one_time_and_expire() {
        let (c, dir) = catalog("tok");
        let secret = [7u8; 32];
        c.insert_token(&TokenRecord {
            id: "t1".into(),
            secret_sha256: secret,
            role: Role::Agent,
            site: Some("berlin".into()),
            created_at: 0,
            expires_at: 100,
        })
        .unwrap();
        let client = |id: &str, fp: u8| ClientRecord {
            id: id.into(),
            role: Role::Agent,
            site: None,
            cert_sha256: [fp; 32],
            enrolled_at: 1,
            revoked_at: None,
        };
        assert!(matches!(
            c.redeem_token("t1", &[8u8; 32], 1, &client("a", 1)),
            Err(CatalogError::TokenInvalid)
        ));
        assert!(matches!(
            c.redeem_token("t1", &secret, 100, &client("a", 1)),
            Err(CatalogError::TokenExpired(_))
        ));
        let t = c.redeem_token("t1", &secret, 50, &client("a", 1)).unwrap();
        assert_eq!(t.site.as_deref(), Some("berlin"));
        assert!(matches!(
            c.redeem_token("t1", &secret, 51, &client("b", 2)),
            Err(CatalogError::TokenUsed)
        ));
        let got = c.client_by_cert(&[1u8; 32]).unwrap().unwrap();
        assert_eq!(
            (got.role, got.site.as_deref()),
            (Role::Agent, Some("berlin"))
        );
        assert!(c.revoke_client("a", 60).unwrap());
        assert!(
            c.client_by_cert(&[1u8; 32])
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        drop(dir);
    }
}
