use super::*;
use k8s_openapi::api::core::v1::{
    Affinity, ContainerPort, NodeAffinity, NodeSelector, NodeSpec, NodeStatus, PodSecurityContext,
    PodSpec, ResourceRequirements, Sysctl,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn container(name: &str, requests: &[(&str, &str)], sidecar: bool) -> Container {
    Container {
        name: name.into(),
        restart_policy: sidecar.then(|| "Always".into()),
        resources: Some(ResourceRequirements {
            requests: Some(
                requests
                    .iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, containers: Vec<Container>, init: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("u-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            init_containers: Some(init),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(allocatable: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            labels: Some(
                [("kubernetes.io/os", "linux"), ("zone", "a"), ("cores", "8")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(
                allocatable
                    .iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

fn list(entries: &[(&str, i64)]) -> ResourceList {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn requests_as_upstream_sums_them() {
    let p = pod(
        "p",
        vec![
            container("a", &[("cpu", "100m"), ("memory", "64Mi")], false),
            container("b", &[("cpu", "200m"), ("memory", "64Mi")], false),
        ],
        vec![],
    );
    assert_eq!(
        pod_requests(&p),
        list(&[("cpu", 300), ("memory", 128 << 20)])
    );
    // A large regular init container wins; sidecars add to everything after them.
    let p = pod(
        "p",
        vec![container(
            "a",
            &[("cpu", "100m"), ("memory", "64Mi")],
            false,
        )],
        vec![
            container("side", &[("cpu", "50m"), ("memory", "16Mi")], true),
            container("setup", &[("cpu", "1"), ("memory", "32Mi")], false),
        ],
    );
    assert_eq!(
        pod_requests(&p),
        list(&[("cpu", 1050), ("memory", 80 << 20)])
    );
    // Pod-level requests replace cpu and memory only; the overhead adds.
    let mut p = pod(
        "p",
        vec![container(
            "a",
            &[("cpu", "100m"), ("ephemeral-storage", "1Gi")],
            false,
        )],
        vec![],
    );
    let spec = p.spec.as_mut().unwrap();
    spec.resources = Some(ResourceRequirements {
        requests: Some([("cpu".to_string(), ApiQuantity("2".into()))].into()),
        ..Default::default()
    });
    spec.overhead = Some([("cpu".to_string(), ApiQuantity("250m".into()))].into());
    assert_eq!(
        pod_requests(&p),
        list(&[("cpu", 2250), ("ephemeral-storage", 1 << 30)])
    );
    assert_eq!(request_of(&p, "pods"), 1);
}

#[test]
fn a_pod_that_does_not_fit_is_out_of_the_first_resource_with_upstreams_message() {
    let n = node(&[("cpu", "2"), ("memory", "1Gi"), ("pods", "3")]);
    let used = vec![pod(
        "used",
        vec![container(
            "a",
            &[("cpu", "1500m"), ("memory", "512Mi")],
            false,
        )],
        vec![],
    )];
    let big = pod("big", vec![container("a", &[("cpu", "1")], false)], vec![]);
    let failures = general_filter(&big, &used, &n);
    assert_eq!(
        failures[0].rejection(),
        Rejection::new(
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        )
    );
    let hungry = pod(
        "hungry",
        vec![container("a", &[("memory", "1Gi")], false)],
        vec![],
    );
    assert_eq!(
        general_filter(&hungry, &used, &n)[0].rejection().reason,
        "OutOfmemory"
    );
    let small = pod(
        "small",
        vec![container(
            "a",
            &[("cpu", "100m"), ("memory", "64Mi")],
            false,
        )],
        vec![],
    );
    assert!(general_filter(&small, &used, &n).is_empty());
    // The pod count comes first.
    let full: Vec<Pod> = (0..3)
        .map(|i| pod(&format!("p{i}"), vec![], vec![]))
        .collect();
    assert_eq!(
        general_filter(&small, &full, &n)[0].rejection(),
        Rejection::new(
            "OutOfpods",
            "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
        )
    );
}

#[test]
fn ephemeral_storage_and_extended_resources_are_fitted_and_unknown_extended_ones_dropped() {
    let n = node(&[
        ("cpu", "2"),
        ("ephemeral-storage", "10Gi"),
        ("example.com/gpu", "2"),
    ]);
    let disk = pod(
        "disk",
        vec![container("a", &[("ephemeral-storage", "11Gi")], false)],
        vec![],
    );
    assert_eq!(
        general_filter(&disk, &[], &n)[0].rejection().reason,
        "OutOfephemeral-storage"
    );
    let gpus = pod(
        "gpus",
        vec![container("a", &[("example.com/gpu", "3")], false)],
        vec![],
    );
    assert_eq!(
        general_filter(&gpus, &[], &n)[0].rejection(),
        Rejection::new(
            "OutOfexample.com/gpu",
            "Node didn't have enough resource: example.com/gpu, requested: 3, used: 0, capacity: 2"
        )
    );
    // A cluster-level extended resource the node does not list is not the node's to check.
    let cluster_level = pod(
        "cl",
        vec![container("a", &[("example.com/licence", "5")], false)],
        vec![],
    );
    assert!(general_filter(&cluster_level, &[], &n).is_empty());
    // A native resource the node lists nothing for is not checked either.
    let memory = pod(
        "m",
        vec![container("a", &[("memory", "1Ti")], false)],
        vec![],
    );
    assert!(general_filter(&memory, &[], &n).is_empty());
}

fn with_affinity(mut p: Pod, terms: Vec<NodeSelectorTerm>) -> Pod {
    p.spec.as_mut().unwrap().affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: terms,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

fn term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(exprs),
        match_fields: None,
    }
}

#[test]
fn node_selector_and_required_node_affinity_as_the_scheduler_matches_them() {
    let n = node(&[]);
    let base = pod("p", vec![Container::default()], vec![]);
    assert!(node_affinity_matches(&base, &n));
    let mut selected = base.clone();
    selected.spec.as_mut().unwrap().node_selector = Some([("zone".into(), "b".into())].into());
    assert!(!node_affinity_matches(&selected, &n));
    assert_eq!(
        general_filter(&selected, &[], &n)[0].rejection(),
        Rejection::new(
            "NodeAffinity",
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
        )
    );
    let cases = [
        (req("zone", "In", &["a", "b"]), true),
        (req("zone", "NotIn", &["a"]), false),
        (req("absent", "NotIn", &["a"]), true),
        (req("zone", "Exists", &[]), true),
        (req("zone", "DoesNotExist", &[]), false),
        (req("cores", "Gt", &["4"]), true),
        (req("cores", "Lt", &["4"]), false),
        (req("zone", "Gt", &["4"]), false),
    ];
    for (r, want) in cases {
        let p = with_affinity(base.clone(), vec![term(vec![r.clone()])]);
        assert_eq!(node_affinity_matches(&p, &n), want, "{r:?}");
    }
    // Terms are ORed, a term's expressions ANDed; an empty term matches nothing.
    let p = with_affinity(
        base.clone(),
        vec![
            term(vec![req("zone", "In", &["b"])]),
            term(vec![req("zone", "In", &["a"]), req("cores", "Exists", &[])]),
        ],
    );
    assert!(node_affinity_matches(&p, &n));
    assert!(!node_affinity_matches(
        &with_affinity(base.clone(), vec![term(vec![])]),
        &n
    ));
    // matchFields on metadata.name.
    let by_name = with_affinity(
        base,
        vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["node-a"])]),
        }],
    );
    assert!(node_affinity_matches(&by_name, &n));
}

#[test]
fn another_nodes_name_and_taken_host_ports_are_refused() {
    let n = node(&[]);
    let mut elsewhere = pod("p", vec![Container::default()], vec![]);
    elsewhere.spec.as_mut().unwrap().node_name = Some("node-b".into());
    assert_eq!(
        general_filter(&elsewhere, &[], &n)[0].rejection(),
        Rejection::new(
            "NodeName",
            "Predicate NodeName failed: node(s) didn't match the requested node name"
        )
    );
    let port = |ip: Option<&str>, proto: Option<&str>, port: i32| {
        pod(
            &format!("p{port}"),
            vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    container_port: 80,
                    host_port: Some(port),
                    host_ip: ip.map(Into::into),
                    protocol: proto.map(Into::into),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            vec![],
        )
    };
    let taken = vec![port(Some("10.0.0.1"), None, 8080)];
    assert!(!host_ports_fit(&port(None, None, 8080), &taken));
    assert!(!host_ports_fit(
        &port(Some("10.0.0.1"), Some("TCP"), 8080),
        &taken
    ));
    assert!(host_ports_fit(&port(Some("10.0.0.2"), None, 8080), &taken));
    assert!(host_ports_fit(&port(None, Some("UDP"), 8080), &taken));
    assert!(host_ports_fit(&port(None, None, 8081), &taken));
    assert_eq!(
        general_filter(&port(None, None, 8080), &taken, &n)[0].rejection(),
        Rejection::new(
            "NodePorts",
            "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
        )
    );
}

#[test]
fn untolerated_no_execute_taints_refuse_api_pods_but_not_static_ones() {
    let mut n = node(&[]);
    n.spec.as_mut().unwrap().taints = Some(vec![
        Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        },
        Taint {
            key: "maintenance".into(),
            value: Some("yes".into()),
            effect: "NoExecute".into(),
            time_added: None,
        },
    ]);
    let p = pod("p", vec![Container::default()], vec![]);
    assert_eq!(
        general_filter(&p, &[], &n)[0].rejection(),
        Rejection::new(
            "TaintToleration",
            "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
        )
    );
    let tolerating = |t: Toleration| {
        let mut p = p.clone();
        p.spec.as_mut().unwrap().tolerations = Some(vec![t]);
        p
    };
    // NoSchedule taints are the scheduler's business only.
    let ok = tolerating(Toleration {
        key: Some("maintenance".into()),
        operator: Some("Equal".into()),
        value: Some("yes".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    });
    assert!(general_filter(&ok, &[], &n).is_empty());
    let everything = tolerating(Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    });
    assert!(general_filter(&everything, &[], &n).is_empty());
    let wrong_value = tolerating(Toleration {
        key: Some("maintenance".into()),
        value: Some("no".into()),
        ..Default::default()
    });
    assert_eq!(general_filter(&wrong_value, &[], &n).len(), 1);
    let mut static_pod = p.clone();
    static_pod.metadata.annotations = Some(
        [(
            crate::config::CONFIG_SOURCE_ANNOTATION.to_string(),
            "file".to_string(),
        )]
        .into(),
    );
    assert!(general_filter(&static_pod, &[], &n).is_empty());
}

#[test]
fn the_predicate_handler_checks_the_os_label_and_field_first() {
    let view = NodeView::new(node(&[("pods", "0")]));
    let handler = PredicateAdmitHandler::new(view.clone(), None);
    let mut p = pod("p", vec![Container::default()], vec![]);
    p.metadata.labels = Some([("kubernetes.io/os".into(), "windows".into())].into());
    let attrs = AdmitAttributes {
        pod: &p,
        other_pods: &[],
    };
    assert_eq!(
        handler.admit(&attrs).unwrap_err().reason,
        "PodOSSelectorNodeLabelDoesNotMatch"
    );
    p.metadata.labels = None;
    p.spec.as_mut().unwrap().os = Some(k8s_openapi::api::core::v1::PodOS {
        name: "windows".into(),
    });
    let attrs = AdmitAttributes {
        pod: &p,
        other_pods: &[],
    };
    assert_eq!(
        handler.admit(&attrs).unwrap_err().reason,
        "PodOSNotSupported"
    );
    p.spec.as_mut().unwrap().os = None;
    let attrs = AdmitAttributes {
        pod: &p,
        other_pods: &[],
    };
    assert_eq!(handler.admit(&attrs).unwrap_err().reason, "OutOfpods");
    // The view follows the node.
    view.set(node(&[("pods", "1")]));
    assert_eq!(handler.admit(&attrs), Ok(()));
}

#[test]
fn strict_supplemental_groups_need_a_runtime_that_honours_them() {
    let mut n = node(&[("pods", "10")]);
    let view = NodeView::new(n.clone());
    let handler = PredicateAdmitHandler::new(view.clone(), None);
    let mut p = pod("p", vec![Container::default()], vec![]);
    p.spec.as_mut().unwrap().security_context =
        Some(k8s_openapi::api::core::v1::PodSecurityContext {
            supplemental_groups_policy: Some("Strict".into()),
            ..Default::default()
        });
    let attrs = AdmitAttributes {
        pod: &p,
        other_pods: &[],
    };
    // A standalone node's own view leaves it to the runtime.
    assert_eq!(handler.admit(&attrs), Ok(()));
    let status = n.status.as_mut().unwrap();
    status.node_info = Some(Default::default());
    view.set(n.clone());
    let rejection = handler.admit(&attrs).unwrap_err();
    assert_eq!(rejection.reason, "SupplementalGroupsPolicyNotSupported");
    assert_eq!(
        rejection.message,
        "SupplementalGroupsPolicy=Strict is not supported in this node"
    );
    n.status.as_mut().unwrap().features = Some(k8s_openapi::api::core::v1::NodeFeatures {
        supplemental_groups_policy: Some(true),
    });
    view.set(n);
    assert_eq!(handler.admit(&attrs), Ok(()));
}

fn with_sysctls(names: &[&str], host_network: bool) -> Pod {
    let mut p = pod("p", vec![Container::default()], vec![]);
    let spec = p.spec.as_mut().unwrap();
    spec.host_network = Some(host_network);
    spec.security_context = Some(PodSecurityContext {
        sysctls: Some(
            names
                .iter()
                .map(|n| Sysctl {
                    name: n.to_string(),
                    value: "1".into(),
                })
                .collect(),
        ),
        ..Default::default()
    });
    p
}

#[test]
fn sysctls_must_be_safe_or_allowed_and_not_of_a_shared_host_namespace() {
    let admit = |list: &SysctlAllowlist, p: &Pod| {
        list.admit(&AdmitAttributes {
            pod: p,
            other_pods: &[],
        })
    };
    let safe = SysctlAllowlist::new(&[]).unwrap();
    assert_eq!(
        admit(
            &safe,
            &with_sysctls(
                &["net.ipv4.ip_local_port_range", "kernel.shm_rmid_forced"],
                false
            )
        ),
        Ok(())
    );
    // Slash separators are normalised.
    assert_eq!(
        admit(&safe, &with_sysctls(&["net/ipv4/tcp_syncookies"], false)),
        Ok(())
    );
    assert_eq!(
        admit(&safe, &with_sysctls(&["net.core.somaxconn"], false)),
        Err(Rejection::new(
            "SysctlForbidden",
            "forbidden sysctl: \"net.core.somaxconn\" not allowlisted"
        ))
    );
    assert_eq!(
        admit(&safe, &with_sysctls(&["net.ipv4.tcp_syncookies"], true)),
        Err(Rejection::new(
            "SysctlForbidden",
            "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host Net enabled"
        ))
    );
    let unsafe_ok = SysctlAllowlist::new(&["net.core.*".into(), "kernel.msgmax".into()]).unwrap();
    assert_eq!(
        admit(
            &unsafe_ok,
            &with_sysctls(&["net.core.somaxconn", "kernel.msgmax"], false)
        ),
        Ok(())
    );
    assert_eq!(
        SysctlAllowlist::new(&["vm.swappiness".into()]).unwrap_err(),
        "the sysctl \"vm.swappiness\" are not known to be namespaced"
    );
    assert_eq!(
        normalize_sysctl("net/ipv4/conf/eno2.100/rp_filter"),
        "net.ipv4.conf.eno2/100.rp_filter"
    );
    assert_eq!(
        normalize_sysctl("net.ipv4.conf.eno2/100.rp_filter"),
        "net.ipv4.conf.eno2/100.rp_filter"
    );
    assert!(!safe_sysctls(Some((3, 10))).contains(&"net.ipv4.ip_local_reserved_ports"));
    assert!(safe_sysctls(Some((6, 1))).contains(&"net.ipv4.tcp_fin_timeout"));
}

#[test]
fn a_critical_pod_preempts_the_fewest_lowest_class_pods_that_free_what_it_lacks() {
    let guaranteed = |name: &str, cpu: &str| {
        let mut c = container(name, &[("cpu", cpu), ("memory", "100Mi")], false);
        c.resources.as_mut().unwrap().limits = c.resources.as_ref().unwrap().requests.clone();
        pod(name, vec![c], vec![])
    };
    let burstable =
        |name: &str, cpu: &str| pod(name, vec![container(name, &[("cpu", cpu)], false)], vec![]);
    let pods = vec![
        guaranteed("g1", "500m"),
        burstable("b1", "300m"),
        burstable("b2", "600m"),
        pod("be", vec![Container::default()], vec![]),
    ];
    let mut critical = pod("static", vec![Container::default()], vec![]);
    critical.metadata.annotations = Some(
        [(
            crate::config::CONFIG_SOURCE_ANNOTATION.to_string(),
            "file".to_string(),
        )]
        .into(),
    );
    assert!(is_critical_pod(&critical));
    let names = |v: Vec<&Pod>| -> Vec<String> {
        v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    };
    // 500m of cpu: the one burstable pod that frees it all, no guaranteed one.
    let chosen = pods_to_preempt(&critical, &pods, &[("cpu".into(), 500)]).unwrap();
    assert_eq!(names(chosen), ["b2"]);
    // 1200m: every burstable pod and the guaranteed one.
    let mut chosen = names(pods_to_preempt(&critical, &pods, &[("cpu".into(), 1200)]).unwrap());
    chosen.sort();
    assert_eq!(chosen, ["b1", "b2", "g1"]);
    // More than all the others hold.
    assert!(pods_to_preempt(&critical, &pods, &[("cpu".into(), 5000)]).is_err());
    // A critical pod is never preempted; an ordinary pod preempts nothing.
    assert!(!preemptable(&critical, &critical));
    assert!(pods_to_preempt(&pods[3], &pods, &[("cpu".into(), 100)]).is_err());
    // Only insufficient resources can be preempted away.
    let failures = vec![PredicateFailure::Insufficient {
        resource: "cpu".into(),
        requested: 1000,
        used: 1500,
        capacity: 2000,
    }];
    assert_eq!(
        preemption_requirements(&failures),
        Some(vec![("cpu".to_string(), 500)])
    );
    let mut with_ports = failures;
    with_ports.push(PredicateFailure::Predicate {
        name: "NodePorts",
        reason: NODE_PORTS_REASON,
    });
    assert_eq!(preemption_requirements(&with_ports), None);
}
