//! What the node is: its addresses, memory and cpu, read from the host (upstream cAdvisor's
//! machine info and the kubelet's node-IP detection). Paths are injectable for tests.

use std::net::IpAddr;
use std::path::Path;

/// Where the kernel reports memory.
pub const MEMINFO_PATH: &str = "/proc/meminfo";

/// The node's address when `--node-ip` is not given: the first IPv4 address of an up,
/// non-loopback interface whose name `skip` does not reject (e.g. a managed runtime's pod
/// bridges and their veths).
pub fn node_ips(skip: impl Fn(&str) -> bool) -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter(|a| !a.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        .filter(|a| !skip(&a.interface_name))
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        .into_iter()
        .collect()
}

/// The machine's memory in bytes (`MemTotal` of a meminfo file); 0 when unreadable.
pub fn memory_capacity_bytes(meminfo: &Path) -> i64 {
    std::fs::read_to_string(meminfo)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<i64>()
                .ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// The machine's cpu in millicores (its hardware threads).
pub fn cpu_capacity_millis() -> i64 {
    std::thread::available_parallelism().map_or(1000, |n| n.get() as i64 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_mem_total() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meminfo");
        std::fs::write(&path, "MemTotal:       24576000 kB\nMemFree:  1 kB\n").expect("write");
        assert_eq!(memory_capacity_bytes(&path), 24_576_000 * 1024);
        assert_eq!(memory_capacity_bytes(&dir.path().join("missing")), 0);
        std::fs::write(&path, "garbage\n").expect("write");
        assert_eq!(memory_capacity_bytes(&path), 0);
    }

    #[test]
    fn cpu_is_counted_in_millicores() {
        assert_eq!(cpu_capacity_millis() % 1000, 0);
        assert!(cpu_capacity_millis() >= 1000);
    }

    #[test]
    fn node_ips_skip_rejected_interfaces_and_loopback() {
        let all = node_ips(|_| false);
        assert!(
            all.len() <= 1 && all.iter().all(|ip| !ip.is_loopback()),
            "{all:?}"
        );
        assert!(node_ips(|_| true).is_empty(), "every interface rejected");
    }
}
