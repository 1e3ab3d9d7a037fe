//! Image reference normalization, as containerd's CRI plugin and the Docker CLI do it.
//!
//! A pod that says `busybox:1.35` makes the CRI plugin look for
//! `docker.io/library/busybox:1.35`, so an imported image has to carry the normalized name.

use super::error::{OciImageError, Result};
use crate::reference::{ImageReference, ReferenceError};

/// A normalized, tagged image reference: `domain/path:tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The full normalized reference, e.g. `docker.io/library/busybox:1.35`.
    pub(crate) name: String,
    /// The tag alone, e.g. `1.35`.
    pub(crate) tag: String,
}

/// Normalizes `reference` the way the Docker CLI and containerd's CRI plugin do (parsing with
/// [`ImageReference`]): `docker.io` when there is no domain, `library/` for single-component
/// Docker Hub names and `:latest` when there is no tag. Digest references are rejected: the
/// digest of a locally built image is whatever the build produces.
pub(crate) fn normalize(reference: &str) -> Result<Reference> {
    let parsed: ImageReference =
        reference
            .parse()
            .map_err(|e: ReferenceError| OciImageError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.reason,
            })?;
    if parsed.digest.is_some() {
        return Err(OciImageError::InvalidReference {
            reference: reference.to_owned(),
            reason: "a digest cannot name a locally built image; use a tag",
        });
    }
    let tag = parsed.tag.unwrap_or_else(|| "latest".to_owned());
    Ok(Reference {
        name: format!("{}/{}:{tag}", parsed.domain, parsed.path),
        tag,
    })
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
