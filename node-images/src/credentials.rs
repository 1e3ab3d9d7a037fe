//! Registry credentials: pull secrets (`kubernetes.io/dockerconfigjson`,
//! `kubernetes.io/dockercfg`) and docker config files, matched to an image's registry host,
//! port and path prefix like upstream's credential keyring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::ImageReference;
use crate::service::AuthConfig;

/// Secret type of `.dockerconfigjson` secrets.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Secret type of legacy `.dockercfg` secrets.
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";

/// A credentials file or secret that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("reading docker config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a docker config.
    #[error("{origin}: not a docker config: {reason}")]
    Parse {
        /// The file or secret.
        origin: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

#[derive(Debug, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// A parsed key of a docker config: host (with port) and path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    host: String,
    port: Option<String>,
    path: String,
}

fn parse_key(key: &str) -> Option<Key> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return None;
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p.to_string())),
        _ => (hostport, None),
    };
    let mut host = host.to_ascii_lowercase();
    // Docker Hub's historical names all mean docker.io.
    if matches!(host.as_str(), "index.docker.io" | "registry-1.docker.io") {
        host = "docker.io".into();
    }
    // The legacy `/v1/` path of Docker Hub keys is not a repository prefix.
    let path = if host == "docker.io" && path.starts_with("v1") {
        String::new()
    } else {
        path.to_string()
    };
    Some(Key { host, port, path })
}

/// Glob match of host parts, as upstream `URLsMatch`: same number of dot-separated parts,
/// each equal or matched by a `*` glob part.
fn host_matches(glob: &str, host: &str) -> bool {
    let g: Vec<&str> = glob.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    g.len() == h.len() && g.iter().zip(&h).all(|(g, h)| glob_part(g, h))
}

fn glob_part(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((pre, post)) => {
            text.len() >= pre.len() + post.len()
                && text.starts_with(pre)
                && glob_part_rest(post, &text[pre.len()..])
        }
    }
}

fn glob_part_rest(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return text.ends_with(pattern);
    }
    (0..=text.len()).any(|i| text.is_char_boundary(i) && glob_part(pattern, &text[i..]))
}

fn matches(key: &Key, image: &ImageReference) -> bool {
    let (host, port) = match image.domain.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (image.domain.as_str(), None),
    };
    host_matches(&key.host, &host.to_ascii_lowercase())
        && key.port.as_deref() == port
        && (key.path.is_empty()
            || image.path == key.path
            || image.path.starts_with(&format!("{}/", key.path)))
}

/// Credentials by registry, looked up by image.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    entries: Vec<(String, Key, AuthConfig)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(k, _, _)| k))
            .finish()
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    fn add(&mut self, key: &str, entry: Entry, origin: &str) -> Result<(), CredentialsError> {
        let Some(parsed) = parse_key(key) else {
            return Err(CredentialsError::Parse {
                origin: origin.into(),
                reason: format!("registry key {key:?} names no host"),
            });
        };
        let (mut username, mut password) = (entry.username, entry.password);
        if !entry.auth.is_empty() {
            let decoded =
                decode_base64(entry.auth.trim()).ok_or_else(|| CredentialsError::Parse {
                    origin: origin.into(),
                    reason: format!("the auth of {key:?} is not base64"),
                })?;
            let text = String::from_utf8_lossy(&decoded).into_owned();
            let Some((u, p)) = text.split_once(':') else {
                return Err(CredentialsError::Parse {
                    origin: origin.into(),
                    reason: format!("the auth of {key:?} is not user:password"),
                });
            };
            username = u.to_string();
            password = p.to_string();
        }
        // containerd applies credentials only when the server address parses as a URL whose
        // host is the registry's, so a key without a scheme gets one.
        let server_address = if key.contains("://") {
            key.to_string()
        } else {
            format!("https://{key}")
        };
        let auth = AuthConfig {
            username,
            password,
            auth: String::new(),
            server_address,
            identity_token: entry.identity_token,
            registry_token: entry.registry_token,
        };
        self.entries.push((key.to_string(), parsed, auth));
        // Most specific first: longer keys first (upstream sorts its index in reverse).
        self.entries
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(())
    }

    /// Adds the credentials of a `.dockerconfigjson` document (`{"auths": {...}}`).
    pub fn add_docker_config_json(
        &mut self,
        data: &[u8],
        origin: &str,
    ) -> Result<(), CredentialsError> {
        let config: ConfigJson =
            serde_json::from_slice(data).map_err(|e| CredentialsError::Parse {
                origin: origin.into(),
                reason: e.to_string(),
            })?;
        for (key, entry) in config.auths {
            self.add(&key, entry, origin)?;
        }
        Ok(())
    }

    /// Adds the credentials of a legacy `.dockercfg` document (registries at the top level).
    pub fn add_dockercfg(&mut self, data: &[u8], origin: &str) -> Result<(), CredentialsError> {
        let config: BTreeMap<String, Entry> =
            serde_json::from_slice(data).map_err(|e| CredentialsError::Parse {
                origin: origin.into(),
                reason: e.to_string(),
            })?;
        for (key, entry) in config {
            self.add(&key, entry, origin)?;
        }
        Ok(())
    }

    /// Adds a pull secret's data by its type (`kubernetes.io/dockerconfigjson` with key
    /// `.dockerconfigjson`, or `kubernetes.io/dockercfg` with key `.dockercfg`).
    pub fn add_secret(
        &mut self,
        secret_type: &str,
        data: &BTreeMap<String, Vec<u8>>,
        origin: &str,
    ) -> Result<(), CredentialsError> {
        match secret_type {
            DOCKER_CONFIG_JSON_TYPE => match data.get(".dockerconfigjson") {
                Some(d) => self.add_docker_config_json(d, origin),
                None => Err(CredentialsError::Parse {
                    origin: origin.into(),
                    reason: "no .dockerconfigjson key".into(),
                }),
            },
            DOCKERCFG_TYPE => match data.get(".dockercfg") {
                Some(d) => self.add_dockercfg(d, origin),
                None => Err(CredentialsError::Parse {
                    origin: origin.into(),
                    reason: "no .dockercfg key".into(),
                }),
            },
            other => Err(CredentialsError::Parse {
                origin: origin.into(),
                reason: format!("secret type {other:?} holds no registry credentials"),
            }),
        }
    }

    /// Reads a docker config file (`config.json` with `auths`, or a legacy `.dockercfg`).
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let data = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut keyring = Keyring::new();
        let origin = path.display().to_string();
        let is_config_json = serde_json::from_slice::<serde_json::Value>(&data)
            .map(|v| v.get("auths").is_some())
            .unwrap_or(false);
        if is_config_json {
            keyring.add_docker_config_json(&data, &origin)?;
        } else {
            keyring.add_dockercfg(&data, &origin)?;
        }
        Ok(keyring)
    }

    /// The node's credentials, from the first docker config found where upstream's legacy
    /// lookup searches: `<rootDir>/config.json`, `$HOME/.docker/config.json`,
    /// `/.docker/config.json`, then the `.dockercfg` files in `<rootDir>` and `$HOME`.
    pub fn from_node_files(root_dir: &Path) -> Result<Self, CredentialsError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut candidates = vec![root_dir.join("config.json")];
        if let Some(h) = &home {
            candidates.push(h.join(".docker/config.json"));
        }
        candidates.push(PathBuf::from("/.docker/config.json"));
        candidates.push(root_dir.join(".dockercfg"));
        if let Some(h) = &home {
            candidates.push(h.join(".dockercfg"));
        }
        match candidates.iter().find(|p| p.is_file()) {
            Some(path) => Keyring::from_file(path),
            None => Ok(Keyring::new()),
        }
    }

    /// The credentials that apply to `image`, most specific first.
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let Ok(reference) = image.parse::<ImageReference>() else {
            return Vec::new();
        };
        self.entries
            .iter()
            .filter(|(_, key, _)| matches(key, &reference))
            .map(|(_, _, auth)| auth.clone())
            .collect()
    }

    /// Whether the keyring holds no credentials.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Standard base64 (with or without padding).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(json: &str) -> Keyring {
        let mut k = Keyring::new();
        k.add_docker_config_json(json.as_bytes(), "test").unwrap();
        k
    }

    #[test]
    fn base64_auth_is_decoded() {
        // "user:pa:ss" — the password may contain ':'.
        let k = keyring(r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="}}}"#);
        let found = k.lookup("127.0.0.1:5000/app:1");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].username.as_str(), found[0].password.as_str()),
            ("user", "pa:ss")
        );
    }

    #[test]
    fn host_port_and_path_must_match() {
        let k = keyring(
            r#"{"auths":{
                "registry.example.com:5000/team":{"username":"team","password":"t"},
                "registry.example.com:5000":{"username":"all","password":"a"},
                "*.example.com":{"username":"glob","password":"g"},
                "https://index.docker.io/v1/":{"username":"hub","password":"h"}
            }}"#,
        );
        let users = |image: &str| -> Vec<String> {
            k.lookup(image).into_iter().map(|a| a.username).collect()
        };
        assert_eq!(
            users("registry.example.com:5000/team/app:1"),
            ["team", "all"]
        );
        assert_eq!(users("registry.example.com:5000/other/app"), ["all"]);
        assert!(
            users("registry.example.com:5001/team/app").is_empty(),
            "port differs"
        );
        // Without the port only the glob entry applies.
        assert_eq!(users("registry.example.com/team/app"), ["glob"]);
        assert_eq!(users("mirror.example.com/app"), ["glob"]);
        assert!(
            users("a.b.example.com/app").is_empty(),
            "globs match one part"
        );
        assert_eq!(users("busybox"), ["hub"]);
        assert_eq!(users("docker.io/library/busybox:1"), ["hub"]);
        assert_eq!(
            users("registry.example.com:5000/teamx/app"),
            ["all"],
            "path prefixes end at /"
        );
    }

    #[test]
    fn legacy_dockercfg_and_secrets_parse() {
        let mut k = Keyring::new();
        let data: BTreeMap<String, Vec<u8>> = [(
            ".dockercfg".to_string(),
            br#"{"reg.io":{"username":"u","password":"p"}}"#.to_vec(),
        )]
        .into();
        k.add_secret(DOCKERCFG_TYPE, &data, "default/legacy")
            .unwrap();
        assert_eq!(k.lookup("reg.io/x").len(), 1);
        let err = k.add_secret("Opaque", &data, "default/opaque").unwrap_err();
        assert!(err.to_string().contains("default/opaque"), "{err}");
        let err = Keyring::new()
            .add_docker_config_json(b"not json", "default/bad")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("default/bad: not a docker config"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let k = keyring(r#"{"auths":{"r.io":{"username":"u","password":"hunter2"}}}"#);
        assert!(!format!("{k:?} {:?}", k.lookup("r.io/a")).contains("hunter2"));
    }
}
