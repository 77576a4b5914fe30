use ferry_content::Digest;
pub use ferry_net::api::Role;

/// Where a chunk's bytes live in the content store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The object (whole file) holding it.
    pub object: Digest,
    /// Offset inside the object.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// Where a chunk that is on the hub can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkSource {
    /// Inside a published object.
    Stored(ChunkLocation),
    /// Inside an uploaded pack waiting for a publish.
    Staged {
        /// The pack's id.
        pack: Digest,
        /// Offset inside the pack.
        offset: u64,
        /// Length.
        len: u32,
    },
}

/// A published manifest as the signed metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// TUF target name.
    pub name: String,
    /// Length of the manifest in bytes.
    pub length: u64,
    /// SHA-256 of the manifest.
    pub sha256: Digest,
}

/// One stored object a new version brings, with its chunk index.
#[derive(Debug, Clone)]
pub struct NewObject {
    /// The object's content id.
    pub id: Digest,
    /// Its size.
    pub size: u64,
    /// Each chunk's digest, offset and length inside it.
    pub chunks: Vec<(Digest, u64, u32)>,
}

impl NewObject {
    /// The object `id` made of `chunks` in order, with each chunk's offset.
    pub fn new(id: Digest, chunks: &[ferry_content::ChunkRef]) -> NewObject {
        let mut offset = 0u64;
        let chunks = chunks
            .iter()
            .map(|c| {
                let entry = (c.digest, offset, c.len);
                offset += c.len as u64;
                entry
            })
            .collect();
        NewObject {
            id,
            size: offset,
            chunks,
        }
    }
}

/// A version about to be published.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: semver::Version,
    /// TUF target name of its manifest.
    pub target: String,
    /// The serialized manifest.
    pub manifest: Vec<u8>,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Number of entries.
    pub file_count: u64,
    /// Unix time of the publish.
    pub published_at: i64,
    /// Client id of the publisher.
    pub published_by: String,
    /// Objects the version references (new or already stored).
    pub objects: Vec<NewObject>,
}

/// A published version, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionRecord {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: semver::Version,
    /// TUF target name of its manifest.
    pub target: String,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Number of entries.
    pub file_count: u64,
    /// Unix time of the publish.
    pub published_at: i64,
    /// Client id of the publisher.
    pub published_by: String,
    /// SHA-256 of its manifest.
    pub manifest_sha256: Digest,
}

/// A one-time enrollment token, as stored (only a hash of its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public token id.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
    /// Role the token enrolls.
    pub role: Role,
    /// Site the token enrolls into, if any.
    pub site: Option<String>,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time after which it is refused.
    pub expires_at: i64,
}

/// An enrolled client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientRecord {
    /// Client id (also the certificate's common name).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its site, if any.
    pub site: Option<String>,
    /// SHA-256 of its certificate (DER), hex.
    #[serde(serialize_with = "hex_bytes")]
    pub cert_sha256: [u8; 32],
    /// Unix time of enrollment.
    pub enrolled_at: i64,
    /// Unix time of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}
