//! Decoding one static pod manifest: YAML or JSON to a defaulted, named and validated [`Pod`]
//! (upstream `tryDecodeSinglePod` / `tryDecodePodList` and `applyDefaults`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};
use serde_json::Value;

use super::error::{ManifestOrigin, PodSourceError};
use super::{CONFIG_HASH_ANNOTATION, defaults, validation};

/// The largest manifest (file or HTTP body) the sources accept: 10 MiB, as upstream.
pub const MAX_MANIFEST_SIZE: usize = 10 << 20;

/// Decodes one static pod manifest (YAML or JSON, `kind: Pod`, `apiVersion: v1`).
///
/// The pod gets the v1 scheme defaults, then the static pod treatment of upstream's
/// `applyDefaults`: unless `metadata.uid` is set, a UID hashed from the decoded pod, the node
/// name and the origin (so any change of content, path or node gives a new UID); the name
/// suffixed with `-<lowercased node name>`; namespace `default` when empty; `spec.nodeName`;
/// the `kubernetes.io/config.hash` annotation; for file manifests a toleration of every
/// NoExecute taint; phase `Pending`. It is then validated.
///
/// Unknown fields are ignored; a field of the wrong type is an error naming its path.
///
/// ```
/// use std::path::PathBuf;
/// use node_core::config::{decode_static_pod, ManifestOrigin};
///
/// let manifest = b"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n\
///                  spec: {containers: [{name: web, image: 'nginx:1.27'}]}\n";
/// let origin = ManifestOrigin::File(PathBuf::from("/etc/kubernetes/manifests/web.yaml"));
/// let pod = decode_static_pod(manifest, &origin, "Node-1").unwrap();
/// assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
/// assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
/// ```
pub fn decode_static_pod(
    data: &[u8],
    origin: &ManifestOrigin,
    node_name: &str,
) -> Result<Pod, PodSourceError> {
    let value = parse_document(data, origin)?;
    check_type(&value, origin, "Pod", true)?;
    pod_from_value(value, origin, node_name)
}

/// Decodes the body served at a static pod URL: a single `Pod` or a `PodList`.
///
/// Every pod is treated like [`decode_static_pod`] does (with `url:<url>` in the UID hash and no
/// NoExecute toleration). One bad item rejects the whole list, as upstream.
pub fn decode_static_pods(
    data: &[u8],
    url: &str,
    node_name: &str,
) -> Result<Vec<Pod>, PodSourceError> {
    let origin = ManifestOrigin::Url(url.to_owned());
    let value = parse_document(data, &origin)?;
    match value.get("kind").and_then(Value::as_str) {
        Some("PodList") => {
            check_type(&value, &origin, "PodList", true)?;
            let Value::Object(mut list) = value else {
                return Err(kind_error(&origin, "expected an object".to_owned()));
            };
            let items = match list.remove("items") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(PodSourceError::Field {
                        origin,
                        field: "items".to_owned(),
                        message: "expected an array of pods".to_owned(),
                    });
                }
            };
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    let origin = ManifestOrigin::UrlItem {
                        url: url.to_owned(),
                        index,
                    };
                    check_type(&item, &origin, "Pod", false)?;
                    pod_from_value(item, &origin, node_name)
                })
                .collect()
        }
        _ => {
            check_type(&value, &origin, "Pod", true)?;
            Ok(vec![pod_from_value(value, &origin, node_name)?])
        }
    }
}

/// Parses the bytes as JSON (when they open with `{`) or YAML, into a JSON value.
fn parse_document(data: &[u8], origin: &ManifestOrigin) -> Result<Value, PodSourceError> {
    if data.len() > MAX_MANIFEST_SIZE {
        return Err(PodSourceError::TooLarge {
            origin: origin.clone(),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let syntax = |message: String| PodSourceError::Syntax {
        origin: origin.clone(),
        message,
    };
    let text = std::str::from_utf8(data).map_err(|e| syntax(format!("not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(PodSourceError::Empty {
            origin: origin.clone(),
        });
    }
    let value: Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?
    } else {
        // Like upstream's YAML-to-JSON step, the first document is the manifest.
        let mut documents: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| syntax(e.to_string()))?;
        if documents.is_empty() {
            Value::Null
        } else {
            documents.swap_remove(0)
        }
    };
    if value.is_null() {
        return Err(PodSourceError::Empty {
            origin: origin.clone(),
        });
    }
    Ok(value)
}

fn kind_error(origin: &ManifestOrigin, message: String) -> PodSourceError {
    PodSourceError::Kind {
        origin: origin.clone(),
        message,
    }
}

/// Checks that `value` is an object of `kind` in `apiVersion: v1`. With `required`, both
/// fields must be present (a top-level object); otherwise they may be left out (list items).
fn check_type(
    value: &Value,
    origin: &ManifestOrigin,
    kind: &str,
    required: bool,
) -> Result<(), PodSourceError> {
    let Value::Object(object) = value else {
        return Err(kind_error(
            origin,
            format!("expected a {kind} object, found {}", json_type(value)),
        ));
    };
    match object.get("kind") {
        None | Some(Value::Null) if required => {
            return Err(kind_error(origin, "object 'Kind' is missing".to_owned()));
        }
        None | Some(Value::Null) => {}
        Some(Value::String(found)) if found == kind => {}
        Some(found) => {
            return Err(kind_error(origin, format!("kind {found} is not {kind:?}")));
        }
    }
    match object.get("apiVersion") {
        None | Some(Value::Null) if required => Err(kind_error(
            origin,
            "object 'apiVersion' is missing".to_owned(),
        )),
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(found)) if found == "v1" => Ok(()),
        Some(found) => Err(kind_error(
            origin,
            format!("apiVersion {found} is not \"v1\""),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Typed decode, scheme defaults, static pod defaults, validation.
fn pod_from_value(
    value: Value,
    origin: &ManifestOrigin,
    node_name: &str,
) -> Result<Pod, PodSourceError> {
    let mut pod: Pod = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        PodSourceError::Field {
            origin: origin.clone(),
            field: if field == "." { String::new() } else { field },
            message: e.into_inner().to_string(),
        }
    })?;
    defaults::set_pod_defaults(&mut pod);
    if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(PodSourceError::MissingName {
            origin: origin.clone(),
        });
    }
    apply_static_defaults(&mut pod, origin, node_name);
    let errors = validation::validate_pod(&pod);
    if !errors.is_empty() {
        return Err(PodSourceError::Invalid {
            origin: origin.clone(),
            errors,
        });
    }
    Ok(pod)
}

/// Upstream's `applyDefaults`: UID, name, namespace, node name, hash annotation, toleration,
/// phase.
fn apply_static_defaults(pod: &mut Pod, origin: &ManifestOrigin, node_name: &str) {
    if pod.metadata.uid.as_deref().is_none_or(str::is_empty) {
        // The hash covers the decoded pod before any of the changes below.
        let mut hasher = Fnv128a::new();
        // Serializing k8s-openapi types is deterministic: fixed field order, sorted maps.
        hasher.write(&serde_json::to_vec(&*pod).unwrap_or_default());
        match origin {
            ManifestOrigin::File(path) => {
                hasher.write(format!("host:{node_name}").as_bytes());
                hasher.write(format!("file:{}", path.display()).as_bytes());
            }
            ManifestOrigin::Url(url) | ManifestOrigin::UrlItem { url, .. } => {
                hasher.write(format!("url:{url}").as_bytes());
            }
        }
        pod.metadata.uid = Some(format!("{:032x}", hasher.finish()));
    }
    let name = pod.metadata.name.take().unwrap_or_default();
    pod.metadata.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".to_owned());
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_HASH_ANNOTATION.to_owned(), uid);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    if origin.is_file() {
        add_or_update_toleration(
            spec.tolerations.get_or_insert_with(Vec::new),
            Toleration {
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                ..Default::default()
            },
        );
    }
    pod.status.get_or_insert_with(PodStatus::default).phase = Some("Pending".to_owned());
}

/// Upstream's `AddOrUpdateTolerationInPod`: a toleration matching on key, operator, value and
/// effect is replaced; otherwise the toleration is appended.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, toleration: Toleration) {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let matches = |t: &Toleration| {
        text(&t.key) == text(&toleration.key)
            && text(&t.operator) == text(&toleration.operator)
            && text(&t.value) == text(&toleration.value)
            && text(&t.effect) == text(&toleration.effect)
    };
    match tolerations.iter().position(matches) {
        Some(index) => tolerations[index] = toleration,
        None => tolerations.push(toleration),
    }
}

/// FNV-1a, 128 bits: the hash upstream uses for static pod UIDs (since v1.35).
pub(crate) struct Fnv128a(u128);

impl Fnv128a {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    pub(crate) fn new() -> Self {
        Fnv128a(Self::OFFSET_BASIS)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn finish(&self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv128a_matches_the_reference_vectors() {
        // Go: fmt.Printf("%x", fnv.New128a().Sum(nil)) and with "a" written.
        assert_eq!(
            format!("{:032x}", Fnv128a::new().finish()),
            "6c62272e07bb014262b821756295c58d"
        );
        let mut h = Fnv128a::new();
        h.write(b"a");
        assert_eq!(
            format!("{:032x}", h.finish()),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }
}
