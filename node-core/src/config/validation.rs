//! A subset of upstream's `ValidatePodCreate` (`pkg/apis/core/validation`) for static pods:
//! the same field paths and message styles, run after defaulting.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Pod,
    PodSpec, Probe, ResourceRequirements, SleepAction, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::error::FieldError;
use super::security_validation::{validate_restart_rules, validate_security};

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character \
    (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const MAX_DNS_NAMESERVERS: usize = 3;

/// Validates a defaulted static pod; returns every error found (empty when valid).
///
/// Covered: `metadata.name` (DNS-1123 subdomain) and `metadata.namespace` (DNS-1123 label);
/// at least one container; container names (DNS-1123 labels, unique across init and regular
/// containers); image; imagePullPolicy; terminationMessagePolicy; ports (range, unique names,
/// protocol, hostNetwork ⇒ hostPort == containerPort); resources (valid, non-negative,
/// requests ≤ limits); init container restartPolicy; pod restartPolicy and dnsPolicy
/// (`None` needs dnsConfig with nameservers); terminationGracePeriodSeconds ≥ 0; no ephemeral
/// containers on create; probes and lifecycle hooks (one valid handler, thresholds, ports,
/// sleep within the grace period; none on init containers but sidecars); the pod's and the
/// containers' security contexts (ids, policies, `procMount`, seccomp and AppArmor profiles,
/// privilege escalation); regular containers' `restartPolicy` and `restartPolicyRules`.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in dns1123_subdomain(name) {
            errors.push(FieldError::invalid_str("metadata.name", name, &msg));
        }
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    if namespace.is_empty() {
        errors.push(FieldError::required("metadata.namespace", ""));
    } else {
        for msg in dns1123_label(namespace) {
            errors.push(FieldError::invalid_str(
                "metadata.namespace",
                namespace,
                &msg,
            ));
        }
    }
    match pod.spec.as_ref() {
        Some(spec) => validate_spec(spec, &mut errors),
        None => errors.push(FieldError::required("spec.containers", "")),
    }
    errors
}

fn validate_spec(spec: &PodSpec, errors: &mut Vec<FieldError>) {
    // Regular containers first; duplicates with init containers are reported on the init
    // container, as upstream does.
    let mut names = BTreeSet::new();
    // A negative grace period is reported on its own; sleep hooks are not held against it.
    let grace = spec.termination_grace_period_seconds.filter(|g| *g >= 0);
    if spec.containers.is_empty() {
        errors.push(FieldError::required("spec.containers", ""));
    }
    for (i, container) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        validate_container(container, &path, errors);
        validate_probes_and_lifecycle(container, &path, grace, errors);
        validate_restart_rules(container, &path, errors);
        if !container.name.is_empty() && !names.insert(container.name.as_str()) {
            errors.push(FieldError::duplicate(
                format!("{path}.name"),
                &container.name,
            ));
        }
    }
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        validate_container(container, &path, errors);
        if container.restart_policy.as_deref() == Some("Always") {
            validate_probes_and_lifecycle(container, &path, grace, errors);
        } else {
            let fields = [
                ("lifecycle", container.lifecycle.is_some()),
                ("livenessProbe", container.liveness_probe.is_some()),
                ("readinessProbe", container.readiness_probe.is_some()),
                ("startupProbe", container.startup_probe.is_some()),
            ];
            for (field, set) in fields {
                if set {
                    errors.push(FieldError::forbidden(
                        format!("{path}.{field}"),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
        if let Some(policy) = container.restart_policy.as_deref()
            && policy != "Always"
        {
            errors.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &["Always"],
            ));
        }
        if !container.name.is_empty() && !names.insert(container.name.as_str()) {
            errors.push(FieldError::duplicate(
                format!("{path}.name"),
                &container.name,
            ));
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        errors.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("");
    match restart_policy {
        "Always" | "OnFailure" | "Never" => {}
        "" => errors.push(FieldError::required("spec.restartPolicy", "")),
        other => errors.push(FieldError::not_supported(
            "spec.restartPolicy",
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns_policy = spec.dns_policy.as_deref().unwrap_or("");
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errors.push(FieldError::required("spec.dnsPolicy", "")),
        other => errors.push(FieldError::not_supported(
            "spec.dnsPolicy",
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    validate_dns_config(spec, dns_policy, errors);
    validate_stop_signals(spec, errors);
    validate_security(spec, errors);
    if let Some(seconds) = spec.termination_grace_period_seconds
        && seconds < 0
    {
        errors.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            seconds,
            "must be greater than or equal to 0",
        ));
    }
    if spec.host_network.unwrap_or(false) {
        let lists = [
            ("containers", Some(&spec.containers)),
            ("initContainers", spec.init_containers.as_ref()),
        ];
        for (list, containers) in lists {
            for (i, container) in containers.into_iter().flatten().enumerate() {
                for (j, port) in container.ports.iter().flatten().enumerate() {
                    let host_port = port.host_port.unwrap_or(0);
                    if host_port != port.container_port {
                        errors.push(FieldError::invalid(
                            format!("spec.{list}[{i}].ports[{j}].hostPort"),
                            host_port,
                            "must match `containerPort` when `hostNetwork` is true",
                        ));
                    }
                }
            }
        }
    }
}

/// `lifecycle.stopSignal` (upstream `validateContainerStopSignal`): only with `spec.os.name`,
/// and on Linux one of the Linux signals.
fn validate_stop_signals(spec: &PodSpec, errors: &mut Vec<FieldError>) {
    let os = spec.os.as_ref().map(|os| os.name.as_str());
    let lists = [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let Some(signal) = container
                .lifecycle
                .as_ref()
                .and_then(|l| l.stop_signal.as_deref())
            else {
                continue;
            };
            let path = format!("spec.{list}[{i}].lifecycle.stopSignal");
            match os {
                None | Some("") => errors.push(FieldError::forbidden(
                    path,
                    "may not be set for containers with empty `spec.os.name`",
                )),
                Some("linux") if crate::runtime::linux_stop_signal(signal).is_none() => {
                    let names = crate::runtime::linux_stop_signal_names();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    errors.push(FieldError::not_supported(path, signal, &names));
                }
                _ => {}
            }
        }
    }
}

fn validate_dns_config(spec: &PodSpec, dns_policy: &str, errors: &mut Vec<FieldError>) {
    let Some(config) = spec.dns_config.as_ref() else {
        if dns_policy == "None" {
            errors.push(FieldError::required(
                "spec.dnsConfig",
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
        return;
    };
    let nameservers = config.nameservers.as_deref().unwrap_or_default();
    if dns_policy == "None" && nameservers.is_empty() {
        errors.push(FieldError::required(
            "spec.dnsConfig.nameservers",
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if nameservers.len() > MAX_DNS_NAMESERVERS {
        errors.push(FieldError::invalid(
            "spec.dnsConfig.nameservers",
            format_args!("{nameservers:?}"),
            &format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, server) in nameservers.iter().enumerate() {
        if IpAddr::from_str(server).is_err() {
            errors.push(FieldError::invalid_str(
                format!("spec.dnsConfig.nameservers[{i}]"),
                server,
                "must be a valid IP address",
            ));
        }
    }
}

fn validate_container(container: &Container, path: &str, errors: &mut Vec<FieldError>) {
    if container.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for msg in dns1123_label(&container.name) {
            errors.push(FieldError::invalid_str(
                format!("{path}.name"),
                &container.name,
                &msg,
            ));
        }
    }
    let image = container.image.as_deref().unwrap_or("");
    if image.is_empty() {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    } else if image.trim() != image {
        errors.push(FieldError::invalid_str(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    match container.image_pull_policy.as_deref().unwrap_or("") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errors.push(FieldError::required(format!("{path}.imagePullPolicy"), "")),
        other => errors.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    match container
        .termination_message_policy
        .as_deref()
        .unwrap_or("")
    {
        "File" | "FallbackToLogsOnError" => {}
        "" => errors.push(FieldError::required(
            format!("{path}.terminationMessagePolicy"),
            "",
        )),
        other => errors.push(FieldError::not_supported(
            format!("{path}.terminationMessagePolicy"),
            other,
            &["FallbackToLogsOnError", "File"],
        )),
    }
    validate_ports(
        container.ports.as_deref().unwrap_or_default(),
        &format!("{path}.ports"),
        errors,
    );
    if let Some(resources) = container.resources.as_ref() {
        validate_resources(resources, &format!("{path}.resources"), errors);
    }
}

/// Probes and lifecycle hooks of a regular container or a sidecar (upstream
/// `validateLivenessProbe`, `validateReadinessProbe`, `validateStartupProbe`,
/// `validateLifecycle`). Also, beyond upstream: a named probe port must name one of the
/// container's ports, since such a probe could never pass.
fn validate_probes_and_lifecycle(
    container: &Container,
    path: &str,
    grace: Option<i64>,
    errors: &mut Vec<FieldError>,
) {
    let probes = [
        ("livenessProbe", container.liveness_probe.as_ref()),
        ("readinessProbe", container.readiness_probe.as_ref()),
        ("startupProbe", container.startup_probe.as_ref()),
    ];
    for (field, probe) in probes {
        let Some(probe) = probe else { continue };
        let path = format!("{path}.{field}");
        validate_probe(probe, container, &path, errors);
        let success = probe.success_threshold.unwrap_or(1);
        if field != "readinessProbe" && success != 1 {
            errors.push(FieldError::invalid(
                format!("{path}.successThreshold"),
                success,
                "must be 1",
            ));
        }
        if field == "readinessProbe" && probe.termination_grace_period_seconds.is_some() {
            errors.push(FieldError::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                probe.termination_grace_period_seconds.unwrap_or_default(),
                "must not be set for readinessProbes",
            ));
        }
    }
    let Some(lifecycle) = container.lifecycle.as_ref() else {
        return;
    };
    let hooks = [
        ("postStart", lifecycle.post_start.as_ref()),
        ("preStop", lifecycle.pre_stop.as_ref()),
    ];
    for (field, hook) in hooks {
        if let Some(hook) = hook {
            let path = format!("{path}.lifecycle.{field}");
            validate_hook(hook, container, grace, &path, errors);
        }
    }
}

fn validate_probe(probe: &Probe, container: &Container, path: &str, errors: &mut Vec<FieldError>) {
    let handlers = Handlers {
        exec: probe.exec.as_ref(),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref(),
        grpc: probe.grpc.as_ref(),
        sleep: None,
    };
    handlers.validate(container, None, path, errors);
    let fields = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (field, value) in fields {
        if let Some(value) = value.filter(|v| *v < 0) {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                value,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(grace) = probe.termination_grace_period_seconds.filter(|g| *g <= 0) {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
}

fn validate_hook(
    hook: &LifecycleHandler,
    container: &Container,
    grace: Option<i64>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let handlers = Handlers {
        exec: hook.exec.as_ref(),
        http_get: hook.http_get.as_ref(),
        tcp_socket: hook.tcp_socket.as_ref(),
        grpc: None,
        sleep: hook.sleep.as_ref(),
    };
    handlers.validate(container, grace, path, errors);
}

/// The handler of a probe or hook (upstream `commonHandler`).
struct Handlers<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: Option<&'a SleepAction>,
}

const HTTP_HEADER_NAME_MSG: &str = "a valid HTTP header must consist of alphanumeric characters \
    or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')";

impl Handlers<'_> {
    /// Exactly one handler, and that one valid (upstream `validateHandler`).
    fn validate(
        &self,
        container: &Container,
        grace: Option<i64>,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let set = [
            ("exec", self.exec.is_some()),
            ("httpGet", self.http_get.is_some()),
            ("tcpSocket", self.tcp_socket.is_some()),
            ("grpc", self.grpc.is_some()),
            ("sleep", self.sleep.is_some()),
        ];
        let mut first = None;
        for (name, present) in set {
            if !present {
                continue;
            }
            match first {
                None => first = Some(name),
                Some(_) => errors.push(FieldError::forbidden(
                    format!("{path}.{name}"),
                    "may not specify more than 1 handler type",
                )),
            }
        }
        let Some(handler) = first else {
            errors.push(FieldError::required(path, "must specify a handler type"));
            return;
        };
        let path = format!("{path}.{handler}");
        match handler {
            "exec"
                if self
                    .exec
                    .is_some_and(|e| e.command.as_ref().is_none_or(Vec::is_empty)) =>
            {
                errors.push(FieldError::required(format!("{path}.command"), ""));
            }
            "httpGet" => {
                let Some(get) = self.http_get else { return };
                if get.path.as_deref().unwrap_or_default().is_empty() {
                    errors.push(FieldError::required(format!("{path}.path"), ""));
                }
                validate_probe_port(&get.port, container, &format!("{path}.port"), errors);
                let scheme = get.scheme.as_deref().unwrap_or_default();
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    errors.push(FieldError::not_supported(
                        format!("{path}.scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
                for header in get.http_headers.iter().flatten() {
                    let name = &header.name;
                    let valid = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !valid {
                        errors.push(FieldError::invalid_str(
                            format!("{path}.httpHeaders"),
                            name,
                            HTTP_HEADER_NAME_MSG,
                        ));
                    }
                }
            }
            "tcpSocket" => {
                if let Some(tcp) = self.tcp_socket {
                    validate_probe_port(&tcp.port, container, &format!("{path}.port"), errors);
                }
            }
            "grpc" => {
                if let Some(grpc) = self.grpc
                    && !(1..=65535).contains(&grpc.port)
                {
                    errors.push(FieldError::invalid(
                        format!("{path}.port"),
                        grpc.port,
                        PORT_RANGE_MSG,
                    ));
                }
            }
            "sleep" => {
                if let (Some(sleep), Some(grace)) = (self.sleep, grace)
                    && !(0..=grace).contains(&sleep.seconds)
                {
                    errors.push(FieldError::invalid(
                        path,
                        sleep.seconds,
                        &format!(
                            "must be non-negative and less than terminationGracePeriodSeconds ({grace})"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// A probe's or hook's port: a number in range, or a valid port name that names one of the
/// container's ports.
fn validate_probe_port(
    port: &IntOrString,
    container: &Container,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errors.push(FieldError::invalid(path, n, PORT_RANGE_MSG));
            }
        }
        IntOrString::String(name) => {
            let msgs = port_name(name);
            for msg in &msgs {
                errors.push(FieldError::invalid_str(path, name, msg));
            }
            let known = container
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(name.as_str()));
            if msgs.is_empty() && !known {
                errors.push(FieldError::invalid_str(
                    path,
                    name,
                    "must be the name of one of the container's ports",
                ));
            }
        }
    }
}

fn validate_ports(ports: &[ContainerPort], path: &str, errors: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errors.push(FieldError::invalid_str(format!("{path}.name"), name, msg));
                }
            } else if !names.insert(name) {
                errors.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        if port.container_port == 0 {
            errors.push(FieldError::required(format!("{path}.containerPort"), ""));
        } else if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid(
                format!("{path}.containerPort"),
                port.container_port,
                PORT_RANGE_MSG,
            ));
        }
        if let Some(host_port) = port.host_port
            && host_port != 0
            && !(1..=65535).contains(&host_port)
        {
            errors.push(FieldError::invalid(
                format!("{path}.hostPort"),
                host_port,
                PORT_RANGE_MSG,
            ));
        }
        match port.protocol.as_deref().unwrap_or("") {
            "TCP" | "UDP" | "SCTP" => {}
            "" => errors.push(FieldError::required(format!("{path}.protocol"), "")),
            other => errors.push(FieldError::not_supported(
                format!("{path}.protocol"),
                other,
                &["SCTP", "TCP", "UDP"],
            )),
        }
    }
}

/// Resources whose requests may be below their limits: the native ones except huge pages.
fn is_overcommit_allowed(resource: &str) -> bool {
    let native = !resource.contains('/') || resource.contains("kubernetes.io/");
    native && !resource.starts_with("hugepages-")
}

fn parse_quantities(
    map: Option<&BTreeMap<String, Quantity>>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, node_config::Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, quantity) in map.into_iter().flatten() {
        let field = format!("{path}[{name}]");
        match node_config::Quantity::from_str(&quantity.0) {
            Ok(value) if value.is_negative() => errors.push(FieldError::invalid_str(
                field,
                &value.to_string(),
                "must be greater than or equal to 0",
            )),
            Ok(value) => {
                parsed.insert(name.clone(), value);
            }
            Err(_) => errors.push(FieldError::invalid_str(field, &quantity.0, QUANTITY_MSG)),
        }
    }
    parsed
}

fn validate_resources(resources: &ResourceRequirements, path: &str, errors: &mut Vec<FieldError>) {
    let limits_path = format!("{path}.limits");
    let requests_path = format!("{path}.requests");
    let limits = parse_quantities(resources.limits.as_ref(), &limits_path, errors);
    let requests = parse_quantities(resources.requests.as_ref(), &requests_path, errors);
    for (name, request) in &requests {
        match limits.get(name) {
            Some(limit) if request != limit && !is_overcommit_allowed(name) => {
                errors.push(FieldError::invalid_str(
                    &requests_path,
                    &request.to_string(),
                    &format!("must be equal to {name} limit of {limit}"),
                ));
            }
            Some(limit) if request > limit => {
                errors.push(FieldError::invalid_str(
                    &requests_path,
                    &request.to_string(),
                    &format!("must be less than or equal to {name} limit of {limit}"),
                ));
            }
            Some(_) => {}
            None if !is_overcommit_allowed(name) => errors.push(FieldError::required(
                &limits_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_alnum(first) && is_alnum(last) && bytes.iter().all(|&c| is_label_char(c))
        }
        _ => false,
    }
}

/// Upstream's `IsDNS1123Label`: the messages for a value that is not one (none when it is).
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        msgs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !matches_label(value) {
        msgs.push(DNS1123_LABEL_MSG.to_owned());
    }
    msgs
}

/// Upstream's `IsDNS1123Subdomain`: the messages for a value that is not one.
pub(crate) fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        msgs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !value.split('.').all(matches_label) {
        msgs.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    msgs
}

/// Upstream's `IsValidPortName` (IANA service name).
fn port_name(name: &str) -> Vec<&'static str> {
    let mut msgs = Vec::new();
    if name.len() > 15 {
        msgs.push("must be no more than 15 characters");
    }
    if !name.bytes().all(is_label_char) {
        msgs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        msgs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        msgs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        msgs.push("must not begin or end with a hyphen");
    }
    msgs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(dns1123_label("web-1").is_empty());
        assert_eq!(dns1123_label("Web_1").len(), 1);
        assert_eq!(dns1123_label("-web").len(), 1);
        assert_eq!(dns1123_label("").len(), 1);
        assert_eq!(dns1123_label(&"a".repeat(64)).len(), 1);
        assert!(dns1123_subdomain("web.example-1.com").is_empty());
        assert_eq!(dns1123_subdomain("web..com").len(), 1);
        assert_eq!(dns1123_subdomain("web.").len(), 1);
        assert_eq!(dns1123_subdomain(&"a".repeat(254)).len(), 1);
    }

    #[test]
    fn port_names() {
        assert!(port_name("http").is_empty());
        assert!(port_name("http-alt2").is_empty());
        assert_eq!(port_name("123"), ["must contain at least one letter (a-z)"]);
        assert_eq!(port_name("a--b"), ["must not contain consecutive hyphens"]);
        assert_eq!(port_name("-ab"), ["must not begin or end with a hyphen"]);
        assert_eq!(port_name("abcdefghijklmnop").len(), 1);
    }

    #[test]
    fn overcommit() {
        assert!(is_overcommit_allowed("cpu"));
        assert!(is_overcommit_allowed("memory"));
        assert!(is_overcommit_allowed("ephemeral-storage"));
        assert!(!is_overcommit_allowed("hugepages-2Mi"));
        assert!(!is_overcommit_allowed("example.com/gpu"));
    }
}
