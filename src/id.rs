//! Identifiers that cross module boundaries: node ids, stream names and object names.
//!
//! Each is a validated newtype, so that a name that reached a `StreamName` can be used as a path segment,
//! a metrics label and a wire field without further checks. Validation is strict on purpose: these names
//! come from URLs and from peers.
//!
//! A name is shared, not copied: a clone is another handle on the same bytes (an [`Arc<str>`]), and two
//! handles on the same bytes are equal without reading them. A node names the same few neighbours and
//! streams in every action, subscription and table, and the simulator runs ten thousand nodes whose relays
//! hold clones of its own ids: comparing those is comparing pointers.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    /// The name is longer than allowed.
    #[error("{kind} {name:?} is longer than {max} bytes")]
    TooLong { kind: &'static str, name: String, max: usize },
    /// The name holds a character outside the allowed set.
    #[error("{kind} {name:?} has a character outside [A-Za-z0-9._-] or starts with '.' or '-'")]
    BadChar { kind: &'static str, name: String },
}

fn check(kind: &'static str, name: &str, max: usize, dot: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong { kind, name: name.to_owned(), max });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dot && c == '.');
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !name.chars().all(ok_char) {
        return Err(NameError::BadChar { kind, name: name.to_owned() });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr, $dot:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check($kind, &name, $max, $dot)?;
                Ok(Self(name.into()))
            }
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0.as_ref().to_owned()
            }
        }

        // Equality and order are the bytes', as `Borrow<str>` requires; the same bytes are not read.
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl Eq for $ty {}

        impl Ord for $ty {
            fn cmp(&self, other: &Self) -> Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    Ordering::Equal
                } else {
                    self.0.cmp(&other.0)
                }
            }
        }

        impl PartialOrd for $ty {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Hash for $ty {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.hash(state)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A mesh node's id, as the topology names it and as its certificate's DNS name carries it.
    /// Letters, digits, `-` and `_` (no dots: it is one DNS label), at most 63 bytes.
    NodeId, "node id", 63, false
);
name_type!(
    /// A live stream's name: the `{stream}` of `/live/{stream}/{file}`. At most 64 bytes.
    StreamName, "stream name", 64, false
);
name_type!(
    /// An object's name within its stream: a file name such as `seg12.ts` or `index.m3u8`. Dots are
    /// allowed but not first, so `..` and hidden names are impossible. At most 128 bytes.
    ObjectName, "object name", 128, true
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_traversal_and_odd_characters() {
        for bad in ["", "..", ".hidden", "a/b", "a\0b", "a b", "%2e", "-x", "é"] {
            assert!(ObjectName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(StreamName::new("a.b").is_err());
        assert!(ObjectName::new("seg-12.ts").is_ok());
        assert!(NodeId::new("edge-eu_1").is_ok());
        assert!(NodeId::new("x".repeat(64)).is_err());
    }

    #[test]
    fn clones_and_copies_compare_alike() {
        let a = NodeId::new("eu-1").unwrap();
        let copy = NodeId::new("eu-1").unwrap();
        let other = NodeId::new("eu-2").unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(a, copy);
        assert_eq!(a.cmp(&copy), Ordering::Equal);
        assert!(a < other && other > a.clone());
        let set: std::collections::HashSet<&str> = [a.as_str()].into();
        assert!(set.contains(std::borrow::Borrow::<str>::borrow(&copy)));
        assert_eq!(String::from(a), "eu-1");
    }
}
