//! Image references as pods name them (`busybox`, `registry:5000/team/app:1.2`,
//! `app@sha256:...`): parsing, validation and upstream's default tag.

use std::fmt;

/// An error in an image reference (reason `InvalidImageName`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// The registry host (with port), `docker.io` when none is named.
    pub domain: String,
    /// The repository path, `library/busybox` for official Docker Hub images.
    pub path: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if any.
    pub digest: Option<String>,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or runs of '-'.
    !c.is_empty()
        && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && c.chars().all(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
        })
        && !c.contains("..")
        && !c.contains("___")
}

/// `host[:port]` with DNS-label-like host parts and a numeric port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_digest(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else {
        return false;
    };
    !algo.is_empty()
        && algo.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-')
        })
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ReferenceError {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(invalid("the reference is empty"));
        }
        if reference.len() > 4096 || reference.chars().any(char::is_whitespace) {
            return Err(invalid("the reference has whitespace or is too long"));
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => {
                if !valid_digest(digest) {
                    return Err(invalid("the digest must be <algorithm>:<hex>"));
                }
                (name, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].find(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(
                "the tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (domain, path) = match repository.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), repository.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(invalid("the registry host is not a valid host[:port]"));
        }
        // Docker Hub's legacy name.
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.split('/').any(|c| !valid_component(c)) {
            return Err(invalid(
                "repository names must be lowercase letters, digits and separators",
            ));
        }
        Ok(ImageReference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Upstream `applyDefaultImageTag`: `image` with `:latest` appended when it has neither tag
/// nor digest (never added to a digest reference); an invalid reference is an error.
pub fn with_default_tag(image: &str) -> Result<String, ReferenceError> {
    let parsed: ImageReference = image.parse()?;
    if parsed.tag.is_none() && parsed.digest.is_none() {
        Ok(format!("{image}:latest"))
    } else {
        Ok(image.to_string())
    }
}

/// The upstream default pull policy of an image (the pod defaulting's, in node-core).
pub use node_core::config::default_pull_policy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_defaults() {
        let r: ImageReference = "busybox".parse().unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag, r.digest),
            ("docker.io", "library/busybox", None, None)
        );
        let r: ImageReference = "127.0.0.1:5000/team/app:1.2".parse().unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("1.2"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ImageReference = format!("localhost/app@{d}").parse().unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("localhost/app@{d}"));
    }

    #[test]
    fn invalid_references_are_rejected() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app:-x",
            "app@sha256:xyz",
            "a b",
            "app::1",
            "re//po",
        ] {
            assert!(bad.parse::<ImageReference>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_tag_is_latest_but_never_added_to_digests() {
        assert_eq!(with_default_tag("busybox").unwrap(), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.35").unwrap(), "busybox:1.35");
        let d = format!("busybox@sha256:{}", "0".repeat(64));
        assert_eq!(with_default_tag(&d).unwrap(), d);
        assert!(with_default_tag("Bad/Name").is_err());
    }

    #[test]
    fn the_default_pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.35"), "IfNotPresent");
        assert_eq!(
            default_pull_policy(&format!("busybox@sha256:{}", "0".repeat(64))),
            "IfNotPresent"
        );
    }
}
