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
    meminfo_bytes(meminfo, "MemTotal:")
}

/// The machine's swap in bytes (`SwapTotal` of a meminfo file); 0 when unreadable.
pub fn swap_capacity_bytes(meminfo: &Path) -> i64 {
    meminfo_bytes(meminfo, "SwapTotal:")
}

fn meminfo_bytes(meminfo: &Path, key: &str) -> i64 {
    std::fs::read_to_string(meminfo)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))?
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

/// Where [`machine_info`] reads the host's identity; each path injectable for tests.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// `/proc/meminfo`.
    pub meminfo: std::path::PathBuf,
    /// `/etc/machine-id` (then `/var/lib/dbus/machine-id`).
    pub machine_id: Vec<std::path::PathBuf>,
    /// `/sys/class/dmi/id/product_uuid`.
    pub product_uuid: std::path::PathBuf,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: std::path::PathBuf,
    /// `/proc/sys/kernel/osrelease`.
    pub os_release_kernel: std::path::PathBuf,
    /// `/etc/os-release`.
    pub os_release: std::path::PathBuf,
    /// `/sys/kernel/mm/hugepages`.
    pub hugepages: std::path::PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            meminfo: MEMINFO_PATH.into(),
            machine_id: vec!["/etc/machine-id".into(), "/var/lib/dbus/machine-id".into()],
            product_uuid: "/sys/class/dmi/id/product_uuid".into(),
            boot_id: "/proc/sys/kernel/random/boot_id".into(),
            os_release_kernel: "/proc/sys/kernel/osrelease".into(),
            os_release: "/etc/os-release".into(),
            hugepages: "/sys/kernel/mm/hugepages".into(),
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `PRETTY_NAME` of an os-release file (unquoted), or `Linux`.
fn os_image(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".to_string())
}

/// The huge page sizes with their reserved bytes (`hugepages-2048kB/nr_hugepages`), sizes
/// named as Kubernetes names them (`2Mi`, `1Gi`).
fn hugepages(dir: &Path) -> Vec<(String, i64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(i64, String, i64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib: i64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let pages: i64 = read_trimmed(&e.path().join("nr_hugepages"))?.parse().ok()?;
            let size = if kib % (1 << 20) == 0 {
                format!("{}Gi", kib >> 20)
            } else if kib % (1 << 10) == 0 {
                format!("{}Mi", kib >> 10)
            } else {
                format!("{kib}Ki")
            };
            Some((kib, size, pages.saturating_mul(kib).saturating_mul(1024)))
        })
        .collect();
    out.sort();
    out.into_iter()
        .map(|(_, size, bytes)| (size, bytes))
        .collect()
}

/// What the machine is: cpu, memory, huge pages, the capacity of the filesystem holding
/// `root_dir`, and its identity (machine id, system UUID, boot id, kernel, OS image).
/// Unreadable identity files leave their field empty, as cAdvisor does.
pub fn machine_info(paths: &HostPaths, root_dir: &Path) -> crate::status::MachineInfo {
    let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(root_dir)
        .ok()
        .map(|st| (st.blocks() as i64).saturating_mul(st.fragment_size() as i64));
    crate::status::MachineInfo {
        cpu_millis: cpu_capacity_millis(),
        memory_bytes: memory_capacity_bytes(&paths.meminfo),
        ephemeral_storage_bytes,
        hugepages: hugepages(&paths.hugepages),
        machine_id: paths
            .machine_id
            .iter()
            .find_map(|p| read_trimmed(p))
            .unwrap_or_default(),
        system_uuid: read_trimmed(&paths.product_uuid).unwrap_or_default(),
        boot_id: read_trimmed(&paths.boot_id).unwrap_or_default(),
        kernel_version: read_trimmed(&paths.os_release_kernel).unwrap_or_default(),
        os_image: os_image(&paths.os_release),
    }
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
    fn machine_info_reads_the_host_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("meminfo"), "MemTotal: 1024 kB\n").unwrap();
        std::fs::write(d.join("machine-id"), "abc\n").unwrap();
        std::fs::write(d.join("uuid"), "U-1\n").unwrap();
        std::fs::write(d.join("boot"), "b-1\n").unwrap();
        std::fs::write(d.join("kernel"), "6.1.0-28-amd64\n").unwrap();
        std::fs::write(
            d.join("os-release"),
            "NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .unwrap();
        for (name, n) in [("hugepages-2048kB", 4), ("hugepages-1048576kB", 0)] {
            std::fs::create_dir_all(d.join("hp").join(name)).unwrap();
            std::fs::write(
                d.join("hp").join(name).join("nr_hugepages"),
                format!("{n}\n"),
            )
            .unwrap();
        }
        let paths = HostPaths {
            meminfo: d.join("meminfo"),
            machine_id: vec![d.join("missing"), d.join("machine-id")],
            product_uuid: d.join("uuid"),
            boot_id: d.join("boot"),
            os_release_kernel: d.join("kernel"),
            os_release: d.join("os-release"),
            hugepages: d.join("hp"),
        };
        let m = machine_info(&paths, d);
        assert_eq!(m.memory_bytes, 1 << 20);
        assert_eq!(m.machine_id, "abc");
        assert_eq!(m.system_uuid, "U-1");
        assert_eq!(m.boot_id, "b-1");
        assert_eq!(m.kernel_version, "6.1.0-28-amd64");
        assert_eq!(m.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(
            m.hugepages,
            vec![("2Mi".to_string(), 8 << 20), ("1Gi".to_string(), 0)]
        );
        assert!(m.ephemeral_storage_bytes.is_some_and(|b| b > 0));
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
