//! Validated identifiers. Channel and node names travel in URLs, metric labels, file names and
//! wire frames, so they are restricted once here instead of being escaped everywhere.

use std::fmt;
use std::sync::Arc;

/// Longest channel or node name accepted anywhere.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error(
        "{kind} name {name:?} may only contain ASCII letters, digits, '-', '_' and '.' (and must not start with '.')"
    )]
    BadChar { kind: &'static str, name: String },
}

fn validate(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind, len: s.len() });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if s.starts_with('.') || !s.chars().all(ok_char) {
        return Err(NameError::BadChar { kind, name: s.chars().take(80).collect() });
    }
    Ok(())
}

macro_rules! name_type {
    ($ty:ident, $kind:literal) => {
        /// A validated name; cheap to clone (shared string).
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(Arc<str>);

        impl $ty {
            pub fn new(s: &str) -> Result<Self, NameError> {
                validate($kind, s)?;
                Ok(Self(Arc::from(s)))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(ChannelId, "channel");
name_type!(NodeId, "node");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(ChannelId::new("live-1.hd_2").unwrap().as_str(), "live-1.hd_2");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(ChannelId::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(ChannelId::new(&"a".repeat(65)), Err(NameError::TooLong { .. })));
        for bad in ["a/b", "..", ".hidden", "a b", "é", "x\n"] {
            assert!(matches!(NodeId::new(bad), Err(NameError::BadChar { .. })), "{bad:?}");
        }
    }
}
