//! Registering the Node (upstream `kubelet_node_status.go`: `initialNode`,
//! `registerWithAPIServer`, `tryRegisterWithAPIServer`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::StatusError;
use crate::status::go_arch;

/// The annotation telling the attach/detach controller that it manages this node's volumes.
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";
/// The taint an external cloud provider removes once it has initialised the node.
pub const EXTERNAL_CLOUD_PROVIDER_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// What the node registers as.
#[derive(Clone, Debug, Default)]
pub struct NodeRegistration {
    /// The node's name.
    pub name: String,
    /// The hostname (`kubernetes.io/hostname`).
    pub hostname: String,
    /// `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// `registerWithTaints`.
    pub taints: Vec<Taint>,
    /// `providerID`.
    pub provider_id: Option<String>,
    /// `--cloud-provider=external`: the node starts with the uninitialized taint.
    pub external_cloud_provider: bool,
    /// `enableControllerAttachDetach`.
    pub controller_attach_detach: bool,
}

impl NodeRegistration {
    /// The labels the kubelet owns: hostname, os and arch, with their beta forms.
    pub fn default_labels(&self) -> BTreeMap<String, String> {
        let os = std::env::consts::OS;
        [
            ("kubernetes.io/hostname", self.hostname.as_str()),
            ("kubernetes.io/os", os),
            ("kubernetes.io/arch", go_arch()),
            ("beta.kubernetes.io/os", os),
            ("beta.kubernetes.io/arch", go_arch()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The Node to create (upstream `initialNode`, without its status).
    pub fn initial_node(&self) -> Node {
        let mut labels = self.default_labels();
        labels.extend(self.labels.clone());
        let mut taints = self.taints.clone();
        if self.external_cloud_provider
            && !taints
                .iter()
                .any(|t| t.key == EXTERNAL_CLOUD_PROVIDER_TAINT)
        {
            taints.push(Taint {
                key: EXTERNAL_CLOUD_PROVIDER_TAINT.into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        let annotations = self.controller_attach_detach.then(|| {
            [(
                CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                "true".to_string(),
            )]
            .into()
        });
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations,
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: self.provider_id.clone(),
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An existing Node with what the kubelet owns put right (upstream
    /// `updateDefaultLabels` and `reconcileCMADAnnotationWithExistingNode`): the default
    /// labels and the attach/detach annotation; `None` when it is up to date.
    pub fn reconcile(&self, existing: &Node) -> Option<Node> {
        let mut node = existing.clone();
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        let mut changed = false;
        for (k, v) in self.default_labels() {
            if labels.get(&k) != Some(&v) {
                labels.insert(k, v);
                changed = true;
            }
        }
        let annotations = node
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        let cmad = annotations.get(CONTROLLER_MANAGED_ATTACH_DETACH).cloned();
        match (self.controller_attach_detach, cmad.as_deref()) {
            (true, Some("true")) | (false, None) => {}
            (true, _) => {
                annotations.insert(CONTROLLER_MANAGED_ATTACH_DETACH.into(), "true".into());
                changed = true;
            }
            (false, Some(_)) => {
                annotations.remove(CONTROLLER_MANAGED_ATTACH_DETACH);
                changed = true;
            }
        }
        changed.then_some(node)
    }
}

/// Registers the node, retrying with back-off (100 ms doubling to 7 s, as upstream) until the
/// API server answers; a node that exists already is reconciled. Returns the Node as stored.
pub async fn register(client: &Client, registration: &NodeRegistration) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let mut delay = Duration::from_millis(100);
    loop {
        match try_register(&api, registration).await {
            Ok(node) => return node,
            Err(e) => {
                warn!(node = %registration.name, error = %e, retry_in = ?delay, "unable to register node with API server");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(7));
            }
        }
    }
}

/// One registration attempt.
pub async fn try_register(
    api: &Api<Node>,
    registration: &NodeRegistration,
) -> Result<Node, StatusError> {
    let name = &registration.name;
    match api
        .create(&PostParams::default(), &registration.initial_node())
        .await
    {
        Ok(node) => {
            info!(node = %name, "successfully registered node");
            Ok(node)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api
                .get(name)
                .await
                .map_err(|e| StatusError::api("get node", name, e))?;
            let Some(updated) = registration.reconcile(&existing) else {
                info!(node = %name, "node was previously registered");
                return Ok(existing);
            };
            // A replace carries the resourceVersion read: a concurrent change makes it fail
            // with a conflict, and the caller tries again.
            let node = api
                .replace(name, &PostParams::default(), &updated)
                .await
                .map_err(|e| StatusError::api("reconcile node", name, e))?;
            info!(node = %name, "node was previously registered; reconciled its labels and annotations");
            Ok(node)
        }
        Err(e) => Err(StatusError::api("register node", name, e)),
    }
}
