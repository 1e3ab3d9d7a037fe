//! Image reference normalization, as containerd's CRI plugin and the Docker CLI do it.
//!
//! A pod that says `busybox:1.35` makes the CRI plugin look for
//! `docker.io/library/busybox:1.35`, so an imported image has to carry the normalized name.

use super::error::{OciImageError, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";

/// A normalized, tagged image reference: `domain/path:tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The full normalized reference, e.g. `docker.io/library/busybox:1.35`.
    pub(crate) name: String,
    /// The tag alone, e.g. `1.35`.
    pub(crate) tag: String,
}

/// Normalizes `reference` the way the Docker CLI and containerd's CRI plugin do: adds
/// `docker.io` when there is no domain, `library/` for single-component Docker Hub names and
/// `:latest` when there is no tag. Digest references are rejected: the digest of a locally built
/// image is whatever the build produces.
pub(crate) fn normalize(reference: &str) -> Result<Reference> {
    let invalid = |reason| OciImageError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.is_empty() {
        return Err(invalid("empty"));
    }
    if reference.contains('@') {
        return Err(invalid(
            "a digest cannot name a locally built image; use a tag",
        ));
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match reference[last_slash..].find(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, DEFAULT_TAG),
    };
    if !valid_tag(tag) {
        return Err(invalid(
            "the tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }

    let (domain, path) = match repository.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, repository),
    };
    if !valid_domain(domain) {
        return Err(invalid("the registry host is not a valid host[:port]"));
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(invalid(
            "repository path components must be lowercase [a-z0-9] joined by . _ or -",
        ));
    }
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let library = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        OFFICIAL_REPO_PREFIX
    } else {
        ""
    };
    Ok(Reference {
        name: format!("{domain}/{library}{path}:{tag}"),
        tag: tag.to_owned(),
    })
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    tag.len() <= 128
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

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

fn valid_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    component.starts_with(alnum)
        && component.ends_with(alnum)
        && component
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(reference: &str) -> (String, String) {
        let r = normalize(reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
        (r.name, r.tag)
    }

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest", "latest"),
            ("busybox:1.35", "docker.io/library/busybox:1.35", "1.35"),
            (
                "docker.io/library/busybox:1.35",
                "docker.io/library/busybox:1.35",
                "1.35",
            ),
            (
                "index.docker.io/busybox:1",
                "docker.io/library/busybox:1",
                "1",
            ),
            ("myorg/app:v1", "docker.io/myorg/app:v1", "v1"),
            (
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10",
                "3.10",
            ),
            ("localhost/app", "localhost/app:latest", "latest"),
            (
                "localhost:5000/a/b:Tag_1",
                "localhost:5000/a/b:Tag_1",
                "Tag_1",
            ),
            ("10.0.0.1:5000/app", "10.0.0.1:5000/app:latest", "latest"),
            (
                "quay.io/a/b-c/d_e.f:1.2-rc",
                "quay.io/a/b-c/d_e.f:1.2-rc",
                "1.2-rc",
            ),
        ];
        for (input, name, tag) in cases {
            assert_eq!(norm(input), (name.to_owned(), tag.to_owned()), "{input}");
        }
    }

    #[test]
    fn rejects_unusable_references() {
        for bad in [
            "",
            "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "BusyBox",
            "busybox:",
            "busybox:-x",
            "busy box",
            "/busybox",
            "docker.io/",
            "a//b",
            "registry:port/x",
            "busybox:a:b",
        ] {
            match normalize(bad) {
                Err(OciImageError::InvalidReference { reference, .. }) => {
                    assert_eq!(reference, bad)
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
