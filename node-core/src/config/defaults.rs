//! The v1 scheme defaults the kubelet relies on (upstream `pkg/apis/core/v1/defaults.go`),
//! applied to a freshly decoded pod the way the universal decoder does.

use k8s_openapi::api::core::v1::{Container, EnvVar, HTTPGetAction, Lifecycle, Pod, Probe, Volume};

/// `terminationGracePeriodSeconds` when unset.
pub(crate) const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// `terminationMessagePath` when unset.
pub(crate) const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// `schedulerName` when unset.
pub(crate) const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// `defaultMode` of secret, configMap, downwardAPI and projected volumes when unset (0644).
const DEFAULT_VOLUME_MODE: i32 = 0o644;

fn is_unset(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(str::is_empty)
}

fn set_str(value: &mut Option<String>, default: &str) {
    if is_unset(value) {
        *value = Some(default.to_owned());
    }
}

fn set_int<T: Default + PartialEq + Copy>(value: &mut Option<T>, default: T) {
    if value.is_none_or(|v| v == T::default()) {
        *value = Some(default);
    }
}

/// Applies the scheme defaults to `pod` (creating `spec` if absent).
pub(crate) fn set_pod_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.restart_policy, "Always");
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    }
    set_str(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(Default::default());
    }
    // The v1 conversion fills serviceAccountName from the deprecated serviceAccount.
    if is_unset(&spec.service_account_name) && !is_unset(&spec.service_account) {
        spec.service_account_name = spec.service_account.clone();
    }
    let host_network = spec.host_network.unwrap_or(false);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        set_container_defaults(container, host_network);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        set_volume_defaults(volume);
    }
}

/// The image pull policy upstream defaults to: `Always` for a `:latest` tag or an image
/// without tag and digest, `IfNotPresent` otherwise (a digest without tag included).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// The tag of an image reference as upstream's `parsers.ParseImageName` reports it: the
/// explicit tag, `latest` when there is neither tag nor digest, none for a digest-only
/// reference or an empty one.
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    // The tag follows the last ':' of the last path component (a ':' before a '/' is a port).
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag.to_owned()),
        None if digest.is_none() => Some("latest".to_owned()),
        None => None,
    }
}

fn set_container_defaults(container: &mut Container, host_network: bool) {
    if is_unset(&container.image_pull_policy) {
        let policy = default_pull_policy(container.image.as_deref().unwrap_or(""));
        container.image_pull_policy = Some(policy.to_owned());
    }
    set_str(
        &mut container.termination_message_path,
        DEFAULT_TERMINATION_MESSAGE_PATH,
    );
    set_str(&mut container.termination_message_policy, "File");
    for port in container.ports.iter_mut().flatten() {
        set_str(&mut port.protocol, "TCP");
        if host_network && port.host_port.unwrap_or(0) == 0 {
            port.host_port = Some(port.container_port);
        }
    }
    if let Some(resources) = container.resources.as_mut()
        && let Some(limits) = resources.limits.as_ref()
        && !limits.is_empty()
    {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (name, quantity) in limits {
            requests
                .entry(name.clone())
                .or_insert_with(|| quantity.clone());
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        set_probe_defaults(probe);
    }
    if let Some(lifecycle) = container.lifecycle.as_mut() {
        set_lifecycle_defaults(lifecycle);
    }
    for env in container.env.iter_mut().flatten() {
        set_env_defaults(env);
    }
}

fn set_probe_defaults(probe: &mut Probe) {
    set_int(&mut probe.timeout_seconds, 1);
    set_int(&mut probe.period_seconds, 10);
    set_int(&mut probe.success_threshold, 1);
    set_int(&mut probe.failure_threshold, 3);
    if let Some(action) = probe.http_get.as_mut() {
        set_http_get_defaults(action);
    }
}

fn set_lifecycle_defaults(lifecycle: &mut Lifecycle) {
    for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
        .into_iter()
        .flatten()
    {
        if let Some(action) = handler.http_get.as_mut() {
            set_http_get_defaults(action);
        }
    }
}

fn set_http_get_defaults(action: &mut HTTPGetAction) {
    set_str(&mut action.path, "/");
    set_str(&mut action.scheme, "HTTP");
}

fn set_env_defaults(env: &mut EnvVar) {
    if let Some(field_ref) = env
        .value_from
        .as_mut()
        .and_then(|source| source.field_ref.as_mut())
    {
        set_str(&mut field_ref.api_version, "v1");
    }
}

fn set_volume_defaults(volume: &mut Volume) {
    // A volume without any source is an emptyDir. Checking through the serialized form keeps
    // this independent of the list of sources, which differs between API versions.
    let has_source = match serde_json::to_value(&*volume) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().any(|key| key != "name"),
        _ => true,
    };
    if !has_source {
        volume.empty_dir = Some(Default::default());
    }
    if let Some(source) = volume.secret.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(source) = volume.config_map.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(source) = volume.downward_api.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(source) = volume.projected.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(source) = volume.host_path.as_mut() {
        source.type_.get_or_insert_with(String::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(
            default_pull_policy("busybox@sha256:0123456789abcdef"),
            "IfNotPresent"
        );
        assert_eq!(
            default_pull_policy("busybox:latest@sha256:0123456789abcdef"),
            "Always"
        );
        assert_eq!(default_pull_policy(""), "IfNotPresent");
    }
}
