//! Cluster mode wiring: with `--kubeconfig`, the API client, registration, node status and
//! the node lease (node-status), composed from the node's parts.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use node_config::KubeletConfiguration;
use node_config::cli::NodeFlags;
use node_core::api_status::ApiStatusSync;
use node_core::runtime::Runtime;
use node_images::service::ImageService;
use node_status::certificate::{bootstrap_client_certificate, kubeconfig_still_valid};
use node_status::client::{client_from_kubeconfig, config_from_kubeconfig};
use node_status::lease::NodeLease;
use node_status::machine::{HostPaths, machine_info};
use node_status::registration::{NodeRegistration, register};
use node_status::rotation::{CertificateRotation, RotatingClient};
use node_status::source::{ImageSource, RuntimeStatusSource};
use node_status::status::{ImageInfo, NodeStatusInputs, Reserved, go_arch, validate_node_ip};
use node_status::updater::NodeStatusUpdater;
use tracing::{info, warn};

/// The runtime's images for the node status.
struct Images(Arc<dyn ImageService>);

#[async_trait]
impl ImageSource for Images {
    async fn images(&self) -> Vec<ImageInfo> {
        self.0
            .list_images()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| ImageInfo {
                repo_digests: i.repo_digests,
                repo_tags: i.repo_tags,
                size_bytes: i64::try_from(i.size).unwrap_or(i64::MAX),
            })
            .collect()
    }
}

/// The node's parts the cluster side needs.
pub(crate) struct Node<'a> {
    pub(crate) flags: &'a NodeFlags,
    pub(crate) config: &'a KubeletConfiguration,
    pub(crate) name: &'a str,
    pub(crate) ips: &'a [IpAddr],
    pub(crate) version: &'a str,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) images: Arc<dyn ImageService>,
    /// The engine's health: PLEG's goes into the Ready condition.
    pub(crate) health: Arc<node_core::kubelet::Health>,
    /// The eviction manager's pressure conditions.
    pub(crate) pressure: Arc<dyn node_status::source::PressureSource>,
    /// The engine, for its pods from and statuses to the API server (with `--kubeconfig`).
    pub(crate) engine: Option<Engine>,
}

/// What the API pod source and the status sync need of the engine.
pub(crate) struct Engine {
    pub(crate) source: node_core::config::SourceSender,
    pub(crate) pods: Arc<node_core::pod_manager::PodManager>,
    pub(crate) statuses: Arc<node_core::status::StatusManager>,
    pub(crate) workers: Arc<node_core::pod_workers::PodWorkers>,
    /// The volumes' object source, set to the API once the client exists.
    pub(crate) objects: Option<Arc<node_volumes::api::DeferredSource>>,
    /// The event recorder, to post through the client once it exists.
    pub(crate) events: Option<Arc<node_core::api_events::ApiEventRecorder>>,
    /// The services containers' environment variables come from.
    pub(crate) services: Option<Arc<node_core::services::ServiceLister>>,
    /// The RuntimeClasses pods' sandboxes take their handler from.
    pub(crate) runtime_classes: Option<Arc<node_core::listers::RuntimeClassLister>>,
    /// The Node admission checks pods against: the API server's copy replaces it.
    pub(crate) node: Arc<node_core::admission::NodeView>,
    /// The kubelet server's webhooks, once the server started.
    pub(crate) webhooks: Option<tokio::sync::oneshot::Receiver<crate::server::Webhooks>>,
    /// `authentication.webhook.cacheTTL`.
    pub(crate) authentication_cache_ttl: Duration,
    /// `authorization.webhook.cacheAuthorizedTTL` and `cacheUnauthorizedTTL`.
    pub(crate) authorization_cache_ttls: (Duration, Duration),
}

/// With `--kubeconfig`: connects (after the TLS bootstrap when the kubeconfig is missing or
/// expired and `--bootstrap-kubeconfig` is given), then, in the background and retrying while
/// the API server is away, registers the node, posts its status and keeps its lease.
/// Without it: nothing.
pub(crate) async fn start(node: Node<'_>) -> Result<()> {
    let Some(kubeconfig) = &node.flags.kubeconfig else {
        return Ok(());
    };
    for ip in node.flags.node_ip.iter().flat_map(|n| n.addresses()) {
        validate_node_ip(ip).map_err(|reason| anyhow::anyhow!("--node-ip {ip}: {reason}"))?;
    }
    let user_agent = format!(
        "kubelet/{} ({}/{}) node-agent",
        node.version,
        std::env::consts::OS,
        go_arch()
    );
    // A kubeconfig that is valid now is used at once (its errors stop the kubelet); one that
    // is missing or expired is replaced by the TLS bootstrap, in the background.
    let credentials = if kubeconfig_still_valid(kubeconfig) {
        Ok(config_from_kubeconfig(kubeconfig, &user_agent).await?)
    } else if let Some(bootstrap) = &node.flags.bootstrap_kubeconfig {
        Err(bootstrap.clone())
    } else if !kubeconfig.exists() {
        bail!("--kubeconfig {}: no such file", kubeconfig.display());
    } else {
        client_from_kubeconfig(kubeconfig, &user_agent).await?;
        bail!(
            "--kubeconfig {}: its client certificate has expired, and no --bootstrap-kubeconfig is given to request a new one",
            kubeconfig.display()
        );
    };
    let config = node.config;
    info!(kubeconfig = %kubeconfig.display(), node = %node.name, "cluster mode: joining the API server");

    let base = status_base(node.flags, config, node.name, node.ips, node.version)?;
    let source = RuntimeStatusSource::new(base, node.runtime.clone())
        .with_images(Arc::new(Images(node.images.clone())))
        .with_health(node.health.clone())
        .with_pressure(node.pressure.clone());
    let registration = config
        .register_node
        .then(|| registration_of(node.flags, config, node.name));
    let name = node.name.to_string();
    let (update_frequency, report_frequency) = (
        config.node_status_update_frequency,
        config.node_status_report_frequency,
    );
    let lease_seconds = i32::try_from(config.node_lease_duration_seconds).unwrap_or(40);
    let (kubeconfig, cert_dir) = (kubeconfig.clone(), node.flags.cert_dir.clone());
    let rotate = config.rotate_certificates;
    let serving_ips = node.ips.to_vec();
    let engine = node.engine;
    let (qps, burst) = (config.kube_api_qps, config.kube_api_burst);
    tokio::spawn(async move {
        let config = match credentials {
            Ok(config) => config,
            Err(bootstrap) => {
                bootstrapped_config(&kubeconfig, &bootstrap, &cert_dir, &name, &user_agent).await
            }
        };
        let (client, rotating) = match RotatingClient::new(config) {
            Ok(rotating) => {
                let rotating = rotating.with_rate_limit(qps, burst);
                let client = rotating.client();
                let current = cert_dir.join(node_status::certificate::CURRENT_CLIENT_PEM);
                if rotate && current.exists() {
                    tokio::spawn(
                        CertificateRotation::new(rotating.clone(), &cert_dir, &name).run(),
                    );
                } else if rotate {
                    info!(certificate = %current.display(), "client certificate rotation needs the certificate in the cert dir: not rotating");
                }
                (client, rotating)
            }
            Err(e) => {
                tracing::error!(kubeconfig = %kubeconfig.display(), error = %e, "cannot make the API client: the node does not join the cluster");
                return;
            }
        };
        let mut node_view = None;
        if let Some(Engine {
            source,
            pods,
            statuses,
            workers,
            objects,
            events,
            services,
            runtime_classes,
            node,
            webhooks,
            authentication_cache_ttl,
            authorization_cache_ttls,
        }) = engine
        {
            if let Some(webhooks) = webhooks {
                let client = client.clone();
                let (cert_dir, name) = (cert_dir.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(webhooks) = webhooks.await else {
                        return;
                    };
                    if let Some(serving) = webhooks.serving {
                        // The node's addresses as its status reports them: the hostname
                        // and the node IPs.
                        let profile = node_status::certificate::CsrProfile::serving(
                            vec![name.clone()],
                            serving_ips,
                        );
                        let on_new = Arc::new(move |pem: &Path| {
                            serving.load(pem, pem).map_err(|e| e.to_string())
                        });
                        tokio::spawn(
                            CertificateRotation::serving(
                                rotating, &cert_dir, &name, profile, on_new,
                            )
                            .run(),
                        );
                    }
                    if let Some(tokens) = webhooks.tokens {
                        tokens.set(Arc::new(
                            node_core::server::webhook::WebhookTokenReviewer::new(
                                client.clone(),
                                authentication_cache_ttl,
                            ),
                        ));
                    }
                    if let Some(authorizer) = webhooks.authorizer {
                        let (allowed, denied) = authorization_cache_ttls;
                        authorizer.set(Arc::new(
                            node_core::server::webhook::WebhookAuthorizer::new(
                                client, allowed, denied,
                            ),
                        ));
                    }
                });
            }
            if let Some(classes) = runtime_classes {
                classes.start(client.clone());
            }
            node_view = Some(node);
            if let Some(services) = services {
                services.start(client.clone());
            }
            if let Some(events) = events {
                events.set_client(client.clone());
            }
            if let Some(objects) = objects {
                objects.set(Arc::new(node_volumes::api::ApiObjectSource::new(
                    client.clone(),
                )));
            }
            let (source_client, source_node) = (client.clone(), name.clone());
            tokio::spawn(async move {
                node_core::config::api::run_api_source(source_client, &source_node, source).await;
            });
            tokio::spawn(ApiStatusSync::new(client.clone(), &name, pods, statuses, workers).run());
        }
        let lease = NodeLease::new(client.clone(), &name, lease_seconds);
        tokio::spawn(lease.run(std::future::pending()));
        let updater = NodeStatusUpdater::new(
            client.clone(),
            &name,
            Arc::new(source),
            update_frequency,
            report_frequency,
        );
        let updater = match node_view {
            Some(view) => updater.with_node_observer(Arc::new(move |node| view.set(node.clone()))),
            None => updater,
        };
        let updater = match &registration {
            Some(registration) => updater.with_registered(&register(&client, registration).await),
            None => updater,
        };
        updater.run(std::future::pending()).await;
    });
    Ok(())
}

/// The node status inputs that do not change while the kubelet runs: machine, reservations,
/// maxPods (capped by podsPerCore), version, port.
fn status_base(
    flags: &NodeFlags,
    config: &KubeletConfiguration,
    name: &str,
    ips: &[IpAddr],
    version: &str,
) -> Result<NodeStatusInputs> {
    let machine = machine_info(&HostPaths::default(), &flags.root_dir);
    let reserved = Reserved::from_config(
        config,
        &machine,
        flags.experimental_allocatable_ignore_eviction,
    )
    .context("node allocatable")?;
    let mut max_pods = i64::from(config.max_pods);
    if config.pods_per_core > 0 {
        max_pods = max_pods.min(i64::from(config.pods_per_core) * machine.cpu_millis / 1000);
    }
    Ok(NodeStatusInputs {
        hostname: name.to_string(),
        node_ips: ips.to_vec(),
        machine,
        max_pods,
        reserved,
        kubelet_version: version.to_string(),
        kubelet_port: i32::from(config.port),
        max_images: config.node_status_max_images,
        ..Default::default()
    })
}

/// What the node registers as: labels, taints, provider ID, attach/detach annotation.
fn registration_of(
    flags: &NodeFlags,
    config: &KubeletConfiguration,
    name: &str,
) -> NodeRegistration {
    NodeRegistration {
        name: name.to_string(),
        hostname: name.to_string(),
        labels: flags.node_labels.clone(),
        taints: config
            .register_with_taints
            .iter()
            .map(|t| k8s_openapi::api::core::v1::Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.as_str().to_string(),
                time_added: None,
            })
            .collect(),
        provider_id: config.provider_id.clone(),
        external_cloud_provider: flags.cloud_provider == "external",
        controller_attach_detach: config.enable_controller_attach_detach,
    }
}

/// The Node admission starts from (upstream `initialNode` with its capacity and allocatable):
/// on a cluster node the API server's copy replaces it once registered.
pub(crate) fn initial_node(
    flags: &NodeFlags,
    config: &KubeletConfiguration,
    name: &str,
    ips: &[IpAddr],
    version: &str,
) -> Result<k8s_openapi::api::core::v1::Node> {
    let base = status_base(flags, config, name, ips, version)?;
    let mut node = registration_of(flags, config, name).initial_node();
    let (capacity, allocatable) = node_status::status::capacity_and_allocatable(&base);
    node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        ..Default::default()
    });
    Ok(node)
}

/// The TLS bootstrap, retried with back-off (each attempt waits up to 15 minutes for its
/// CSR), then the client configuration of the kubeconfig it wrote.
async fn bootstrapped_config(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node: &str,
    user_agent: &str,
) -> kube::Config {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = bootstrap_client_certificate(
            kubeconfig,
            bootstrap,
            cert_dir,
            node,
            user_agent,
            Duration::from_secs(15 * 60),
        )
        .await;
        match attempt {
            Ok(_) => match config_from_kubeconfig(kubeconfig, user_agent).await {
                Ok(config) => return config,
                Err(e) => warn!(error = %e, "the bootstrapped kubeconfig cannot be used"),
            },
            Err(e) => warn!(error = %e, retry_in = ?delay, "TLS bootstrap failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
