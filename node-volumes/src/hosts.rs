//! The kubelet-managed `/etc/hosts` of a pod's containers (upstream `makeHostsMount`).

use std::path::Path;

use k8s_openapi::api::core::v1::HostAlias;

const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    out
}

/// The hosts file of a pod on the pod network: localhost entries, the pod's IPs with its
/// hostname (qualified by its domain when it has one), then the host aliases.
pub fn managed_hosts(
    pod_ips: &[String],
    hostname: &str,
    domain: &str,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The hosts file of a host-network pod: the node's own hosts file, then the host aliases.
pub fn host_network_hosts(node_hosts: &Path, aliases: &[HostAlias]) -> std::io::Result<String> {
    let node = std::fs::read_to_string(node_hosts)?;
    Ok(format!(
        "{MANAGED_HEADER_HOST_NETWORK}{node}{}",
        alias_entries(aliases)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.into(),
            hostnames: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn managed_file_names_the_pod_and_its_aliases() {
        let text = managed_hosts(
            &["10.88.0.5".into()],
            "web-0",
            "web.default.svc.cluster.local",
            &[alias("10.1.2.3", &["foo.local", "bar.local"])],
        );
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.88.0.5\tweb-0.web.default.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"
        );
        let plain = managed_hosts(&["10.88.0.5".into()], "demo", "", &[]);
        assert!(plain.ends_with("fe00::2\tip6-allrouters\n10.88.0.5\tdemo\n"));
    }

    #[test]
    fn host_network_file_starts_from_the_nodes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("hosts");
        std::fs::write(&node, "127.0.0.1\tlocalhost\n192.168.1.2\tnode-a\n").expect("write");
        let text = host_network_hosts(&node, &[alias("10.0.0.1", &["db"])]).expect("read");
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n192.168.1.2\tnode-a\n\n# Entries added by HostAliases.\n10.0.0.1\tdb\n"
        );
    }
}
