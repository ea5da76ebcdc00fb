//! Docker image references: `busybox` is `docker.io/library/busybox:latest`.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The default registry.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with port if any.
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest.
    pub digest: Option<Digest>,
}

/// Why a reference is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty reference.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// Docker's wording for anything malformed.
    #[error("invalid reference format: {0}")]
    Invalid(String),
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && !c.contains("..")
}

fn valid_tag(t: &str) -> bool {
    // [\w][\w.-]{0,127}
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let bad = |why: &str| ReferenceError::Invalid(format!("{why} in {s:?}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| ReferenceError::Invalid(e.to_string()))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), p.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if name.bytes().any(|b| b.is_ascii_uppercase()) && registry == DOCKER_HUB {
            return Err(ReferenceError::Invalid(
                "repository name must be lowercase".into(),
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !repository.split('/').all(valid_component) {
            return Err(bad("invalid repository name"));
        }
        if registry.is_empty() || registry.contains("//") {
            return Err(bad("invalid registry"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// Docker's short form: `busybox:latest`, `localhost:5000/x:1`.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        full.strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"))
            .map(str::to_owned)
            .unwrap_or(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn dockers_normalisation() {
        assert_eq!(p("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("user/app:1.0").to_string(), "docker.io/user/app:1.0");
        assert_eq!(
            p("localhost:5000/a/b").to_string(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            p("registry.example.com/x:tag").registry,
            "registry.example.com"
        );
        assert_eq!(p("busybox").familiar(), "busybox:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("busybox@{d}"));
        assert_eq!(
            (r.tag, r.digest.unwrap().to_string()),
            (None, d.to_string())
        );
        let r = p(&format!("localhost:5000/b:v1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for s in [
            "",
            "UPPER",
            "a//b",
            "busybox:",
            "busybox:bad tag",
            "-x",
            "x@sha256:123",
            "a/../b",
            ":tag",
        ] {
            assert!(s.parse::<Reference>().is_err(), "{s:?} should be refused");
        }
    }
}
