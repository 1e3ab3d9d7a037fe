//! Service environment variables (feature `api`; upstream `envvars.FromServices` and
//! `getServiceEnvVarMap`): every Service of the cluster watched into a reflector store, and the
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]` and docker-link `<NAME>_PORT...`
//! variables of the services a pod sees.

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use std::collections::BTreeMap;

use crate::listers::WatchedStore;
use crate::objects::ServiceEnvSource;

/// The namespace and name of the master service every pod sees.
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// `my-svc` -> `MY_SVC`.
fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

fn join_host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The variables of `services`, as upstream's `envvars.FromServices`; services without a
/// cluster IP (headless) are left out.
pub fn service_env_vars(services: &[&Service]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let name = env_name(service.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.as_deref().unwrap_or_default();
        env.insert(format!("{name}_SERVICE_HOST"), ip.to_string());
        if let Some(first) = ports.first() {
            env.insert(format!("{name}_SERVICE_PORT"), first.port.to_string());
        }
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.insert(
                    format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                    port.port.to_string(),
                );
            }
        }
        // Docker-link variables.
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let url = format!(
                "{}://{}",
                protocol.to_lowercase(),
                join_host_port(ip, port.port)
            );
            if i == 0 {
                env.insert(format!("{name}_PORT"), url.clone());
            }
            let prefix = format!("{name}_PORT_{}_{}", port.port, protocol.to_uppercase());
            env.insert(prefix.clone(), url);
            env.insert(format!("{prefix}_PROTO"), protocol.to_lowercase());
            env.insert(format!("{prefix}_PORT"), port.port.to_string());
            env.insert(format!("{prefix}_ADDR"), ip.to_string());
        }
    }
    env
}

/// The node's view of the cluster's Services, once its API client exists.
#[derive(Debug, Default)]
pub struct ServiceLister {
    services: WatchedStore<Service>,
}

impl ServiceLister {
    /// A lister that knows no services yet.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(ServiceLister::default())
    }

    /// Starts watching every Service through `client` (the first call wins).
    pub fn start(&self, client: Client) {
        self.services.start(client, "services");
    }
}

impl ServiceEnvSource for ServiceLister {
    fn service_env(
        &self,
        namespace: &str,
        enable_service_links: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let all = self
            .services
            .state()
            .ok_or("services have not yet been read at least once, cannot construct envvars")?;
        let mut seen: BTreeMap<String, &Service> = BTreeMap::new();
        for service in &all {
            let ns = service.metadata.namespace.as_deref().unwrap_or_default();
            let name = service.metadata.name.as_deref().unwrap_or_default();
            if (ns, name) == MASTER_SERVICE {
                seen.entry(name.to_string()).or_insert(service);
            } else if ns == namespace && enable_service_links {
                seen.insert(name.to_string(), service);
            }
        }
        let services: Vec<&Service> = seen.into_values().collect();
        Ok(service_env_vars(&services))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn variables_as_upstream_names_them() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("my-web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.0.0.11".into()),
                ports: Some(vec![
                    ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("dns-udp".into()),
                        port: 53,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let headless = Service {
            metadata: ObjectMeta {
                name: Some("headless".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let env = service_env_vars(&[&svc, &headless]);
        let expect = [
            ("MY_WEB_SERVICE_HOST", "10.0.0.11"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.0.0.11:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.0.0.11:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.0.0.11"),
            ("MY_WEB_PORT_53_UDP", "udp://10.0.0.11:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
        ];
        for (k, v) in expect {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(env.len(), 13, "{env:?}");
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
    }

    #[test]
    fn the_lister_refuses_before_it_read_the_services() {
        let lister = ServiceLister::default();
        assert!(lister.service_env("ns", true).is_err());
    }
}
