//! The downward API: a pod's own metadata and a container's resources as text, shared by
//! environment variables (`fieldRef`, `resourceFieldRef`) and downwardAPI volume files.
//!
//! [`pod_metadata_field`] is upstream `fieldpath.ExtractFieldPathAsString` for the paths both
//! consumers accept (`metadata.name`, `.namespace`, `.uid`, `.labels`, `.annotations` and the
//! `['key']` forms of the last two); [`container_resource`] is upstream
//! `ExtractContainerResourceValue` with a missing cpu or memory limit read as node allocatable
//! (upstream `MergeContainerResourceLimits`). Paths that only environment variables accept
//! (`spec.nodeName`, `status.podIP`, ...) need the node's state and stay with the runtime.
//!
//! Errors are plain strings: they end up in a pod's status message.
//!
//! ```
//! use k8s_openapi::api::core::v1::{ObjectFieldSelector, Pod};
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
//! use node_core::downward::object_field;
//!
//! let pod = Pod {
//!     metadata: ObjectMeta { name: Some("web".into()), ..Default::default() },
//!     ..Default::default()
//! };
//! let selector = ObjectFieldSelector { api_version: None, field_path: "metadata.name".into() };
//! assert_eq!(object_field(&selector, &pod).unwrap(), "web");
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use node_config::{Quantity, QuantityFormat};
use tracing::debug;

/// The field path of `selector` once its `apiVersion` is checked: empty or `v1`, the only pod
/// version there is; anything else is an `unsupported pod version` error.
pub fn checked_field_path(selector: &ObjectFieldSelector) -> Result<&str, String> {
    if let Some(version) = selector
        .api_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "v1")
    {
        return Err(format!("unsupported pod version: {version}"));
    }
    Ok(selector.field_path.as_str())
}

/// The value `selector` names in `pod`: [`checked_field_path`], then [`pod_metadata_field`].
/// What a downwardAPI volume file's `fieldRef` resolves to.
pub fn object_field(selector: &ObjectFieldSelector, pod: &Pod) -> Result<String, String> {
    pod_metadata_field(pod, checked_field_path(selector)?)
}

/// The pod's metadata field at `field_path` as text (upstream
/// `fieldpath.ExtractFieldPathAsString`): `metadata.name`, `metadata.namespace`,
/// `metadata.uid`, `metadata.labels` and `metadata.annotations` (as `key="value"` lines sorted
/// by key, the value quoted like Go's `%q`), and `metadata.labels['key']` and
/// `metadata.annotations['key']` (a missing key reads as the empty string). A subscript on any
/// other path is a `does not support subscript` error; any other path is an
/// `unsupported fieldPath` error.
pub fn pod_metadata_field(pod: &Pod, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    if let Some((base, subscript)) = field_path
        .strip_suffix("']")
        .and_then(|p| p.split_once("['"))
        .filter(|(base, _)| !base.is_empty())
    {
        let map = match base {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => {
                return Err(format!(
                    "fieldPath {field_path:?} does not support subscript"
                ));
            }
        };
        return Ok(map
            .and_then(|m| m.get(subscript))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// The container of `pod` called `name`, looked up among the regular containers, then the
/// init containers (a downwardAPI volume's `resourceFieldRef.containerName`).
pub fn container_by_name<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The node's allocatable resources, which a container's missing cpu or memory limit reads as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// Node allocatable cpu in millicores.
    pub cpu_millis: i64,
    /// Node allocatable memory in bytes.
    pub memory_bytes: i64,
}

/// The container resource `selector` names, divided by its divisor and rounded up (upstream
/// `ExtractContainerResourceValue`).
///
/// `selector.resource` is `limits.<name>` or `requests.<name>` for cpu, memory,
/// ephemeral-storage or `hugepages-<size>`; a missing request reads as the limit (as the API
/// server defaults it), a missing cpu or memory limit as `allocatable`, and any other missing
/// amount as 0, except a missing ephemeral-storage limit, which is an error (node allocatable
/// ephemeral storage is not known). A missing or zero divisor is 1.
pub fn container_resource(
    selector: &ResourceFieldSelector,
    container: &Container,
    allocatable: &NodeAllocatable,
) -> Result<String, String> {
    let divisor = match selector.divisor.as_ref() {
        None => None,
        Some(d) => Some(
            d.0.parse::<Quantity>()
                .map_err(|e| format!("invalid divisor {:?}: {e}", d.0))?,
        ),
    }
    .filter(|d| !d.is_zero())
    .unwrap_or_else(|| Quantity::from_value(1, QuantityFormat::DecimalSI));
    let r = container.resources.as_ref();
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    let (which, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {}", selector.resource))?;
    // A missing request defaults to the limit, as the API server defaults it.
    let amount = match which {
        "limits" => parse_quantity(limits, resource),
        "requests" => {
            parse_quantity(requests, resource).or_else(|| parse_quantity(limits, resource))
        }
        _ => None,
    };
    let supported = matches!(resource, "cpu" | "memory" | "ephemeral-storage")
        || resource.starts_with("hugepages-");
    if !matches!(which, "limits" | "requests") || !supported {
        return Err(format!(
            "unsupported container resource: {}",
            selector.resource
        ));
    }
    if resource == "cpu" {
        let milli = match (amount, which) {
            (Some(q), _) => q.milli_value(),
            (None, "limits") => allocatable.cpu_millis,
            (None, _) => 0,
        };
        let per = divisor.milli_value();
        if per <= 0 {
            return Err(format!(
                "invalid divisor {divisor} for {}",
                selector.resource
            ));
        }
        return Ok(div_ceil(milli, per).to_string());
    }
    let value = match (amount, which, resource) {
        (Some(q), _, _) => q.value(),
        (None, "limits", "memory") => allocatable.memory_bytes,
        (None, "limits", "ephemeral-storage") => {
            return Err(
                "no ephemeral-storage limit, and node allocatable ephemeral storage is not known"
                    .into(),
            );
        }
        (None, _, _) => 0,
    };
    let per = divisor.value();
    if per <= 0 {
        return Err(format!(
            "invalid divisor {divisor} for {}",
            selector.resource
        ));
    }
    Ok(div_ceil(value, per).to_string())
}

/// The entry `name` of a resource list, parsed; `None` when it is missing or unparsable (the
/// latter logged at debug level).
pub fn parse_quantity(
    list: Option<&BTreeMap<String, ApiQuantity>>,
    name: &str,
) -> Option<Quantity> {
    let raw = list?.get(name)?;
    match raw.0.parse::<Quantity>() {
        Ok(q) => Some(q),
        Err(error) => {
            debug!(resource = name, quantity = %raw.0, %error, "ignoring unparsable quantity");
            None
        }
    }
}

/// `ceil(a / b)` for `b > 0`.
fn div_ceil(a: i64, b: i64) -> i64 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

/// Go's `%q` for the characters a label or annotation value may hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key="value"` lines in key order (upstream `fieldpath.FormatMap`).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const GI: i64 = 1 << 30;
    const ALLOCATABLE: NodeAllocatable = NodeAllocatable {
        cpu_millis: 4000,
        memory_bytes: 8 * GI,
    };

    fn strings(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                labels: Some(strings(&[
                    ("tier", "fe\"x"),
                    ("app", "web"),
                    ("weird", "a\\b\nc\td\r\u{1}\u{7f}é"),
                ])),
                annotations: Some(strings(&[("a", "b"), ("example.com/x", "y z")])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container("app"), container("sidecar")],
                init_containers: Some(vec![container("init"), container("app")]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            ..Default::default()
        }
    }

    fn q(items: &[(&str, &str)]) -> Option<BTreeMap<String, ApiQuantity>> {
        (!items.is_empty()).then(|| {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                .collect()
        })
    }

    fn with_resources(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        Container {
            resources: Some(ResourceRequirements {
                requests: q(req),
                limits: q(lim),
                ..Default::default()
            }),
            ..container("app")
        }
    }

    fn resource(c: &Container, res: &str, divisor: Option<&str>) -> Result<String, String> {
        let selector = ResourceFieldSelector {
            container_name: None,
            divisor: divisor.map(|d| ApiQuantity(d.into())),
            resource: res.into(),
        };
        container_resource(&selector, c, &ALLOCATABLE)
    }

    fn selector(api_version: Option<&str>, path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            api_version: api_version.map(str::to_string),
            field_path: path.into(),
        }
    }

    #[test]
    fn metadata_fields() {
        let pod = pod();
        let field = |path| pod_metadata_field(&pod, path).unwrap();
        assert_eq!(field("metadata.name"), "web");
        assert_eq!(field("metadata.namespace"), "prod");
        assert_eq!(field("metadata.uid"), "uid-1");
        assert_eq!(
            field("metadata.annotations"),
            "a=\"b\"\nexample.com/x=\"y z\""
        );

        // Unset metadata reads as empty.
        let empty = Pod::default();
        for path in [
            "metadata.name",
            "metadata.namespace",
            "metadata.uid",
            "metadata.labels",
            "metadata.annotations",
            "metadata.labels['app']",
        ] {
            assert_eq!(pod_metadata_field(&empty, path).unwrap(), "", "{path}");
        }
    }

    #[test]
    fn label_maps_are_sorted_and_quoted() {
        assert_eq!(
            pod_metadata_field(&pod(), "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"fe\\\"x\"\nweird=\"a\\\\b\\nc\\td\\r\\x01\\x7fé\""
        );
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(format_map(Some(&BTreeMap::new())), "");
    }

    #[test]
    fn subscripts() {
        let pod = pod();
        let field = |path| pod_metadata_field(&pod, path);
        assert_eq!(field("metadata.labels['app']").unwrap(), "web");
        assert_eq!(field("metadata.labels['tier']").unwrap(), "fe\"x");
        assert_eq!(field("metadata.labels['nope']").unwrap(), "");
        assert_eq!(field("metadata.annotations['a']").unwrap(), "b");
        assert_eq!(
            field("metadata.annotations['example.com/x']").unwrap(),
            "y z"
        );
        assert_eq!(field("metadata.annotations['nope']").unwrap(), "");
        assert_eq!(
            field("metadata.name['x']").unwrap_err(),
            "fieldPath \"metadata.name['x']\" does not support subscript"
        );
        assert_eq!(
            field("spec.nodeName['x']").unwrap_err(),
            "fieldPath \"spec.nodeName['x']\" does not support subscript"
        );
    }

    #[test]
    fn unsupported_paths() {
        let pod = pod();
        for path in [
            "spec.nodeName",
            "status.podIP",
            "metadata.generateName",
            "metadata",
            "",
            "['app']",
        ] {
            assert_eq!(
                pod_metadata_field(&pod, path).unwrap_err(),
                format!("unsupported fieldPath: {path}"),
            );
        }
    }

    #[test]
    fn api_versions() {
        let pod = pod();
        for version in [None, Some(""), Some("v1")] {
            assert_eq!(
                object_field(&selector(version, "metadata.name"), &pod).unwrap(),
                "web"
            );
        }
        assert_eq!(
            object_field(&selector(Some("v2"), "metadata.name"), &pod).unwrap_err(),
            "unsupported pod version: v2"
        );
        assert_eq!(
            checked_field_path(&selector(Some("v1"), "status.podIP")).unwrap(),
            "status.podIP"
        );
        assert_eq!(
            object_field(&selector(None, "status.podIP"), &pod).unwrap_err(),
            "unsupported fieldPath: status.podIP"
        );
    }

    #[test]
    fn containers_by_name() {
        let pod = pod();
        let found = |name| container_by_name(&pod, name).map(|c| c.name.as_str());
        assert_eq!(found("sidecar"), Some("sidecar"));
        assert_eq!(found("init"), Some("init"));
        // Regular containers come first.
        assert!(std::ptr::eq(
            container_by_name(&pod, "app").unwrap(),
            &pod.spec.as_ref().unwrap().containers[0]
        ));
        assert_eq!(found("nope"), None);
        assert_eq!(container_by_name(&Pod::default(), "app"), None);
    }

    #[test]
    fn cpu() {
        let c = with_resources(&[("cpu", "250m")], &[("cpu", "1500m")]);
        assert_eq!(resource(&c, "limits.cpu", Some("1m")).unwrap(), "1500");
        assert_eq!(resource(&c, "limits.cpu", None).unwrap(), "2"); // ceil(1.5)
        assert_eq!(resource(&c, "requests.cpu", None).unwrap(), "1"); // ceil(0.25)
        assert_eq!(resource(&c, "requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(resource(&c, "requests.cpu", Some("100m")).unwrap(), "3");
        // A zero divisor is 1.
        assert_eq!(resource(&c, "requests.cpu", Some("0")).unwrap(), "1");

        // No cpu limit: node allocatable; no request either: the (absent) limit, so 0.
        let c = with_resources(&[], &[]);
        assert_eq!(resource(&c, "limits.cpu", Some("1m")).unwrap(), "4000");
        assert_eq!(resource(&c, "limits.cpu", None).unwrap(), "4");
        assert_eq!(resource(&c, "requests.cpu", None).unwrap(), "0");
        assert_eq!(
            resource(&container("bare"), "limits.cpu", None).unwrap(),
            "4"
        );
    }

    #[test]
    fn memory() {
        // A missing request reads as the limit.
        let c = with_resources(&[], &[("memory", "128Mi")]);
        assert_eq!(
            resource(&c, "requests.memory", None).unwrap(),
            (128 << 20).to_string()
        );
        assert_eq!(resource(&c, "requests.memory", Some("1Mi")).unwrap(), "128");
        assert_eq!(resource(&c, "limits.memory", Some("1G")).unwrap(), "1"); // ceil

        let c = with_resources(&[("memory", "64Mi")], &[("memory", "128Mi")]);
        assert_eq!(resource(&c, "requests.memory", Some("1Mi")).unwrap(), "64");

        // No memory limit: node allocatable.
        let c = with_resources(&[("memory", "64Mi")], &[]);
        assert_eq!(resource(&c, "limits.memory", Some("1Gi")).unwrap(), "8");
        assert_eq!(
            resource(&c, "limits.memory", None).unwrap(),
            (8 * GI).to_string()
        );
    }

    #[test]
    fn other_resources() {
        let c = with_resources(
            &[("hugepages-2Mi", "4Mi")],
            &[("ephemeral-storage", "1Gi"), ("hugepages-2Mi", "8Mi")],
        );
        assert_eq!(
            resource(&c, "limits.ephemeral-storage", Some("1Mi")).unwrap(),
            "1024"
        );
        assert_eq!(
            resource(&c, "requests.ephemeral-storage", Some("1Mi")).unwrap(),
            "1024"
        );
        assert_eq!(
            resource(&c, "limits.hugepages-2Mi", Some("1Mi")).unwrap(),
            "8"
        );
        assert_eq!(
            resource(&c, "requests.hugepages-2Mi", Some("1Mi")).unwrap(),
            "4"
        );
        assert_eq!(resource(&c, "limits.hugepages-1Gi", None).unwrap(), "0");

        let none = with_resources(&[], &[]);
        assert_eq!(
            resource(&none, "limits.ephemeral-storage", None).unwrap_err(),
            "no ephemeral-storage limit, and node allocatable ephemeral storage is not known"
        );
        assert_eq!(
            resource(&none, "requests.ephemeral-storage", None).unwrap(),
            "0"
        );
    }

    #[test]
    fn invalid_resources() {
        let c = with_resources(&[("cpu", "1")], &[("cpu", "1")]);
        for res in [
            "limits.gpu",
            "cpu",
            "claims.cpu",
            "requests.nvidia.com/gpu",
            "",
        ] {
            assert_eq!(
                resource(&c, res, None).unwrap_err(),
                format!("unsupported container resource: {res}"),
            );
        }
        assert!(
            resource(&c, "limits.cpu", Some("lots"))
                .unwrap_err()
                .starts_with("invalid divisor \"lots\": ")
        );
        assert_eq!(
            resource(&c, "limits.cpu", Some("-1")).unwrap_err(),
            "invalid divisor -1 for limits.cpu"
        );
        assert_eq!(
            resource(&c, "limits.memory", Some("-1Mi")).unwrap_err(),
            "invalid divisor -1Mi for limits.memory"
        );
        // Divisors round up to a whole millicore or unit.
        assert_eq!(resource(&c, "limits.cpu", Some("1n")).unwrap(), "1000");
    }

    #[test]
    fn unparsable_quantities_read_as_missing() {
        let c = with_resources(&[("cpu", "fast")], &[("cpu", "2")]);
        assert_eq!(resource(&c, "requests.cpu", None).unwrap(), "2");
        assert_eq!(parse_quantity(q(&[("cpu", "fast")]).as_ref(), "cpu"), None);
        assert_eq!(parse_quantity(None, "cpu"), None);
    }

    #[test]
    fn ceil_division() {
        assert_eq!(div_ceil(0, 3), 0);
        assert_eq!(div_ceil(1, 3), 1);
        assert_eq!(div_ceil(3, 3), 1);
        assert_eq!(div_ceil(4, 3), 2);
        assert_eq!(div_ceil(-4, 3), -1);
    }
}
