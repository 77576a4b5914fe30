use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ContentError;

/// A validated relative path inside a package, always with `/` separators.
///
/// Rules: not empty, not absolute, no `.`/`..`/empty components, no NUL or
/// backslash, no component over 255 bytes, at most 4096 bytes in total. These
/// make the path safe to join under any target directory on Unix and Windows.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Longest accepted path, in bytes.
    pub const MAX_LEN: usize = 4096;
    /// Longest accepted path component, in bytes.
    pub const MAX_COMPONENT: usize = 255;

    /// Validates `path`.
    pub fn new(path: &str) -> Result<Self, ContentError> {
        let bad = |reason: &str| ContentError::InvalidPath {
            path: path.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        if path.is_empty() {
            return Err(bad("it is empty"));
        }
        if path.len() > Self::MAX_LEN {
            return Err(bad("it is longer than 4096 bytes"));
        }
        if path.starts_with('/') {
            return Err(bad(
                "it is absolute; paths must be relative to the package root",
            ));
        }
        if path.contains('\\') || path.contains('\0') {
            return Err(bad("it contains a backslash or NUL byte"));
        }
        if path.len() >= 2 && path.as_bytes()[1] == b':' {
            return Err(bad("it looks like a Windows drive path"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(bad("it has an empty component (a doubled or trailing '/')")),
                "." => return Err(bad("it has a '.' component")),
                ".." => {
                    return Err(bad(
                        "it has a '..' component, which could leave the package",
                    ));
                }
                c if c.len() > Self::MAX_COMPONENT => {
                    return Err(bad("it has a component longer than 255 bytes"));
                }
                _ => {}
            }
        }
        Ok(RelPath(path.to_owned()))
    }

    /// The path as a string with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Resolves a symlink target written relative to this path's directory,
    /// returning the package path it points to, or `None` if it leaves the
    /// package (absolute target, or more `..` than there are parents).
    pub fn resolve_link(&self, target: &str) -> Option<Vec<String>> {
        if target.is_empty() || target.starts_with('/') || target.contains('\0') {
            return None;
        }
        let mut stack: Vec<String> = self.0.split('/').map(str::to_owned).collect();
        stack.pop(); // the link itself
        for component in target.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    stack.pop()?;
                }
                c => stack.push(c.to_owned()),
            }
        }
        Some(stack)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "c:x",
            "a\\b",
            "a\0b",
            "..",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(256);
        assert!(RelPath::new(&long).is_err());
        assert!(RelPath::new(&["a"; 2049].join("/")).is_err());
        for ok in ["a", "bin/tool", "share/doc/README.md", "..hidden", "a..b"] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} refused");
        }
    }

    #[test]
    fn link_resolution_stays_inside() {
        let p = RelPath::new("a/b/link").unwrap();
        assert_eq!(p.resolve_link("../c").unwrap(), vec!["a", "c"]);
        assert_eq!(p.resolve_link("../../top").unwrap(), vec!["top"]);
        assert!(p.resolve_link("../../../out").is_none());
        assert!(p.resolve_link("/etc/passwd").is_none());
    }
}
