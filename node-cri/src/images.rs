//! The CRI-backed `node_images::ImageService`.

use async_trait::async_trait;
use node_images::service::{AuthConfig, FsUsage, Image, ImageService, ImageServiceError};

use crate::client::CriClient;
use crate::cri;

/// Images of a CRI runtime.
#[derive(Clone, Debug)]
pub struct CriImageService {
    client: CriClient,
}

impl CriImageService {
    /// The image service of the runtime `client` talks to.
    pub fn new(client: CriClient) -> Self {
        CriImageService { client }
    }
}

fn convert(image: cri::Image) -> Image {
    Image {
        id: image.id,
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        size: image.size,
        uid: image.uid.map(|u| u.value),
        username: image.username,
        pinned: image.pinned,
    }
}

#[async_trait]
impl ImageService for CriImageService {
    async fn list_images(&self) -> Result<Vec<Image>, ImageServiceError> {
        Ok(self
            .client
            .list_images(None)
            .await
            .map_err(ImageServiceError::runtime)?
            .into_iter()
            .map(convert)
            .collect())
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, ImageServiceError> {
        Ok(self
            .client
            .image_status(image)
            .await
            .map_err(ImageServiceError::runtime)?
            .map(convert))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<String, ImageServiceError> {
        let auth = auth.map(|a| cri::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            auth: a.auth.clone(),
            server_address: a.server_address.clone(),
            identity_token: a.identity_token.clone(),
            registry_token: a.registry_token.clone(),
        });
        self.client
            .pull_image(image, auth, None)
            .await
            .map_err(ImageServiceError::runtime)
    }

    async fn remove_image(&self, image: &str) -> Result<(), ImageServiceError> {
        match self.client.remove_image(image).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(ImageServiceError::NotFound(image.into())),
            Err(e) => Err(ImageServiceError::runtime(e)),
        }
    }

    async fn image_fs_info(&self) -> Result<FsUsage, ImageServiceError> {
        let info = self
            .client
            .image_fs_info()
            .await
            .map_err(ImageServiceError::runtime)?;
        Ok(info
            .image_filesystems
            .iter()
            .fold(FsUsage::default(), |acc, fs| FsUsage {
                used_bytes: acc.used_bytes + fs.used_bytes.as_ref().map_or(0, |v| v.value),
                inodes_used: acc.inodes_used + fs.inodes_used.as_ref().map_or(0, |v| v.value),
            }))
    }
}

#[async_trait]
impl node_images::gc::ImagesInUse for CriImageService {
    async fn images_in_use(
        &self,
    ) -> Result<std::collections::HashSet<String>, node_images::gc::ImageGcError> {
        let containers = self
            .client
            .list_containers(None)
            .await
            .map_err(node_images::gc::ImageGcError::images_in_use)?;
        // The runtime may name a container's image by id, digest or tag: resolve every form
        // to the image id, so an image in use is never taken for unused.
        let mut refs: std::collections::HashSet<String> = std::collections::HashSet::new();
        for c in containers {
            refs.insert(c.image_ref);
            if let Some(spec) = c.image {
                refs.insert(spec.image);
            }
        }
        let mut ids = std::collections::HashSet::new();
        for r in refs.into_iter().filter(|r| !r.is_empty()) {
            if r.starts_with("sha256:") {
                ids.insert(r);
            } else if let Ok(Some(image)) = self.client.image_status(&r).await {
                ids.insert(image.id);
            }
        }
        Ok(ids)
    }
}

impl CriImageService {
    /// The mount point of the runtime's image filesystem, as CRI `ImageFsInfo` reports it.
    pub async fn image_fs_mountpoint(&self) -> Option<std::path::PathBuf> {
        let info = self.client.image_fs_info().await.ok()?;
        info.image_filesystems
            .into_iter()
            .filter_map(|fs| fs.fs_id.map(|id| id.mountpoint))
            .find(|m| !m.is_empty())
            .map(std::path::PathBuf::from)
    }
}
