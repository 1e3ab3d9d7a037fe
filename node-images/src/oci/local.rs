//! The images a node needs without a registry: busybox and a pause sandbox image, and
//! [`LocalImages`], which keeps their archives up to date in a directory.

use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use super::archive;
use super::builder::{ImageBuilder, write_atomically};
use super::error::{OciImageError, Result};

/// Reference of the busybox image [`LocalImages::with_defaults`] builds.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35";

/// Reference of the pause image [`LocalImages::with_defaults`] builds; configure the CRI
/// plugin's `sandbox_image` (and the kubelet's pod infra image) to this name.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Where Debian's `busybox-static` package installs its static busybox.
pub const DEFAULT_BUSYBOX_PATH: &str = "/bin/busybox";

/// `PATH` of both images, the usual Linux default.
pub const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// File name of the busybox archive in a [`LocalImages`] directory.
pub const BUSYBOX_ARCHIVE: &str = "busybox.tar";

/// File name of the pause archive in a [`LocalImages`] directory.
pub const PAUSE_ARCHIVE: &str = "pause.tar";

/// The pause image's entrypoint script: exits 0 on SIGTERM or SIGINT, reaps children while
/// waiting, and otherwise sleeps.
pub const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

/// A busybox image from a static busybox binary on the host, such as Debian's
/// `busybox-static` (`/bin/busybox`).
///
/// Contents: `/bin/busybox` (mode 0755), a symlink `/bin/<applet> -> busybox` for every applet
/// `<busybox> --list` prints, `/tmp` (1777), `/root` (0700), `/var`, `/home`, `/etc/passwd`
/// (root and nobody), `/etc/group` and `/etc/nsswitch.conf`. `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf` are left to the kubelet and the runtime. Default command `["sh"]` (change
/// it with [`ImageBuilder::cmd`]) and the usual `PATH`.
///
/// The host binary is read and run when the image is built; a missing or non-executable
/// busybox makes [`ImageBuilder::build`] fail with an error naming `busybox`. The binary must
/// be static: the image has no libraries.
pub fn busybox_image(busybox: &Path, reference: &str) -> ImageBuilder {
    ImageBuilder::new(reference)
        .dir("/bin", 0o755)
        .host_file("/bin/busybox", busybox, 0o755)
        .busybox_applets("/bin", busybox)
        .dir("/etc", 0o755)
        .file("/etc/passwd", PASSWD, 0o644)
        .file("/etc/group", GROUP, 0o644)
        .file("/etc/nsswitch.conf", NSSWITCH, 0o644)
        .dir("/home", 0o755)
        .dir("/root", 0o700)
        .dir("/tmp", 0o1777)
        .dir("/var", 0o755)
        .env("PATH", DEFAULT_PATH_ENV)
        .cmd(["sh"])
}

/// A minimal pod sandbox image that stands in for `registry.k8s.io/pause`.
///
/// It holds `/bin/busybox` with `/bin/sh` and `/bin/sleep` links and runs [`PAUSE_SCRIPT`]
/// under `/bin/sh -c`: the shell exits 0 promptly on SIGTERM or SIGINT (as PID 1 it would
/// otherwise ignore them), reaps any child that exits (also orphans reparented to it in a
/// shared PID namespace) while it waits, and sleeps otherwise. Unlike the real pause binary it
/// is a shell, so it uses a little more memory.
pub fn pause_image(busybox: &Path, reference: &str) -> ImageBuilder {
    ImageBuilder::new(reference)
        .dir("/bin", 0o755)
        .host_file("/bin/busybox", busybox, 0o755)
        .symlink("/bin/sh", "busybox")
        .symlink("/bin/sleep", "busybox")
        .env("PATH", DEFAULT_PATH_ENV)
        .entrypoint(["/bin/sh", "-c", PAUSE_SCRIPT])
}

/// Image archives kept in one directory for a containerd to import, as k3s does with its
/// airgap images directory.
///
/// [`write`](Self::write) builds every image and rewrites an archive only when its content
/// would change (same size and same `index.json`, which pins every blob by digest, count as
/// unchanged), so a caller can skip re-importing unchanged archives.
#[derive(Clone, Debug)]
pub struct LocalImages {
    dir: PathBuf,
    images: Vec<(String, ImageBuilder)>,
}

/// One archive written (or found up to date) by [`LocalImages::write`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalImage {
    /// The archive path: the directory joined with the file name.
    pub path: PathBuf,
    /// The normalized image reference, e.g. `docker.io/library/busybox:1.35`.
    pub reference: String,
    /// The digest of the image manifest.
    pub manifest_digest: Digest,
    /// The digest of the image config, the CRI image id.
    pub image_id: Digest,
    /// Whether the file was (re)written; `false` when it already held this archive.
    pub written: bool,
}

impl LocalImages {
    /// An empty set of archives to keep in `dir` (created on [`write`](Self::write)).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            images: Vec::new(),
        }
    }

    /// The busybox ([`BUSYBOX_IMAGE`] as [`BUSYBOX_ARCHIVE`]) and pause ([`PAUSE_IMAGE`] as
    /// [`PAUSE_ARCHIVE`]) archives, both from the static busybox at `busybox`.
    pub fn with_defaults(dir: impl Into<PathBuf>, busybox: impl AsRef<Path>) -> Self {
        let busybox = busybox.as_ref();
        Self::new(dir)
            .image(BUSYBOX_ARCHIVE, busybox_image(busybox, BUSYBOX_IMAGE))
            .image(PAUSE_ARCHIVE, pause_image(busybox, PAUSE_IMAGE))
    }

    /// Adds an archive `file_name` (a plain file name inside the directory) built by `image`,
    /// replacing an earlier image with the same file name.
    pub fn image(mut self, file_name: impl Into<String>, image: ImageBuilder) -> Self {
        let file_name = file_name.into();
        match self.images.iter_mut().find(|(name, _)| *name == file_name) {
            Some(slot) => slot.1 = image,
            None => self.images.push((file_name, image)),
        }
        self
    }

    /// The directory the archives are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory if needed, builds every image and writes the archives whose
    /// content changed, in the order they were added.
    pub fn write(&self) -> Result<Vec<LocalImage>> {
        std::fs::create_dir_all(&self.dir).map_err(|source| OciImageError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let mut written = Vec::with_capacity(self.images.len());
        for (file_name, image) in &self.images {
            let path = archive::check_file_name(&self.dir, file_name)?;
            let built = image.build()?;
            let unchanged = archive::unchanged(&path, built.as_bytes().len(), built.index_json());
            if unchanged {
                tracing::debug!(path = %path.display(), reference = built.reference(), digest = %built.manifest_digest(), "image archive up to date");
            } else {
                write_atomically(&path, built.as_bytes())?;
                tracing::info!(path = %path.display(), reference = built.reference(), digest = %built.manifest_digest(), "wrote image archive");
            }
            written.push(LocalImage {
                path,
                reference: built.reference().to_owned(),
                manifest_digest: built.manifest_digest().clone(),
                image_id: built.image_id().clone(),
                written: !unchanged,
            });
        }
        Ok(written)
    }
}
