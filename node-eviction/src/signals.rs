//! Eviction signals observed from the summary (upstream `makeSignalObservations`) and the
//! thresholds they meet (upstream `thresholdsMet` and its helpers).

use std::collections::BTreeMap;

use node_config::{EvictionThreshold, Quantity, QuantityFormat, Signal};
use node_core::stats::{FsStats, MemoryStats, Summary, system_container};

/// One signal's observation: what is available of what capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Available amount (bytes, inodes or process IDs).
    pub available: i64,
    /// Capacity, what percentages are of.
    pub capacity: i64,
}

/// The observations of one pass, by signal.
pub type Observations = BTreeMap<Signal, Observation>;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn memory(m: Option<&MemoryStats>) -> Option<Observation> {
    let m = m?;
    let (available, working_set) = (m.available_bytes?, m.working_set_bytes?);
    Some(Observation {
        available: int(available),
        capacity: int(available.saturating_add(working_set)),
    })
}

fn bytes(fs: Option<&FsStats>) -> Option<Observation> {
    let fs = fs?;
    Some(Observation {
        available: int(fs.available_bytes?),
        capacity: int(fs.capacity_bytes?),
    })
}

fn inodes(fs: Option<&FsStats>) -> Option<Observation> {
    let fs = fs?;
    Some(Observation {
        available: int(fs.inodes_free?),
        capacity: int(fs.inodes?),
    })
}

/// The signals the summary has figures for: `memory.available` (capacity minus working set),
/// `allocatableMemory.available` (of the `pods` cgroup), `nodefs.*` (the kubelet's root
/// directory), `imagefs.*` and `containerfs.*` (the runtime's filesystems), `pid.available`
/// (`pid_max` minus the processes running).
pub fn observe(summary: &Summary) -> Observations {
    let node = &summary.node;
    let mut out = Observations::new();
    let mut put = |signal, observation: Option<Observation>| {
        if let Some(o) = observation {
            out.insert(signal, o);
        }
    };
    put(Signal::MemoryAvailable, memory(node.memory.as_ref()));
    let pods = node
        .system_containers
        .iter()
        .find(|c| c.name == system_container::PODS);
    put(
        Signal::AllocatableMemoryAvailable,
        memory(pods.and_then(|c| c.memory.as_ref())),
    );
    put(Signal::NodeFsAvailable, bytes(node.fs.as_ref()));
    put(Signal::NodeFsInodesFree, inodes(node.fs.as_ref()));
    let runtime = node.runtime.as_ref();
    let image = runtime.and_then(|r| r.image_fs.as_ref());
    put(Signal::ImageFsAvailable, bytes(image));
    put(Signal::ImageFsInodesFree, inodes(image));
    let container = runtime.and_then(|r| r.container_fs.as_ref());
    put(Signal::ContainerFsAvailable, bytes(container));
    put(Signal::ContainerFsInodesFree, inodes(container));
    if let Some(rlimit) = node.rlimit.as_ref()
        && let (Some(max), Some(running)) = (rlimit.max_pid, rlimit.running_processes)
    {
        put(
            Signal::PidAvailable,
            Some(Observation {
                available: max - running,
                capacity: max,
            }),
        );
    }
    out
}

/// The threshold's amount for a signal of `capacity` (upstream `GetThresholdQuantity`).
pub fn threshold_quantity(threshold: &EvictionThreshold, capacity: i64) -> i64 {
    let capacity = Quantity::from_value(capacity, QuantityFormat::BinarySI);
    threshold.value.quantity_for_capacity(&capacity).value()
}

/// The thresholds met by `observations` (upstream `thresholdsMet`); with
/// `enforce_min_reclaim`, a threshold stays met until `evictionMinimumReclaim` more is
/// available.
pub fn thresholds_met(
    thresholds: &[EvictionThreshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<EvictionThreshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = observations.get(&t.signal) else {
                return false;
            };
            let mut quantity = threshold_quantity(t, o.capacity);
            if enforce_min_reclaim && let Some(min) = &t.min_reclaim {
                let capacity = Quantity::from_value(o.capacity, QuantityFormat::BinarySI);
                quantity = quantity.saturating_add(min.quantity_for_capacity(&capacity).value());
            }
            quantity > o.available
        })
        .cloned()
        .collect()
}

/// The resource a signal is about (upstream `signalToResource`).
pub fn resource_of(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
        Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
            "ephemeral-storage"
        }
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::ContainerFsInodesFree => {
            "inodes"
        }
        Signal::PidAvailable => "pids",
    }
}

/// The node condition a signal's pressure sets (upstream `signalToNodeCondition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeCondition {
    /// MemoryPressure.
    Memory,
    /// DiskPressure.
    Disk,
    /// PIDPressure.
    Pid,
}

impl NodeCondition {
    /// The condition's type, as the Node status and the admission message name it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::Memory => "MemoryPressure",
            NodeCondition::Disk => "DiskPressure",
            NodeCondition::Pid => "PIDPressure",
        }
    }

    /// The condition `signal`'s thresholds set.
    pub fn of(signal: Signal) -> Self {
        match resource_of(signal) {
            "memory" => NodeCondition::Memory,
            "pids" => NodeCondition::Pid,
            _ => NodeCondition::Disk,
        }
    }
}

/// Memory signals first, then the others in their order (upstream `byEvictionPriority`).
pub fn by_eviction_priority(thresholds: &mut [EvictionThreshold]) {
    thresholds.sort_by_key(|t| {
        !matches!(
            t.signal,
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
        )
    });
}

/// A quantity as Go's `resource.Quantity` prints bytes (`100Mi`, `83886080`).
pub fn format_bytes(value: i64) -> String {
    Quantity::from_value(value, QuantityFormat::BinarySI).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_config::ThresholdValue;
    use node_config::eviction::ThresholdOperator;
    use node_core::stats::{ContainerStats, NodeStats, RlimitStats, RuntimeFsStats};

    pub(crate) fn threshold(signal: Signal, value: &str, min: Option<&str>) -> EvictionThreshold {
        EvictionThreshold {
            signal,
            operator: ThresholdOperator::LessThan,
            value: value.parse::<ThresholdValue>().unwrap(),
            grace_period: std::time::Duration::ZERO,
            min_reclaim: min.map(|m| m.parse().unwrap()),
        }
    }

    fn summary() -> Summary {
        let mem = |available: u64, working_set: u64| MemoryStats {
            available_bytes: Some(available),
            working_set_bytes: Some(working_set),
            ..Default::default()
        };
        let fs = |available: u64, capacity: u64, free: u64, inodes: u64| FsStats {
            available_bytes: Some(available),
            capacity_bytes: Some(capacity),
            inodes_free: Some(free),
            inodes: Some(inodes),
            ..Default::default()
        };
        Summary {
            node: NodeStats {
                memory: Some(mem(1 << 30, 3 << 30)),
                system_containers: vec![ContainerStats {
                    name: "pods".into(),
                    memory: Some(mem(512 << 20, 1536 << 20)),
                    ..Default::default()
                }],
                fs: Some(fs(10 << 30, 100 << 30, 1000, 10_000)),
                runtime: Some(RuntimeFsStats {
                    image_fs: Some(fs(20 << 30, 200 << 30, 2000, 20_000)),
                    container_fs: None,
                }),
                rlimit: Some(RlimitStats {
                    max_pid: Some(4_194_304),
                    running_processes: Some(300),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: Vec::new(),
        }
    }

    #[test]
    fn signals_are_observed_as_upstream_computes_them() {
        let o = observe(&summary());
        assert_eq!(
            o[&Signal::MemoryAvailable],
            Observation {
                available: 1 << 30,
                capacity: 4 << 30
            }
        );
        assert_eq!(o[&Signal::AllocatableMemoryAvailable].capacity, 2 << 30);
        assert_eq!(o[&Signal::NodeFsAvailable].available, 10 << 30);
        assert_eq!(o[&Signal::NodeFsInodesFree].capacity, 10_000);
        assert_eq!(o[&Signal::ImageFsInodesFree].available, 2000);
        assert!(!o.contains_key(&Signal::ContainerFsAvailable));
        assert_eq!(o[&Signal::PidAvailable].available, 4_194_304 - 300);
    }

    #[test]
    fn thresholds_are_met_below_their_quantity_or_percentage_and_until_min_reclaim() {
        let o = observe(&summary());
        let t = [
            threshold(Signal::MemoryAvailable, "1500Mi", None),
            threshold(Signal::MemoryAvailable, "30%", None),
            threshold(Signal::NodeFsAvailable, "10%", Some("1Gi")),
            threshold(Signal::ImageFsAvailable, "5%", None),
        ];
        let met = thresholds_met(&t, &o, false);
        let values: Vec<String> = met.iter().map(|t| t.value.to_string()).collect();
        // 1 GiB available: below 1500Mi and below 30% of 4 GiB; nodefs exactly at 10%: not met.
        assert_eq!(values, ["1500Mi", "30%"]);
        // With min reclaim, nodefs needs 10% + 1Gi available.
        let met = thresholds_met(&t[2..], &o, true);
        assert_eq!(met.len(), 1);
        assert_eq!(met[0].signal, Signal::NodeFsAvailable);
    }

    #[test]
    fn conditions_resources_and_priority() {
        assert_eq!(
            NodeCondition::of(Signal::AllocatableMemoryAvailable),
            NodeCondition::Memory
        );
        assert_eq!(
            NodeCondition::of(Signal::ImageFsInodesFree),
            NodeCondition::Disk
        );
        assert_eq!(NodeCondition::of(Signal::PidAvailable), NodeCondition::Pid);
        let mut t = vec![
            threshold(Signal::NodeFsAvailable, "1Gi", None),
            threshold(Signal::PidAvailable, "100", None),
            threshold(Signal::MemoryAvailable, "1Gi", None),
        ];
        by_eviction_priority(&mut t);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(format_bytes(100 << 20), "100Mi");
        assert_eq!(format_bytes(83_886_081), "83886081");
    }
}
