//! [`ImageBuilder`] and the [`OciArchive`] it builds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, Platform,
    PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;

use super::archive;
use super::error::{OciImageError, Result};
use super::layer::{self, Content, EntrySpec};
use super::reference::{self, Reference};

/// The index annotation containerd's `ctr images import` (and k3s' airgap import) names the
/// imported image after.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// Builds a single-layer, single-platform OCI image and writes it as an OCI image layout tar
/// archive, without network access.
///
/// Entries and settings are recorded as given; [`build`](Self::build) validates them, reads
/// host files and produces a deterministic archive: building the same builder twice (or an
/// equal one in another process) gives identical bytes and digests.
///
/// The image is for `linux` on the build host's architecture ([`host_arch`]), so that a
/// containerd on the same host imports it without `--all-platforms`.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    reference: String,
    entries: Vec<EntrySpec>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// Starts an empty image that will be named `reference`.
    ///
    /// The reference is normalized as the CRI plugin does (`busybox:1.35` becomes
    /// `docker.io/library/busybox:1.35`, a missing tag becomes `latest`) when the image is built;
    /// digest references are rejected then.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            entries: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
        }
    }

    /// The reference as given to [`new`](Self::new).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Adds a directory with `mode` (permission bits, plus setuid/setgid/sticky, e.g. `0o1777`).
    ///
    /// Paths are inside the image: a leading `/` is optional, `..` is rejected. Parent
    /// directories that are not added explicitly get mode 0755. A later entry at the same path
    /// replaces an earlier one.
    pub fn dir(mut self, path: impl Into<String>, mode: u32) -> Self {
        self.entries.push(EntrySpec::Dir {
            path: path.into(),
            mode,
        });
        self
    }

    /// Adds a regular file with the given content and `mode`.
    pub fn file(mut self, path: impl Into<String>, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push(EntrySpec::File {
            path: path.into(),
            mode,
            content: Content::Bytes(content.into().into()),
        });
        self
    }

    /// Adds a regular file whose content is read from `host_path` when the image is built.
    ///
    /// The host file's own mode, owner and times are ignored: the entry gets `mode`, uid/gid 0
    /// and the fixed mtime. The content is held in memory while building.
    pub fn host_file(
        mut self,
        path: impl Into<String>,
        host_path: impl Into<PathBuf>,
        mode: u32,
    ) -> Self {
        self.entries.push(EntrySpec::File {
            path: path.into(),
            mode,
            content: Content::HostFile(host_path.into()),
        });
        self
    }

    /// Adds a symbolic link at `path` pointing to `target` (relative or absolute, kept as given).
    pub fn symlink(mut self, path: impl Into<String>, target: impl Into<String>) -> Self {
        self.entries.push(EntrySpec::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    /// Adds a hard link at `path` to `target`, which must be a regular file added to this image.
    pub fn hard_link(mut self, path: impl Into<String>, target: impl Into<String>) -> Self {
        self.entries.push(EntrySpec::HardLink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    /// Adds `<dir>/<applet> -> busybox` for every applet `<busybox> --list` prints when the
    /// image is built.
    pub(crate) fn busybox_applets(mut self, dir: impl Into<String>, busybox: &Path) -> Self {
        self.entries.push(EntrySpec::BusyboxApplets {
            dir: dir.into(),
            busybox: busybox.to_path_buf(),
        });
        self
    }

    /// Sets the image's entrypoint (`ENTRYPOINT`).
    pub fn entrypoint<I, S>(mut self, entrypoint: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(entrypoint.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the image's default command (`CMD`), the arguments to the entrypoint if there is one.
    pub fn cmd<I, S>(mut self, cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }

    /// Sets environment variable `key` to `value`, replacing an earlier value of `key` in place.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
        self
    }

    /// Sets the working directory of the image's processes.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the user (`name`, `uid`, `uid:gid`, ...) the image's processes run as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the image label `key` to `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Builds the image in memory: the layer, the config, the manifest and the index, packed as
    /// an OCI image layout tar archive.
    ///
    /// Fails on an unusable reference or entry, an unreadable host file, or a busybox that
    /// cannot list its applets; the error names the offending reference, path or binary.
    pub fn build(&self) -> Result<OciArchive> {
        let Reference { name, tag } = reference::normalize(&self.reference)?;
        for (key, _) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(OciImageError::InvalidEntry {
                    path: key.clone(),
                    reason: "environment variable names must be non-empty, without `=`".to_owned(),
                });
            }
        }
        let spec = |what| {
            let reference = name.clone();
            move |source| OciImageError::Spec {
                what,
                reference,
                source,
            }
        };

        let layer = layer::build_layer(&self.entries, &name)?;
        let diff_id = sha256_digest(&layer.diff_id_hex).map_err(spec("layer digest"))?;
        let layer_digest_hex = super::sha256_hex(&layer.gzip);
        let layer_descriptor = DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(sha256_digest(&layer_digest_hex).map_err(spec("layer digest"))?)
            .size(layer.gzip.len() as u64)
            .build()
            .map_err(spec("layer descriptor"))?;

        let config = self.image_configuration(&diff_id).map_err(spec("config"))?;
        let config_json = canonical_json(&config, "config", &name)?;
        let config_hex = super::sha256_hex(&config_json);
        let config_digest = sha256_digest(&config_hex).map_err(spec("config digest"))?;
        let config_descriptor = DescriptorBuilder::default()
            .media_type(MediaType::ImageConfig)
            .digest(config_digest.clone())
            .size(config_json.len() as u64)
            .build()
            .map_err(spec("config descriptor"))?;

        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_descriptor)
            .layers(vec![layer_descriptor])
            .build()
            .map_err(spec("manifest"))?;
        let manifest_json = canonical_json(&manifest, "manifest", &name)?;
        let manifest_hex = super::sha256_hex(&manifest_json);
        let manifest_digest = sha256_digest(&manifest_hex).map_err(spec("manifest digest"))?;

        let platform = host_platform().map_err(spec("platform"))?;
        let annotations = [
            (ANNOTATION_CONTAINERD_IMAGE_NAME.to_owned(), name.clone()),
            (ANNOTATION_REF_NAME.to_owned(), tag.clone()),
        ];
        let manifest_descriptor = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(manifest_digest.clone())
            .size(manifest_json.len() as u64)
            .platform(platform.clone())
            .annotations(annotations)
            .build()
            .map_err(spec("index"))?;
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_descriptor])
            .build()
            .map_err(spec("index"))?;
        let index_json = canonical_json(&index, "index", &name)?;

        let layout = OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()
            .map_err(spec("oci-layout"))?;
        let layout_json = canonical_json(&layout, "oci-layout", &name)?;

        let blobs = [
            (layer_digest_hex, &layer.gzip[..]),
            (config_hex, &config_json[..]),
            (manifest_hex, &manifest_json[..]),
        ];
        let bytes = archive::write_layout(&layout_json, &index_json, &blobs).map_err(|source| {
            OciImageError::Assemble {
                what: "archive",
                reference: name.clone(),
                source,
            }
        })?;
        Ok(OciArchive {
            reference: name,
            tag,
            platform,
            manifest_digest,
            image_id: config_digest,
            diff_id,
            index_json,
            bytes,
        })
    }

    fn image_configuration(
        &self,
        diff_id: &Digest,
    ) -> oci_spec::Result<oci_spec::image::ImageConfiguration> {
        let mut config = ConfigBuilder::default();
        if let Some(entrypoint) = &self.entrypoint {
            config = config.entrypoint(entrypoint.clone());
        }
        if let Some(cmd) = &self.cmd {
            config = config.cmd(cmd.clone());
        }
        if !self.env.is_empty() {
            let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            config = config.env(env);
        }
        if let Some(dir) = &self.working_dir {
            config = config.working_dir(dir.clone());
        }
        if let Some(user) = &self.user {
            config = config.user(user.clone());
        }
        if !self.labels.is_empty() {
            let labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
            config = config.labels(labels);
        }
        ImageConfigurationBuilder::default()
            .architecture(host_arch())
            .os(Os::Linux)
            .config(config.build()?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![diff_id.to_string()])
                    .build()?,
            )
            .build()
    }
}

/// A built image: the archive bytes and the identifiers of what is in them.
#[derive(Clone)]
pub struct OciArchive {
    reference: String,
    tag: String,
    platform: Platform,
    manifest_digest: Digest,
    image_id: Digest,
    diff_id: Digest,
    index_json: Vec<u8>,
    bytes: Vec<u8>,
}

impl OciArchive {
    /// The normalized reference the archive names the image with, e.g.
    /// `docker.io/library/busybox:1.35`.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The tag of [`reference`](Self::reference), the index's
    /// `org.opencontainers.image.ref.name`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The platform of the image (linux and the host architecture).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The digest of the image manifest; what containerd reports as the image's digest and
    /// what `repo@digest` pulls would use.
    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_digest
    }

    /// The digest of the image config: the image id the CRI reports (`crictl images`).
    pub fn image_id(&self) -> &Digest {
        &self.image_id
    }

    /// The digest of the uncompressed layer tar (the config's `rootfs.diff_ids[0]`).
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// The archive's `index.json`.
    pub fn index_json(&self) -> &[u8] {
        &self.index_json
    }

    /// The archive bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The archive bytes, consuming the archive.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Writes the archive to `path`, replacing any file there atomically (a temporary file in
    /// the same directory, then a rename). The parent directory must exist.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomically(path.as_ref(), &self.bytes)
    }
}

impl fmt::Debug for OciArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciArchive")
            .field("reference", &self.reference)
            .field("manifest_digest", &self.manifest_digest.to_string())
            .field("image_id", &self.image_id.to_string())
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// The build host's architecture under its OCI (Go `GOARCH`) name: `x86_64` is `amd64`,
/// `aarch64` is `arm64`, and so on.
pub fn host_arch() -> Arch {
    go_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

/// Maps a Rust `target_arch` name to the Go `GOARCH` name OCI platforms use.
fn go_arch(rust_arch: &str, little_endian: bool) -> Arch {
    let go = match (rust_arch, little_endian) {
        ("x86", _) => "386",
        ("x86_64", _) => "amd64",
        ("aarch64", true) => "arm64",
        ("aarch64", false) => "arm64be",
        ("arm", true) => "arm",
        ("arm", false) => "armbe",
        ("loongarch64", _) => "loong64",
        ("mips", true) => "mipsle",
        ("mips64", true) => "mips64le",
        ("powerpc", _) => "ppc",
        ("powerpc64", true) => "ppc64le",
        ("powerpc64", false) => "ppc64",
        ("riscv32", _) => "riscv",
        ("sparc", _) => "sparc",
        ("sparc64", _) => "sparc64",
        ("wasm32", _) => "wasm",
        (other, _) => other,
    };
    Arch::from(go)
}

fn host_platform() -> oci_spec::Result<Platform> {
    PlatformBuilder::default()
        .architecture(host_arch())
        .os(Os::Linux)
        .build()
}

fn sha256_digest(hex: &str) -> oci_spec::Result<Digest> {
    format!("sha256:{hex}").parse()
}

/// Serializes `value` as compact JSON with object keys sorted, whatever map type `oci-spec` uses
/// inside (its annotations and labels are `HashMap`s, whose order changes from run to run).
fn canonical_json<T: Serialize>(value: &T, what: &'static str, reference: &str) -> Result<Vec<u8>> {
    let serialize = |source| OciImageError::Serialize {
        what,
        reference: reference.to_owned(),
        source,
    };
    let value = serde_json::to_value(value).map_err(serialize)?;
    serde_json::to_vec(&sorted(value)).map_err(serialize)
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let write_error = |source| OciImageError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let result = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_rust_arches_to_go_names() {
        assert_eq!(go_arch("x86_64", true), Arch::Amd64);
        assert_eq!(go_arch("aarch64", true), Arch::ARM64);
        assert_eq!(go_arch("x86", true), Arch::i386);
        assert_eq!(go_arch("arm", true), Arch::ARM);
        assert_eq!(go_arch("powerpc64", true), Arch::PowerPC64le);
        assert_eq!(go_arch("powerpc64", false), Arch::PowerPC64);
        assert_eq!(go_arch("riscv64", true), Arch::RISCV64);
        assert_eq!(go_arch("s390x", false), Arch::s390x);
        assert_eq!(go_arch("loongarch64", true), Arch::LoongArch64);
        assert_eq!(go_arch("mips64", true), Arch::Mips64le);
        assert_eq!(go_arch("mips64", false), Arch::Mips64);
        assert_eq!(
            host_arch().to_string(),
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": 0});
        let json = canonical_json(&value, "test", "r").unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"a":0,"b":{"a":[{"x":2,"y":1}],"z":1}}"#
        );
    }

    #[test]
    fn env_replaces_in_place() {
        let builder = ImageBuilder::new("x")
            .env("A", "1")
            .env("B", "2")
            .env("A", "3");
        assert_eq!(
            builder.env,
            [
                ("A".to_owned(), "3".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
    }

    #[test]
    fn rejects_bad_env_names_and_references() {
        let err = ImageBuilder::new("x").env("A=B", "1").build().unwrap_err();
        assert!(matches!(err, OciImageError::InvalidEntry { .. }), "{err}");
        let err = ImageBuilder::new("Bad Ref").build().unwrap_err();
        assert!(
            matches!(&err, OciImageError::InvalidReference { reference, .. } if reference == "Bad Ref"),
            "{err}"
        );
    }

    #[test]
    fn write_to_a_missing_directory_names_the_path() {
        let archive = ImageBuilder::new("x")
            .file("/a", "a", 0o644)
            .build()
            .unwrap();
        let err = archive.write_to("/nonexistent-dir/x.tar").unwrap_err();
        assert!(
            matches!(&err, OciImageError::Write { path, .. } if path == Path::new("/nonexistent-dir/x.tar")),
            "{err:?}"
        );
    }
}
