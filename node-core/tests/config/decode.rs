//! Decoding, defaults, naming/UID and validation of static pod manifests.

use std::path::PathBuf;

use node_core::config::{
    CONFIG_HASH_ANNOTATION, FieldError, MAX_MANIFEST_SIZE, ManifestOrigin, PodSourceError,
    decode_static_pod, decode_static_pods,
};
use node_core::k8s_openapi::api::core::v1::Pod;

const NODE: &str = "Node-1";

fn file(path: &str) -> ManifestOrigin {
    ManifestOrigin::File(PathBuf::from(path))
}

fn decode(yaml: &str) -> Result<Pod, PodSourceError> {
    decode_static_pod(
        yaml.as_bytes(),
        &file("/etc/kubernetes/manifests/web.yaml"),
        NODE,
    )
}

/// The validation errors of a manifest, as `field: message` strings.
fn invalid(yaml: &str) -> Vec<String> {
    match decode(yaml) {
        Err(PodSourceError::Invalid { errors, .. }) => {
            errors.iter().map(FieldError::to_string).collect()
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// A pod with one container `web`, plus extra YAML lines under `spec:` (2-space indented).
fn with_spec(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: nginx:1.27\n{extra}"
    )
}

const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  unknownSpecField: tolerated
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: 80
      name: http
    resources:
      limits: {cpu: "1", memory: 128Mi}
      requests: {cpu: 500m}
    livenessProbe:
      httpGet: {port: 80}
  - name: pinned
    image: registry.local:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  - name: tagged
    image: busybox:1.36
  initContainers:
  - name: init
    image: busybox:latest
"#;

#[test]
fn yaml_gets_the_scheme_defaults() {
    let pod = decode(FULL).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.enable_service_links, Some(true));
    assert!(spec.security_context.is_some());

    let web = &spec.containers[0];
    assert_eq!(web.image_pull_policy.as_deref(), Some("Always"), "no tag");
    assert_eq!(
        web.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(web.termination_message_policy.as_deref(), Some("File"));
    let port = &web.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.host_port, None, "no hostNetwork, no hostPort");
    let resources = web.resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "500m", "an explicit request is kept");
    assert_eq!(
        requests["memory"].0, "128Mi",
        "a missing request comes from the limit"
    );
    let probe = web.liveness_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.timeout_seconds,
            probe.period_seconds,
            probe.success_threshold,
            probe.failure_threshold
        ),
        (Some(1), Some(10), Some(1), Some(3))
    );
    assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));

    let pinned = &spec.containers[1];
    assert_eq!(
        pinned.image_pull_policy.as_deref(),
        Some("IfNotPresent"),
        "digest"
    );
    assert!(
        pinned
            .image
            .as_deref()
            .unwrap()
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        "a digest reference gets no tag"
    );
    assert_eq!(
        spec.containers[2].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image_pull_policy.as_deref(), Some("Always"), ":latest");
    assert_eq!(init.termination_message_policy.as_deref(), Some("File"));
}

#[test]
fn static_pod_naming_and_annotations() {
    let pod = decode(FULL).unwrap();
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some("web-node-1"),
        "suffix is lowercased"
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.node_name.as_deref(),
        Some(NODE),
        "nodeName keeps its case"
    );
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 32);
    assert!(
        uid.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{uid}"
    );
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[CONFIG_HASH_ANNOTATION], uid);
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(tolerations[0].effect.as_deref(), Some("NoExecute"));
    assert_eq!(tolerations[0].key, None);
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");
}

#[test]
fn existing_noexecute_toleration_is_replaced_not_duplicated() {
    let pod = decode(&with_spec(
        "  tolerations:\n  - {operator: Exists, effect: NoExecute, tolerationSeconds: 10}\n  - {key: a, operator: Exists}\n",
    ))
    .unwrap();
    let tolerations = pod.spec.unwrap().tolerations.unwrap();
    assert_eq!(tolerations.len(), 2);
    assert_eq!(tolerations[0].toleration_seconds, None);
}

#[test]
fn json_decodes_like_yaml() {
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
        "spec":{"containers":[{"name":"main","image":"nginx:1.27"}]}}"#;
    let yaml = crate::manifest("web", "nginx:1.27");
    let from_json = decode(json).unwrap();
    let from_yaml = decode(&yaml).unwrap();
    assert_eq!(from_json, from_yaml, "same content, same pod and same UID");
}

#[test]
fn uid_depends_on_content_path_and_node() {
    let yaml = crate::manifest("web", "nginx:1.27");
    let uid = |data: &str, path: &str, node: &str| {
        decode_static_pod(data.as_bytes(), &file(path), node)
            .unwrap()
            .metadata
            .uid
            .unwrap()
    };
    let base = uid(&yaml, "/m/web.yaml", "node-1");
    assert_eq!(base, uid(&yaml, "/m/web.yaml", "node-1"), "stable");
    assert_ne!(
        base,
        uid(
            &crate::manifest("web", "nginx:1.28"),
            "/m/web.yaml",
            "node-1"
        ),
        "content"
    );
    assert_ne!(base, uid(&yaml, "/m/other.yaml", "node-1"), "path");
    assert_ne!(base, uid(&yaml, "/m/web.yaml", "node-2"), "node");
    // Formatting alone does not change the decoded pod, so not the UID either.
    let reformatted = yaml.replace("image: nginx:1.27", "image: \"nginx:1.27\"  # pinned");
    assert_eq!(base, uid(&reformatted, "/m/web.yaml", "node-1"));
    let http = decode_static_pods(yaml.as_bytes(), "http://127.0.0.1/pods", "node-1").unwrap();
    assert_ne!(base, http[0].metadata.uid.clone().unwrap(), "url vs file");
}

#[test]
fn explicit_uid_is_kept() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, uid: 11111111-2222-3333-4444-555555555555}\nspec:\n  containers: [{name: web, image: nginx}]\n";
    let pod = decode(yaml).unwrap();
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(
        pod.metadata.annotations.unwrap()[CONFIG_HASH_ANNOTATION],
        "11111111-2222-3333-4444-555555555555"
    );
}

#[test]
fn explicit_namespace_is_kept() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\nspec:\n  containers: [{name: web, image: nginx}]\n";
    assert_eq!(
        decode(yaml).unwrap().metadata.namespace.as_deref(),
        Some("kube-system")
    );
}

#[test]
fn host_network_defaults_host_ports() {
    let pod = decode(&with_spec("  hostNetwork: true\n")).unwrap();
    assert!(pod.spec.unwrap().containers[0].ports.is_none());
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  hostNetwork: true\n  containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]\n";
    let pod = decode(yaml).unwrap();
    assert_eq!(
        pod.spec.unwrap().containers[0].ports.as_ref().unwrap()[0].host_port,
        Some(8080)
    );
}

#[test]
fn type_errors_name_the_field_path_and_the_file() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: web\n    image: nginx\n    ports:\n    - containerPort: eighty\n";
    let error = decode(yaml).unwrap_err();
    match &error {
        PodSourceError::Field { field, .. } => {
            assert_eq!(field, "spec.containers[0].ports[0].containerPort");
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.starts_with(
            "manifest /etc/kubernetes/manifests/web.yaml: spec.containers[0].ports[0].containerPort: "
        ),
        "{text}"
    );
}

#[test]
fn kind_and_api_version_are_required() {
    let kind_error = |yaml: &str| match decode(yaml) {
        Err(PodSourceError::Kind { message, .. }) => message,
        other => panic!("expected a kind error for {yaml:?}, got {other:?}"),
    };
    assert_eq!(
        kind_error("apiVersion: v1\nmetadata: {name: web}\n"),
        "object 'Kind' is missing"
    );
    assert_eq!(
        kind_error("kind: Pod\nmetadata: {name: web}\n"),
        "object 'apiVersion' is missing"
    );
    assert_eq!(
        kind_error("apiVersion: v1\nkind: Service\n"),
        r#"kind "Service" is not "Pod""#
    );
    assert_eq!(
        kind_error("apiVersion: apps/v1\nkind: Pod\n"),
        r#"apiVersion "apps/v1" is not "v1""#
    );
    assert_eq!(
        kind_error("apiVersion: v1\nkind: PodList\nitems: []\n"),
        r#"kind "PodList" is not "Pod""#
    );
    assert!(kind_error("- a\n- b\n").contains("found a list"));
    assert!(kind_error("just a string\n").contains("found a string"));
}

#[test]
fn missing_name_is_rejected() {
    let error =
        decode("apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: web, image: nginx}]\n")
            .unwrap_err();
    assert!(matches!(error, PodSourceError::MissingName { .. }));
    assert_eq!(
        error.to_string(),
        "manifest /etc/kubernetes/manifests/web.yaml: invalid pod: name is needed for the pod"
    );
}

#[test]
fn junk_input_is_an_error_not_a_panic() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   \n\t\n".to_vec(),
        b"# only a comment\n".to_vec(),
        b"---\n".to_vec(),
        b"null".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x12, 0x80, 0x81],
        b"\x00\x01\x02binary".to_vec(),
        b"{not json".to_vec(),
        b"key: [unclosed".to_vec(),
        b"a: b\n  c: d\n :".to_vec(),
        b"apiVersion: v1\nkind: Pod\nmetadata: []\n".to_vec(),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: 5\n".to_vec(),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: {a: b}}\n".to_vec(),
        b"apiVersion: 1\nkind: Pod\n".to_vec(),
        b"apiVersion: v1\nkind: [Pod]\n".to_vec(),
        b"a: &a [*a]\n".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "{\"a\":".repeat(100_000).into_bytes(),
        "a:\n".repeat(10).into_bytes(),
        "- ".repeat(50_000).into_bytes(),
    ];
    for data in cases {
        let result = decode_static_pod(&data, &file("/m/junk.yaml"), NODE);
        let error = result.expect_err(&format!(
            "{:?}",
            String::from_utf8_lossy(&data[..data.len().min(40)])
        ));
        assert!(
            error.to_string().starts_with("manifest /m/junk.yaml: "),
            "{error}"
        );
        // The HTTP form must not panic either.
        assert!(decode_static_pods(&data, "http://127.0.0.1/", NODE).is_err());
    }
    let empty = decode_static_pod(b"", &file("/m/junk.yaml"), NODE).unwrap_err();
    assert!(matches!(empty, PodSourceError::Empty { .. }), "{empty:?}");
}

#[test]
fn yaml_alias_bombs_are_rejected_or_bounded() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = (b'a' + i - 1) as char;
        let name = (b'a' + i) as char;
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    assert!(decode_static_pod(bomb.as_bytes(), &file("/m/bomb.yaml"), NODE).is_err());
}

#[test]
fn oversized_manifests_are_rejected() {
    let mut data = crate::manifest("web", "nginx").into_bytes();
    data.extend(std::iter::repeat_n(b'#', MAX_MANIFEST_SIZE));
    let error = decode_static_pod(&data, &file("/m/big.yaml"), NODE).unwrap_err();
    assert!(matches!(error, PodSourceError::TooLarge { limit, .. } if limit == 10 * 1024 * 1024));
}

#[test]
fn first_yaml_document_is_the_manifest() {
    let yaml = format!("{}---\nkind: Service\n", crate::manifest("web", "nginx"));
    assert_eq!(
        decode(&yaml).unwrap().metadata.name.as_deref(),
        Some("web-node-1")
    );
}

#[test]
fn validation_errors_are_joined_and_name_the_file() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: web, image: nginx}\n  - {name: web}\n";
    let error = decode(yaml).unwrap_err();
    assert_eq!(
        error.to_string(),
        "manifest /etc/kubernetes/manifests/web.yaml: invalid pod: [spec.containers[1].image: Required value, spec.containers[1].name: Duplicate value: \"web\"]"
    );
}

#[test]
fn validation_metadata() {
    assert_eq!(
        invalid(&crate::manifest("web_1", "nginx")),
        [
            "metadata.name: Invalid value: \"web_1-node-1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ]
    );
    let long = "a".repeat(250);
    assert_eq!(
        invalid(&crate::manifest(&long, "nginx")),
        [format!(
            "metadata.name: Invalid value: \"{long}-node-1\": must be no more than 253 characters"
        )]
    );
    let ns = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: Kube.System}\nspec:\n  containers: [{name: web, image: nginx}]\n";
    let errors = invalid(ns);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "metadata.namespace: Invalid value: \"Kube.System\": a lowercase RFC 1123 label"
        ),
        "{errors:?}"
    );
}

#[test]
fn validation_containers() {
    assert_eq!(
        invalid("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {}\n"),
        ["spec.containers: Required value"]
    );
    assert_eq!(
        invalid("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"),
        ["spec.containers: Required value"]
    );
    assert_eq!(
        invalid(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: Web_1, image: nginx}]\n"
        ),
        [
            "spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    assert_eq!(
        invalid(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{image: nginx}]\n"
        ),
        ["spec.containers[0].name: Required value"]
    );
    assert_eq!(
        invalid(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web}]\n"
        ),
        ["spec.containers[0].image: Required value"]
    );
    assert_eq!(
        invalid(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web, image: ' nginx'}]\n"
        ),
        [
            "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace"
        ]
    );
    assert_eq!(
        invalid(&with_spec("  - {name: web, image: nginx}\n")),
        ["spec.containers[1].name: Duplicate value: \"web\""]
    );
    assert_eq!(
        invalid(&with_spec(
            "  initContainers: [{name: web, image: busybox}]\n"
        )),
        ["spec.initContainers[0].name: Duplicate value: \"web\""]
    );
    assert_eq!(
        invalid(&with_spec(
            "  initContainers: [{name: init, image: busybox, restartPolicy: Never}]\n"
        )),
        [
            "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
    // A sidecar (init container with restartPolicy Always) is fine.
    decode(&with_spec(
        "  initContainers: [{name: init, image: busybox, restartPolicy: Always}]\n",
    ))
    .unwrap();
    assert_eq!(
        invalid(&with_spec(
            "  ephemeralContainers: [{name: debug, image: busybox}]\n"
        )),
        ["spec.ephemeralContainers: Forbidden: cannot be set on create"]
    );
}

#[test]
fn validation_policies() {
    assert_eq!(
        invalid(&with_spec("  restartPolicy: Sometimes\n")),
        [
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        ]
    );
    for policy in ["Always", "OnFailure", "Never"] {
        decode(&with_spec(&format!("  restartPolicy: {policy}\n"))).unwrap();
    }
    assert_eq!(
        invalid(&with_spec("  dnsPolicy: Cluster\n")),
        [
            "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
        ]
    );
    assert_eq!(
        invalid(&with_spec("  dnsPolicy: None\n")),
        ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
    );
    assert_eq!(
        invalid(&with_spec(
            "  dnsPolicy: None\n  dnsConfig: {searches: [local]}\n"
        )),
        [
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
        ]
    );
    decode(&with_spec(
        "  dnsPolicy: None\n  dnsConfig: {nameservers: [10.0.0.10]}\n",
    ))
    .unwrap();
    assert_eq!(
        invalid(&with_spec("  dnsConfig: {nameservers: [dns.local]}\n")),
        ["spec.dnsConfig.nameservers[0]: Invalid value: \"dns.local\": must be a valid IP address"]
    );
    assert_eq!(
        invalid(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx, imagePullPolicy: Sometimes}]\n"
        ),
        [
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        ]
    );
    assert_eq!(
        invalid(&with_spec("  terminationGracePeriodSeconds: -1\n")),
        [
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0"
        ]
    );
    decode(&with_spec("  terminationGracePeriodSeconds: 0\n")).unwrap();
}

fn with_ports(ports: &str, host_network: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  hostNetwork: {host_network}\n  containers:\n  - name: web\n    image: nginx\n    ports: {ports}\n"
    )
}

#[test]
fn validation_ports() {
    assert_eq!(
        invalid(&with_ports("[{containerPort: 70000}]", false)),
        [
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ]
    );
    assert_eq!(
        invalid(&with_ports("[{containerPort: 0}]", false)),
        ["spec.containers[0].ports[0].containerPort: Required value"]
    );
    assert_eq!(
        invalid(&with_ports("[{containerPort: 80, hostPort: -1}]", false)),
        [
            "spec.containers[0].ports[0].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive"
        ]
    );
    assert_eq!(
        invalid(&with_ports(
            "[{containerPort: 80, name: http}, {containerPort: 81, name: http}]",
            false
        )),
        ["spec.containers[0].ports[1].name: Duplicate value: \"http\""]
    );
    assert_eq!(
        invalid(&with_ports("[{containerPort: 80, protocol: HTTP}]", false)),
        [
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        ]
    );
    assert_eq!(
        invalid(&with_ports("[{containerPort: 80, hostPort: 8080}]", true)),
        [
            "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true"
        ]
    );
    decode(&with_ports("[{containerPort: 80, hostPort: 80}]", true)).unwrap();
    decode(&with_ports("[{containerPort: 80, hostPort: 8080}]", false)).unwrap();
}

fn with_resources(resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: web\n    image: nginx\n    resources: {resources}\n"
    )
}

#[test]
fn validation_resources() {
    assert_eq!(
        invalid(&with_resources(
            "{requests: {cpu: '2'}, limits: {cpu: '1'}}"
        )),
        [
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        ]
    );
    assert_eq!(
        invalid(&with_resources(
            "{requests: {memory: 2Gi}, limits: {memory: 1Gi}}"
        )),
        [
            "spec.containers[0].resources.requests: Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi"
        ]
    );
    assert_eq!(
        invalid(&with_resources("{limits: {cpu: lots}}")),
        [
            "spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            // The request defaulted from the limit is just as bad.
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ]
    );
    assert_eq!(
        invalid(&with_resources("{requests: {cpu: '-1'}}")),
        [
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"
        ]
    );
    assert_eq!(
        invalid(&with_resources("{requests: {example.com/gpu: '1'}}")),
        [
            "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources"
        ]
    );
    decode(&with_resources(
        "{requests: {cpu: 500m}, limits: {cpu: '1', memory: 1Gi}}",
    ))
    .unwrap();
    decode(&with_resources("{limits: {example.com/gpu: '1'}}")).unwrap();
}

#[test]
fn pod_list_and_single_pod_from_http() {
    let list = r#"{"apiVersion":"v1","kind":"PodList","items":[
        {"metadata":{"name":"a"},"spec":{"containers":[{"name":"main","image":"nginx"}]}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","namespace":"ops"},"spec":{"containers":[{"name":"main","image":"nginx"}]}}
    ]}"#;
    let pods = decode_static_pods(list.as_bytes(), "http://127.0.0.1/pods", "node").unwrap();
    let names: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a-node", "b-node"]);
    assert_eq!(pods[1].metadata.namespace.as_deref(), Some("ops"));
    assert!(
        pods[0].spec.as_ref().unwrap().tolerations.is_none(),
        "http pods get no NoExecute toleration"
    );

    let single = crate::manifest("a", "nginx");
    let pods = decode_static_pods(single.as_bytes(), "http://127.0.0.1/pods", "node").unwrap();
    assert_eq!(pods.len(), 1);

    let empty_list = decode_static_pods(
        br#"{"apiVersion":"v1","kind":"PodList","items":null}"#,
        "http://x/",
        "n",
    )
    .unwrap();
    assert!(empty_list.is_empty());

    let bad = r#"{"apiVersion":"v1","kind":"PodList","items":[
        {"metadata":{"name":"a"},"spec":{"containers":[{"name":"main","image":"nginx"}]}},
        {"metadata":{"name":"b"},"spec":{"containers":[{"name":"main"}]}}]}"#;
    let error = decode_static_pods(bad.as_bytes(), "http://127.0.0.1/pods", "node").unwrap_err();
    assert_eq!(
        error.to_string(),
        "url http://127.0.0.1/pods items[1]: invalid pod: [spec.containers[0].image: Required value]"
    );
    let other = decode_static_pods(
        b"{\"apiVersion\":\"v1\",\"kind\":\"Service\"}",
        "http://x/",
        "n",
    )
    .unwrap_err();
    assert!(matches!(other, PodSourceError::Kind { .. }), "{other:?}");
}

/// A pod whose one container `web` (port `http`) has the given YAML lines (4-space indented).
fn with_container(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: web\n    image: nginx:1.27\n    ports:\n    - name: http\n      containerPort: 80\n{extra}"
    )
}

#[test]
fn malformed_probes_are_rejected_naming_the_field() {
    let c = "spec.containers[0]";
    let cases: &[(&str, &[&str])] = &[
        (
            "    livenessProbe:\n      periodSeconds: 5\n",
            &["livenessProbe: Required value: must specify a handler type"],
        ),
        (
            "    readinessProbe:\n      exec: {command: ['true']}\n      tcpSocket: {port: 80}\n",
            &["readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"],
        ),
        (
            "    livenessProbe:\n      exec: {command: ['true']}\n      successThreshold: 2\n",
            &["livenessProbe.successThreshold: Invalid value: 2: must be 1"],
        ),
        (
            "    startupProbe:\n      exec: {command: ['true']}\n      successThreshold: 3\n",
            &["startupProbe.successThreshold: Invalid value: 3: must be 1"],
        ),
        (
            "    readinessProbe:\n      httpGet: {port: 70000}\n",
            &[
                "readinessProbe.httpGet.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            "    readinessProbe:\n      tcpSocket: {port: metrics}\n",
            &[
                "readinessProbe.tcpSocket.port: Invalid value: \"metrics\": must be the name of one of the container's ports",
            ],
        ),
        (
            "    livenessProbe:\n      grpc: {port: 0}\n",
            &["livenessProbe.grpc.port: Invalid value: 0: must be between 1 and 65535, inclusive"],
        ),
        (
            "    livenessProbe:\n      exec: {command: []}\n      periodSeconds: -1\n",
            &[
                "livenessProbe.exec.command: Required value",
                "livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
            ],
        ),
        (
            "    readinessProbe:\n      httpGet: {port: http, scheme: FTP, httpHeaders: [{name: 'Bad Header', value: x}]}\n      terminationGracePeriodSeconds: 5\n",
            &[
                "readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
                "readinessProbe.httpGet.httpHeaders: Invalid value: \"Bad Header\": a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                "readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes",
            ],
        ),
        (
            "    lifecycle:\n      preStop:\n        sleep: {seconds: 11}\n      postStart: {}\n",
            &[
                "lifecycle.postStart: Required value: must specify a handler type",
                "lifecycle.preStop.sleep: Invalid value: 11: must be non-negative and less than terminationGracePeriodSeconds (10)",
            ],
        ),
    ];
    for (lines, want) in cases {
        let want: Vec<String> = want.iter().map(|w| format!("{c}.{w}")).collect();
        assert_eq!(invalid(&with_container(lines)), want, "{lines}");
    }
    // Valid: a named port that exists, a zero-second sleep hook, every handler kind once.
    let ok = with_container(
        "    livenessProbe:\n      httpGet: {port: http, path: /healthz}\n    readinessProbe:\n      tcpSocket: {port: 80}\n      successThreshold: 2\n    startupProbe:\n      grpc: {port: 9090}\n    lifecycle:\n      preStop:\n        sleep: {seconds: 0}\n",
    );
    decode(&ok).unwrap();
    // Init containers: probes and hooks only on sidecars.
    let init = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  initContainers:\n  - name: setup\n    image: busybox\n    readinessProbe:\n      exec: {command: ['true']}\n  - name: side\n    image: busybox\n    restartPolicy: Always\n    readinessProbe:\n      exec: {command: ['true']}\n    livenessProbe:\n      exec: {command: ['true']}\n      successThreshold: 2\n  containers:\n  - name: web\n    image: nginx:1.27\n";
    assert_eq!(
        invalid(init),
        [
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
            "spec.initContainers[1].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ]
    );
    // Stop signals: only with spec.os.name, and a Linux signal on Linux.
    assert_eq!(
        invalid(&with_container(
            "    lifecycle:\n      stopSignal: SIGUSR1\n"
        )),
        [
            "spec.containers[0].lifecycle.stopSignal: Forbidden: may not be set for containers with empty `spec.os.name`"
        ]
    );
    let on_linux = |signal: &str| {
        with_container(&format!("    lifecycle:\n      stopSignal: {signal}\n"))
            .replace("spec:\n", "spec:\n  os:\n    name: linux\n")
    };
    decode(&on_linux("SIGUSR1")).unwrap();
    decode(&on_linux("SIGRTMIN+3")).unwrap();
    let errors = invalid(&on_linux("SIGNOPE"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("spec.containers[0].lifecycle.stopSignal: Unsupported value: \"SIGNOPE\": supported values: \"SIGABRT\", \"SIGALRM\""),
        "{errors:?}"
    );
    // The message names the manifest.
    let error = decode(&with_container("    livenessProbe: {}\n")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "manifest /etc/kubernetes/manifests/web.yaml: invalid pod: [spec.containers[0].livenessProbe: Required value: must specify a handler type]"
    );
}

#[test]
fn malformed_security_contexts_and_restart_rules_are_rejected_naming_the_field() {
    let c = "spec.containers[0]";
    let cases: &[(&str, &[&str])] = &[
        (
            "    securityContext:\n      procMount: Unmasked\n",
            &[
                "securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`",
            ],
        ),
        (
            "    securityContext:\n      procMount: Weird\n      runAsUser: -1\n",
            &[
                "securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
                "securityContext.procMount: Unsupported value: \"Weird\": supported values: \"Default\", \"Unmasked\"",
            ],
        ),
        (
            "    securityContext:\n      privileged: true\n      allowPrivilegeEscalation: false\n      capabilities: {add: [SYS_ADMIN]}\n",
            &[
                "securityContext: Invalid value: securityContext: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
                "securityContext: Invalid value: securityContext: cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ],
        ),
        (
            "    securityContext:\n      seccompProfile: {type: Localhost}\n",
            &[
                "securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
            ],
        ),
        (
            "    securityContext:\n      seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}\n      appArmorProfile: {type: Localhost, localhostProfile: ../x}\n",
            &[
                "securityContext.seccompProfile.localhostProfile: Invalid value: \"x.json\": can only be set when seccomp type is Localhost",
                "securityContext.appArmorProfile.localhostProfile: Invalid value: \"../x\": must not contain '..'",
            ],
        ),
        (
            "    restartPolicyRules:\n    - action: Restart\n      exitCodes: {operator: In, values: [42]}\n",
            &[
                "restartPolicy: Required value: must specify restartPolicy when restart rules are used",
            ],
        ),
        (
            "    restartPolicy: Sometimes\n",
            &[
                "restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
            ],
        ),
        (
            "    restartPolicy: Never\n    restartPolicyRules:\n    - action: Stop\n      exitCodes: {operator: Maybe, values: [1, 1, -2]}\n",
            &[
                "restartPolicyRules[0].action: Unsupported value: \"Stop\": supported values: \"Restart\"",
                "restartPolicyRules[0].exitCodes.operator: Unsupported value: \"Maybe\": supported values: \"In\", \"NotIn\"",
                "restartPolicyRules[0].exitCodes.values[1]: Duplicate value: 1",
                "restartPolicyRules[0].exitCodes.values[2]: Invalid value: -2: must be greater than or equal to 0",
            ],
        ),
    ];
    for (lines, want) in cases {
        let want: Vec<String> = want.iter().map(|w| format!("{c}.{w}")).collect();
        assert_eq!(invalid(&with_container(lines)), want, "{lines}");
    }
    // The pod's own context.
    let pod = with_container("").replace(
        "spec:\n",
        "spec:\n  securityContext:\n    fsGroup: 3000000000\n    supplementalGroupsPolicy: Loose\n    fsGroupChangePolicy: Sometimes\n    seccompProfile: {type: Strict}\n",
    );
    assert_eq!(
        invalid(&pod),
        [
            "spec.securityContext.fsGroup: Invalid value: 3000000000: must be between 0 and 2147483647, inclusive",
            "spec.securityContext.fsGroupChangePolicy: Unsupported value: \"Sometimes\": supported values: \"OnRootMismatch\", \"Always\"",
            "spec.securityContext.supplementalGroupsPolicy: Unsupported value: \"Loose\": supported values: \"Merge\", \"Strict\"",
            "spec.securityContext.seccompProfile.type: Unsupported value: \"Strict\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
        ]
    );
    // Valid: a Localhost profile, a container policy with rules, Default procMount.
    decode(&with_container(
        "    restartPolicy: Never\n    restartPolicyRules:\n    - action: Restart\n      exitCodes: {operator: In, values: [42]}\n    securityContext:\n      procMount: Default\n      seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}\n",
    ))
    .unwrap();
}
