//! The [`AtomicWriter`](crate::atomic_writer::AtomicWriter) payloads of configMap, secret and
//! projected volumes, as upstream builds them (`MakePayload` of `pkg/volume/configmap` and
//! `pkg/volume/secret`, `collectData` of `pkg/volume/projected`).
//!
//! Modes are the API's `int32` permission bits; a mode outside `0..=0o7777` is rejected.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource,
    Secret, SecretVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
};

use crate::atomic_writer::FileProjection;

/// A payload: relative path -> file.
pub type Payload = BTreeMap<String, FileProjection>;

/// The default mode of configMap, secret, downwardAPI and projected volumes (`0644`).
pub const DEFAULT_MODE: i32 = 0o644;

/// What a projected volume needs from the rest of the node agent: the objects its sources
/// name (in the pod's namespace) and the files only the agent can produce.
pub trait ProjectedSources {
    /// The config map `name`, `Ok(None)` when it does not exist.
    fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String>;
    /// The secret `name`, `Ok(None)` when it does not exist.
    fn secret(&self, name: &str) -> Result<Option<Secret>, String>;
    /// The files of a downwardAPI projection, each with its own mode or `default_mode`.
    fn downward_api(
        &self,
        items: &[DownwardAPIVolumeFile],
        default_mode: i32,
    ) -> Result<BTreeMap<String, FileProjection>, String>;
    /// A service account token for the pod, for the projection's audience and expiration.
    fn service_account_token(
        &self,
        source: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, String>;
    /// Whether the pod sets an `fsGroup`: a token is then written `0600`, and the volume's
    /// ownership change makes it `0640` for the group (upstream's projected volume).
    fn fs_group_set(&self) -> bool {
        false
    }
}

/// The payload of a configMap volume: every key of `data` and `binaryData` when the source
/// has no items, else each item's key at the item's path. A key in neither map is an error
/// unless the source is optional (the item is skipped then). Modes: the item's, else the
/// source's `defaultMode`, else 0644.
pub fn config_map_payload(
    source: &ConfigMapVolumeSource,
    config_map: &ConfigMap,
) -> Result<Payload, String> {
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    let optional = source.optional.unwrap_or(false);
    config_map_items(source.items.as_deref(), config_map, default_mode, optional)
}

/// The payload of a secret volume: as [`config_map_payload`], with the secret's `data`.
pub fn secret_payload(source: &SecretVolumeSource, secret: &Secret) -> Result<Payload, String> {
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    let optional = source.optional.unwrap_or(false);
    secret_items(source.items.as_deref(), secret, default_mode, optional)
}

/// The payload of a projected volume: the union of its sources' files, each source with the
/// volume's `defaultMode` (else 0644) unless an item sets its own mode. A config map or
/// secret that does not exist is an error (`configmap "<name>" not found`) unless its
/// projection is optional. As upstream, every source is tried and the errors are reported
/// together (`[first, second]` when more than one).
pub fn projected_payload(
    source: &ProjectedVolumeSource,
    resolve: &dyn ProjectedSources,
) -> Result<Payload, String> {
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for projection in source.sources.iter().flatten() {
        match projection_payload(projection, default_mode, resolve) {
            Ok(files) => payload.extend(files),
            Err(err) => errors.push(err),
        }
    }
    match aggregate(errors) {
        None => Ok(payload),
        Some(err) => Err(err),
    }
}

/// The files of one source of a projected volume.
fn projection_payload(
    projection: &VolumeProjection,
    default_mode: i32,
    resolve: &dyn ProjectedSources,
) -> Result<Payload, String> {
    if let Some(cm) = &projection.config_map {
        let optional = cm.optional.unwrap_or(false);
        let object = match resolve.config_map(&cm.name)? {
            Some(object) => object,
            None if optional => ConfigMap::default(),
            None => return Err(format!("configmap {:?} not found", cm.name)),
        };
        config_map_items(cm.items.as_deref(), &object, default_mode, optional)
    } else if let Some(secret) = &projection.secret {
        let optional = secret.optional.unwrap_or(false);
        let object = match resolve.secret(&secret.name)? {
            Some(object) => object,
            None if optional => Secret::default(),
            None => return Err(format!("secret {:?} not found", secret.name)),
        };
        secret_items(secret.items.as_deref(), &object, default_mode, optional)
    } else if let Some(downward_api) = &projection.downward_api {
        let items = downward_api.items.as_deref().unwrap_or_default();
        resolve.downward_api(items, default_mode)
    } else if let Some(token) = &projection.service_account_token {
        let data = resolve.service_account_token(token)?;
        let mode = if resolve.fs_group_set() {
            0o600
        } else {
            default_mode
        };
        let file = FileProjection {
            data,
            mode: file_mode(mode)?,
        };
        Ok(Payload::from([(token.path.clone(), file)]))
    } else if projection.cluster_trust_bundle.is_some() {
        Err("clusterTrustBundle projections are not supported".into())
    } else if projection.pod_certificate.is_some() {
        Err("podCertificate projections are not supported".into())
    } else {
        Ok(Payload::new())
    }
}

fn config_map_items(
    items: Option<&[KeyToPath]>,
    config_map: &ConfigMap,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let data = config_map.data.iter().flatten();
    let binary = config_map.binary_data.iter().flatten();
    // As upstream: binaryData is read after data, and data wins for an item's key.
    let all = data
        .map(|(key, value)| (key, value.as_bytes()))
        .chain(binary.map(|(key, value)| (key, value.0.as_slice())));
    let lookup = |key: &str| {
        let text = config_map.data.as_ref().and_then(|data| data.get(key));
        let bytes = config_map
            .binary_data
            .as_ref()
            .and_then(|data| data.get(key));
        text.map(|text| text.as_bytes())
            .or_else(|| bytes.map(|bytes| bytes.0.as_slice()))
    };
    select(items, all, lookup, default_mode, optional, |key| {
        format!("configmap references non-existent config key: {key}")
    })
}

fn secret_items(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let all = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key, value.0.as_slice()));
    let lookup = |key: &str| {
        let data = secret.data.as_ref()?;
        data.get(key).map(|value| value.0.as_slice())
    };
    select(items, all, lookup, default_mode, optional, |key| {
        format!("references non-existent secret key: {key}")
    })
}

/// upstream's `MakePayload`: every key of `all` when there are no items, else each item.
fn select<'a>(
    items: Option<&[KeyToPath]>,
    all: impl Iterator<Item = (&'a String, &'a [u8])>,
    lookup: impl Fn(&str) -> Option<&'a [u8]>,
    default_mode: i32,
    optional: bool,
    missing_key: impl Fn(&str) -> String,
) -> Result<Payload, String> {
    let items = items.unwrap_or_default();
    if items.is_empty() {
        let mode = file_mode(default_mode)?;
        return Ok(all
            .map(|(key, data)| (key.clone(), file(data, mode)))
            .collect());
    }
    let mut payload = Payload::new();
    for item in items {
        let Some(data) = lookup(&item.key) else {
            if optional {
                continue;
            }
            return Err(missing_key(&item.key));
        };
        let mode = file_mode(item.mode.unwrap_or(default_mode))?;
        payload.insert(item.path.clone(), file(data, mode));
    }
    Ok(payload)
}

fn file(data: &[u8], mode: u32) -> FileProjection {
    FileProjection {
        data: data.to_vec(),
        mode,
    }
}

/// An API mode as permission bits; negative or above `0o7777` is an error.
pub(crate) fn file_mode(mode: i32) -> Result<u32, String> {
    u32::try_from(mode)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("invalid file mode {mode}: must be between 0 and 0o7777"))
}

/// upstream's error aggregate: `None` for no error, the message for one, else the distinct
/// messages as `[a, b]`.
fn aggregate(errors: Vec<String>) -> Option<String> {
    let mut seen = BTreeSet::new();
    let distinct: Vec<String> = errors
        .into_iter()
        .filter(|err| seen.insert(err.clone()))
        .collect();
    match distinct.as_slice() {
        [] => None,
        [only] => Some(only.clone()),
        many => Some(format!("[{}]", many.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, ObjectFieldSelector, SecretProjection,
    };

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn config_map(data: &[(&str, &str)], binary: &[(&str, &[u8])]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn files(entries: &[(&str, &[u8], u32)]) -> Payload {
        entries
            .iter()
            .map(|(path, data, mode)| (path.to_string(), file(data, *mode)))
            .collect()
    }

    #[test]
    fn config_map_without_items_projects_data_and_binary_data() {
        let cm = config_map(&[("app.conf", "a=1")], &[("blob", b"\x00\xff")]);
        let source = ConfigMapVolumeSource::default();
        assert_eq!(
            config_map_payload(&source, &cm).unwrap(),
            files(&[("app.conf", b"a=1", 0o644), ("blob", b"\x00\xff", 0o644)])
        );
        let source = ConfigMapVolumeSource {
            default_mode: Some(0o400),
            ..Default::default()
        };
        assert_eq!(
            config_map_payload(&source, &cm).unwrap(),
            files(&[("app.conf", b"a=1", 0o400), ("blob", b"\x00\xff", 0o400)])
        );
        assert!(
            config_map_payload(&source, &ConfigMap::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn config_map_items_map_keys_to_paths_and_modes() {
        let cm = config_map(&[("a", "text"), ("unused", "x")], &[("b", b"bin")]);
        let source = ConfigMapVolumeSource {
            default_mode: Some(0o640),
            items: Some(vec![
                item("a", "conf/a.txt", None),
                item("b", "b.bin", Some(0o600)),
            ]),
            ..Default::default()
        };
        assert_eq!(
            config_map_payload(&source, &cm).unwrap(),
            files(&[("conf/a.txt", b"text", 0o640), ("b.bin", b"bin", 0o600)])
        );
    }

    #[test]
    fn config_map_missing_key_is_an_error_unless_optional() {
        let cm = config_map(&[("a", "1")], &[]);
        let mut source = ConfigMapVolumeSource {
            items: Some(vec![item("a", "a", None), item("nope", "nope", None)]),
            ..Default::default()
        };
        assert_eq!(
            config_map_payload(&source, &cm),
            Err("configmap references non-existent config key: nope".to_string())
        );
        source.optional = Some(true);
        assert_eq!(
            config_map_payload(&source, &cm).unwrap(),
            files(&[("a", b"1", 0o644)])
        );
    }

    #[test]
    fn invalid_modes_are_rejected() {
        let cm = config_map(&[("a", "1")], &[]);
        for mode in [-1, 0o10000] {
            let source = ConfigMapVolumeSource {
                default_mode: Some(mode),
                ..Default::default()
            };
            assert_eq!(
                config_map_payload(&source, &cm),
                Err(format!(
                    "invalid file mode {mode}: must be between 0 and 0o7777"
                ))
            );
        }
    }

    #[test]
    fn secret_without_items_projects_all_data() {
        let s = secret(&[("token", b"t0k"), ("ca.crt", b"pem")]);
        let source = SecretVolumeSource::default();
        assert_eq!(
            secret_payload(&source, &s).unwrap(),
            files(&[("token", b"t0k", 0o644), ("ca.crt", b"pem", 0o644)])
        );
    }

    #[test]
    fn secret_items_use_item_mode_then_default_mode() {
        let s = secret(&[("user", b"admin"), ("pass", b"hunter2")]);
        let source = SecretVolumeSource {
            default_mode: Some(0o440),
            items: Some(vec![
                item("user", "creds/user", None),
                item("pass", "creds/pass", Some(0o400)),
            ]),
            ..Default::default()
        };
        assert_eq!(
            secret_payload(&source, &s).unwrap(),
            files(&[
                ("creds/user", b"admin", 0o440),
                ("creds/pass", b"hunter2", 0o400)
            ])
        );
    }

    #[test]
    fn secret_missing_key_is_an_error_unless_optional() {
        let s = secret(&[("user", b"admin")]);
        let mut source = SecretVolumeSource {
            items: Some(vec![item("pass", "pass", None)]),
            ..Default::default()
        };
        assert_eq!(
            secret_payload(&source, &s),
            Err("references non-existent secret key: pass".to_string())
        );
        source.optional = Some(true);
        assert!(secret_payload(&source, &s).unwrap().is_empty());
    }

    /// Objects by name, a downward API that renders `<fieldPath>` and a fixed token.
    #[derive(Default)]
    struct Fake {
        config_maps: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
        fs_group: bool,
    }

    impl ProjectedSources for Fake {
        fn fs_group_set(&self) -> bool {
            self.fs_group
        }

        fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
            if name == "broken" {
                return Err("api server unavailable".into());
            }
            Ok(self.config_maps.get(name).cloned())
        }

        fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
            Ok(self.secrets.get(name).cloned())
        }

        fn downward_api(
            &self,
            items: &[DownwardAPIVolumeFile],
            default_mode: i32,
        ) -> Result<Payload, String> {
            items
                .iter()
                .map(|item| {
                    let field = item.field_ref.as_ref().map(|f| f.field_path.clone());
                    let mode = file_mode(item.mode.unwrap_or(default_mode))?;
                    Ok((
                        item.path.clone(),
                        file(field.unwrap_or_default().as_bytes(), mode),
                    ))
                })
                .collect()
        }

        fn service_account_token(
            &self,
            source: &ServiceAccountTokenProjection,
        ) -> Result<Vec<u8>, String> {
            Ok(format!("token-for-{}", source.audience.as_deref().unwrap_or("api")).into_bytes())
        }
    }

    fn fake() -> Fake {
        Fake {
            config_maps: BTreeMap::from([(
                "cm".to_string(),
                config_map(&[("a", "1"), ("b", "2")], &[]),
            )]),
            secrets: BTreeMap::from([("s".to_string(), secret(&[("key", b"k")]))]),
            fs_group: false,
        }
    }

    fn cm_projection(
        name: &str,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    ) -> VolumeProjection {
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: name.into(),
                items,
                optional: Some(optional),
            }),
            ..Default::default()
        }
    }

    fn secret_projection(
        name: &str,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    ) -> VolumeProjection {
        VolumeProjection {
            secret: Some(SecretProjection {
                name: name.into(),
                items,
                optional: Some(optional),
            }),
            ..Default::default()
        }
    }

    fn projected(
        default_mode: Option<i32>,
        sources: Vec<VolumeProjection>,
    ) -> ProjectedVolumeSource {
        ProjectedVolumeSource {
            default_mode,
            sources: Some(sources),
        }
    }

    #[test]
    fn projected_merges_every_kind_of_source_with_the_default_mode() {
        let source = projected(
            Some(0o600),
            vec![
                cm_projection(
                    "cm",
                    Some(vec![
                        item("a", "config/a", None),
                        item("b", "b", Some(0o644)),
                    ]),
                    false,
                ),
                secret_projection("s", None, false),
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "labels".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.labels".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("vault".into()),
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                },
            ],
        );
        assert_eq!(
            projected_payload(&source, &fake()).unwrap(),
            files(&[
                ("config/a", b"1", 0o600),
                ("b", b"2", 0o644),
                ("key", b"k", 0o600),
                ("labels", b"metadata.labels", 0o600),
                ("token", b"token-for-vault", 0o600),
            ])
        );
    }

    #[test]
    fn with_an_fs_group_a_token_is_written_for_its_owner_only() {
        let source = projected(
            None,
            vec![
                secret_projection("s", None, false),
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: None,
                        expiration_seconds: None,
                        path: "token".into(),
                    }),
                    ..Default::default()
                },
            ],
        );
        let with_group = Fake {
            fs_group: true,
            ..fake()
        };
        // 0600, which the fsGroup ownership change turns into 0640; the rest keep 0644.
        assert_eq!(
            projected_payload(&source, &with_group).unwrap(),
            files(&[("key", b"k", 0o644), ("token", b"token-for-api", 0o600)])
        );
    }

    #[test]
    fn projected_default_mode_defaults_to_0644() {
        let source = projected(None, vec![secret_projection("s", None, false)]);
        assert_eq!(
            projected_payload(&source, &fake()).unwrap(),
            files(&[("key", b"k", 0o644)])
        );
        assert!(
            projected_payload(&projected(None, vec![]), &fake())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn projected_missing_objects_are_errors_unless_optional() {
        let source = projected(None, vec![cm_projection("absent", None, false)]);
        assert_eq!(
            projected_payload(&source, &fake()),
            Err("configmap \"absent\" not found".to_string())
        );
        let source = projected(None, vec![secret_projection("absent", None, false)]);
        assert_eq!(
            projected_payload(&source, &fake()),
            Err("secret \"absent\" not found".to_string())
        );

        // Optional: the projection contributes nothing, even with items.
        let source = projected(
            None,
            vec![
                cm_projection("absent", Some(vec![item("a", "a", None)]), true),
                secret_projection("absent", None, true),
                secret_projection("s", None, false),
            ],
        );
        assert_eq!(
            projected_payload(&source, &fake()).unwrap(),
            files(&[("key", b"k", 0o644)])
        );
    }

    #[test]
    fn projected_missing_key_is_an_error_unless_optional() {
        let items = Some(vec![item("nope", "nope", None), item("a", "a", None)]);
        let source = projected(None, vec![cm_projection("cm", items.clone(), false)]);
        assert_eq!(
            projected_payload(&source, &fake()),
            Err("configmap references non-existent config key: nope".to_string())
        );
        let source = projected(None, vec![cm_projection("cm", items, true)]);
        assert_eq!(
            projected_payload(&source, &fake()).unwrap(),
            files(&[("a", b"1", 0o644)])
        );
    }

    #[test]
    fn projected_reports_every_failing_source() {
        let source = projected(
            None,
            vec![
                cm_projection("broken", None, true),
                secret_projection("absent", None, false),
                secret_projection("absent", None, false),
                secret_projection("s", None, false),
            ],
        );
        // A lookup failure is an error even for an optional projection; duplicates collapse.
        assert_eq!(
            projected_payload(&source, &fake()),
            Err("[api server unavailable, secret \"absent\" not found]".to_string())
        );
    }

    #[test]
    fn projected_unsupported_sources_are_errors() {
        let source = projected(
            None,
            vec![VolumeProjection {
                cluster_trust_bundle: Some(Default::default()),
                ..Default::default()
            }],
        );
        assert_eq!(
            projected_payload(&source, &fake()),
            Err("clusterTrustBundle projections are not supported".to_string())
        );
    }
}
