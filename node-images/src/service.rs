//! The image service seam: what the image manager and image GC need from a runtime.

use async_trait::async_trait;

/// An image as the runtime stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// The image id (config digest, `sha256:...`).
    pub id: String,
    /// Tags referring to it (`docker.io/library/busybox:1.35`).
    pub repo_tags: Vec<String>,
    /// Digests referring to it (`docker.io/library/busybox@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// The uid the image runs as, when numeric.
    pub uid: Option<i64>,
    /// The user name the image runs as, when not numeric.
    pub username: String,
    /// Pinned images are never garbage collected (the sandbox image).
    pub pinned: bool,
}

/// Registry credentials for one pull (CRI `AuthConfig`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// `base64(username:password)`, when given that way.
    pub auth: String,
    /// The registry these are for.
    pub server_address: String,
    /// An identity token.
    pub identity_token: String,
    /// A registry token.
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log secrets.
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// Usage of the filesystem that holds images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes used by images.
    pub used_bytes: u64,
    /// Inodes used by images.
    pub inodes_used: u64,
}

/// An error of an [`ImageService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageServiceError {
    /// The runtime failed the request.
    #[error("{0}")]
    Runtime(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The image does not exist.
    #[error("image {0:?} not found")]
    NotFound(String),
}

impl ImageServiceError {
    /// Wraps an implementation's error.
    pub fn runtime(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ImageServiceError::Runtime(Box::new(err))
    }
}

/// The images of a container runtime, as the image manager and image GC use them. The default
/// implementation is CRI-backed, in node-cri.
#[async_trait]
pub trait ImageService: Send + Sync + 'static {
    /// Every image.
    async fn list_images(&self) -> Result<Vec<Image>, ImageServiceError>;

    /// One image by reference or id; `None` when absent.
    async fn image_status(&self, image: &str) -> Result<Option<Image>, ImageServiceError>;

    /// Pulls `image` with optional credentials; returns the image reference the runtime
    /// stored (usually an id or digest).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<String, ImageServiceError>;

    /// Removes an image by reference or id.
    async fn remove_image(&self, image: &str) -> Result<(), ImageServiceError>;

    /// Usage of the image filesystem.
    async fn image_fs_info(&self) -> Result<FsUsage, ImageServiceError>;
}
