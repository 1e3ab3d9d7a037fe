//! The feature gates this workspace reads, with their defaults in Kubernetes v1.36.
//!
//! A gate missing here is off unless `featureGates` turns it on: the kubelet only consults the
//! gates it implements.

/// `(gate, on by default in v1.36)`.
pub const DEFAULTS: &[(&str, bool)] = &[
    // Alpha.
    ("ContainerStopSignals", false),
    ("CustomCPUCFSQuotaPeriod", false),
    ("MemoryQoS", false),
    ("NodeLogQuery", false),
    ("RestartAllContainersOnContainerExits", false),
    // Beta, on.
    ("ContainerRestartRules", true),
    ("KubeletCrashLoopBackOffMax", true),
    ("PodLevelResources", true),
    ("SupplementalGroupsPolicy", true),
    ("UserNamespacesSupport", true),
    // GA.
    ("InPlacePodVerticalScaling", true),
    ("NodeSwap", true),
];

/// Whether `gate` is on when `featureGates` does not mention it.
pub fn default_enabled(gate: &str) -> bool {
    DEFAULTS
        .iter()
        .find(|(name, _)| *name == gate)
        .is_some_and(|(_, on)| *on)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_gates_are_on_and_alpha_or_unknown_ones_off() {
        assert!(default_enabled("KubeletCrashLoopBackOffMax"));
        assert!(default_enabled("InPlacePodVerticalScaling"));
        assert!(!default_enabled("CustomCPUCFSQuotaPeriod"));
        assert!(!default_enabled("NoSuchGate"));
    }
}
