use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ContentError;

/// A validated package name: 1-64 characters of `[a-z0-9._-]`, starting with a
/// letter or digit, so it is safe in URLs, file names and TUF target names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName(String);

impl PackageName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, ContentError> {
        let bad = |reason| ContentError::InvalidName {
            name: name.chars().take(100).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(bad("it is longer than 64 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(bad("it contains a character outside [a-z0-9._-]"));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad("it does not start with a letter or digit"));
        }
        Ok(PackageName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PackageName {
    type Err = ContentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PackageName::new(s)
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for PackageName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PackageName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PackageName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "hello-world", "lib.ssl_3", "0day"] {
            assert!(PackageName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".hidden",
            "Upper",
            "a/b",
            "a b",
            "..",
            "é",
            &"x".repeat(65),
        ] {
            assert!(PackageName::new(bad).is_err(), "{bad}");
        }
    }
}
