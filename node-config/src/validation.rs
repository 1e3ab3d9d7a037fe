//! Validation of a resolved configuration, after upstream
//! `pkg/kubelet/apis/config/validation/validation.go` (v1.36) for the fields this crate models,
//! plus the checks the upstream kubelet makes elsewhere at start-up (reserved resources,
//! eviction thresholds, cgroup driver).

use std::path::Path;
use std::time::Duration;

use crate::error::{ConfigError, FieldError};
use crate::eviction::check_maps;
use crate::types::{KubeletConfiguration, NodeAllocatableEnforcement};

impl KubeletConfiguration {
    /// Checks every rule and returns all problems at once as [`ConfigError::Invalid`], each
    /// naming its field (`imageGCHighThresholdPercent`, `evictionHard[memory.available]`,
    /// `registerWithTaints[0].key`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        self.collect_errors(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { errors })
        }
    }

    pub(crate) fn collect_errors(&self, errors: &mut Vec<FieldError>) {
        let mut err = |field: &str, message: String| errors.push(FieldError::new(field, message));

        if self.port == 0 {
            err("port", "0 must be between 1 and 65535, inclusive".into());
        }
        // Upstream's messages, word for word (the first names the wrong field upstream too).
        if self.enable_system_log_query && self.feature_gate("NodeLogQuery") != Some(true) {
            err(
                "enableSystemLogQuery",
                "invalid configuration: NodeLogQuery feature gate is required for enableSystemLogHandler".into(),
            );
        }
        let factor = self.memory_throttling_factor;
        if self.feature_gate("MemoryQoS") == Some(true) && !(factor > 0.0 && factor <= 1.0) {
            err(
                "memoryThrottlingFactor",
                format!("{factor} must be greater than 0 and less than or equal to 1.0"),
            );
        }
        // Upstream's messages, word for word.
        let period = self.cpu_cfs_quota_period;
        if self.feature_enabled("CustomCPUCFSQuotaPeriod") {
            if period < Duration::from_millis(1) || period > Duration::from_secs(1) {
                err(
                    "cpuCFSQuotaPeriod",
                    format!(
                        "invalid configuration: cpuCFSQuotaPeriod (--cpu-cfs-quota-period) {} must be between 1ms and 1sec, inclusive",
                        go(period)
                    ),
                );
            }
        } else if period != Duration::from_millis(100) {
            err(
                "cpuCFSQuotaPeriod",
                format!(
                    "invalid configuration: cpuCFSQuotaPeriod (--cpu-cfs-quota-period) {} requires feature gate CustomCPUCFSQuotaPeriod",
                    go(period)
                ),
            );
        }
        if let Some(max) = self.max_container_restart_period {
            if !self.feature_enabled("KubeletCrashLoopBackOffMax") {
                err(
                    "crashLoopBackOff.maxContainerRestartPeriod",
                    "invalid configuration: FeatureGate KubeletCrashLoopBackOffMax not enabled, CrashLoopBackOff.MaxContainerRestartPeriod must not be set".into(),
                );
            }
            if max < Duration::from_secs(1) || max > Duration::from_secs(300) {
                err(
                    "crashLoopBackOff.maxContainerRestartPeriod",
                    format!(
                        "invalid configuration: CrashLoopBackOff.MaxContainerRestartPeriod (got: {} seconds) must be set between 1s and 5m0s",
                        max.as_secs_f64()
                    ),
                );
            }
        }
        if self.enable_system_log_query && !self.enable_system_log_handler {
            err(
                "enableSystemLogQuery",
                "invalid configuration: enableSystemLogHandler is required for enableSystemLogQuery".into(),
            );
        }
        if self.node_lease_duration_seconds == 0 {
            err("nodeLeaseDurationSeconds", "must be greater than 0".into());
        }
        if self.system_cgroups.is_some() && self.cgroup_root.is_none() {
            err(
                "systemCgroups",
                "cgroupRoot must be specified when systemCgroups is".into(),
            );
        }
        let high = self.image_gc_high_threshold_percent;
        let low = self.image_gc_low_threshold_percent;
        if high > 100 {
            err(
                "imageGCHighThresholdPercent",
                format!("{high} must be between 0 and 100, inclusive"),
            );
        }
        if low > 100 {
            err(
                "imageGCLowThresholdPercent",
                format!("{low} must be between 0 and 100, inclusive"),
            );
        }
        if low >= high {
            err(
                "imageGCLowThresholdPercent",
                format!("{low} must be less than imageGCHighThresholdPercent {high}"),
            );
        }
        let max_age = self.image_maximum_gc_age;
        let min_age = self.image_minimum_gc_age;
        if !max_age.is_zero() && max_age <= min_age {
            err(
                "imageMaximumGCAge",
                format!(
                    "{} must be greater than imageMinimumGCAge {}",
                    go(max_age),
                    go(min_age)
                ),
            );
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            err(
                "oomScoreAdj",
                format!(
                    "{} must be between -1000 and 1000, inclusive",
                    self.oom_score_adj
                ),
            );
        }
        if self.node_status_max_images < -1 {
            err(
                "nodeStatusMaxImages",
                format!("{} must be -1 or greater", self.node_status_max_images),
            );
        }
        match self.max_parallel_image_pulls {
            Some(0) => err(
                "maxParallelImagePulls",
                "0 must be a positive number".into(),
            ),
            Some(n) if n > 1 && self.serialize_image_pulls => err(
                "maxParallelImagePulls",
                format!("{n} cannot be larger than 1 unless serializeImagePulls is false"),
            ),
            _ => {}
        }

        for (i, taint) in self.register_with_taints.iter().enumerate() {
            let field = format!("registerWithTaints[{i}]");
            if let Err(message) = check_qualified_name(&taint.key) {
                err(&format!("{field}.key"), message);
            }
            if let Some(value) = &taint.value
                && let Err(message) = check_label_value(value)
            {
                err(&format!("{field}.value"), message);
            }
        }

        let grace = self.shutdown_grace_period;
        let critical = self.shutdown_grace_period_critical_pods;
        if critical > grace {
            err(
                "shutdownGracePeriodCriticalPods",
                format!(
                    "{} must be <= shutdownGracePeriod {}",
                    go(critical),
                    go(grace)
                ),
            );
        }
        for (field, d) in [
            ("shutdownGracePeriod", grace),
            ("shutdownGracePeriodCriticalPods", critical),
        ] {
            if !d.is_zero() && d < Duration::from_secs(1) {
                err(
                    field,
                    format!("{} must be either zero or otherwise >= 1 sec", go(d)),
                );
            }
        }

        self.check_enforce_node_allocatable(&mut err);

        for (field, d) in [
            ("syncFrequency", self.sync_frequency),
            ("fileCheckFrequency", self.file_check_frequency),
            ("httpCheckFrequency", self.http_check_frequency),
            (
                "nodeStatusUpdateFrequency",
                self.node_status_update_frequency,
            ),
            (
                "nodeStatusReportFrequency",
                self.node_status_report_frequency,
            ),
            ("runtimeRequestTimeout", self.runtime_request_timeout),
            ("volumeStatsAggPeriod", self.volume_stats_agg_period),
        ] {
            if d.is_zero() {
                err(field, "must be greater than 0".into());
            }
        }

        if self.container_runtime_endpoint.is_empty() {
            err(
                "containerRuntimeEndpoint",
                "must be specified and not empty".into(),
            );
        }
        if self.container_log_max_workers < 1 {
            err(
                "containerLogMaxWorkers",
                "must be greater than or equal to 1".into(),
            );
        }
        if self.container_log_monitor_interval < Duration::from_secs(3) {
            err(
                "containerLogMonitorInterval",
                format!(
                    "{} must be a positive time duration greater than or equal to 3s",
                    go(self.container_log_monitor_interval)
                ),
            );
        }
        if self.container_log_max_files <= 1 {
            err(
                "containerLogMaxFiles",
                format!("{} must be greater than 1", self.container_log_max_files),
            );
        }
        if self.container_log_max_size.is_negative() {
            err(
                "containerLogMaxSize",
                format!("{} must not be negative", self.container_log_max_size),
            );
        }
        check_pod_logs_dir(&self.pod_logs_dir, &mut err);

        for (field, map) in [
            ("systemReserved", &self.system_reserved),
            ("kubeReserved", &self.kube_reserved),
        ] {
            for (resource, quantity) in map {
                let path = format!("{field}[{resource}]");
                if !matches!(
                    resource.as_str(),
                    "cpu" | "memory" | "ephemeral-storage" | "pid"
                ) {
                    err(&path, format!("cannot reserve {resource:?} resource"));
                } else if quantity.is_negative() {
                    err(&path, format!("{quantity} must not be negative"));
                }
            }
        }

        let mut map_errors = Vec::new();
        check_maps(
            &self.eviction_hard,
            &self.eviction_soft,
            &self.eviction_soft_grace_period,
            &self.eviction_minimum_reclaim,
            &mut map_errors,
        );
        errors.extend(map_errors);
    }

    fn check_enforce_node_allocatable(&self, err: &mut impl FnMut(&str, String)) {
        use NodeAllocatableEnforcement as E;
        let field = "enforceNodeAllocatable";
        let list = &self.enforce_node_allocatable;
        if list.contains(&E::SystemReserved) && list.contains(&E::SystemReservedCompressible) {
            err(
                field,
                "both \"system-reserved\" and \"system-reserved-compressible\" cannot be specified together"
                    .into(),
            );
        }
        if list.contains(&E::KubeReserved) && list.contains(&E::KubeReservedCompressible) {
            err(
                field,
                "both \"kube-reserved\" and \"kube-reserved-compressible\" cannot be specified together"
                    .into(),
            );
        }
        let mut seen = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let path = format!("{field}[{i}]");
            if seen.contains(entry) {
                err(
                    &path,
                    format!("duplicated enforcement {:?}", entry.as_str()),
                );
                continue;
            }
            seen.push(*entry);
            match entry {
                E::Pods => {}
                E::SystemReserved | E::SystemReservedCompressible => {
                    if self.system_reserved_cgroup.is_none() {
                        err(
                            "systemReservedCgroup",
                            format!(
                                "must be specified when {:?} is in enforceNodeAllocatable",
                                entry.as_str()
                            ),
                        );
                    }
                }
                E::KubeReserved | E::KubeReservedCompressible => {
                    if self.kube_reserved_cgroup.is_none() {
                        err(
                            "kubeReservedCgroup",
                            format!(
                                "must be specified when {:?} is in enforceNodeAllocatable",
                                entry.as_str()
                            ),
                        );
                    }
                }
                E::None => {
                    if list.len() > 1 {
                        err(
                            &path,
                            "\"none\" may not be combined with other enforcements".into(),
                        );
                    }
                    continue;
                }
            }
            if !self.cgroups_per_qos {
                err(
                    "cgroupsPerQOS",
                    format!(
                        "must be true when {:?} is in enforceNodeAllocatable",
                        entry.as_str()
                    ),
                );
            }
        }
    }
}

fn go(d: Duration) -> crate::Duration {
    crate::Duration::from(d)
}

fn check_pod_logs_dir(dir: &Path, err: &mut impl FnMut(&str, String)) {
    let text = dir.to_string_lossy();
    if text.is_empty() {
        err("podLogsDir", "must be specified".into());
        return;
    }
    if !dir.is_absolute() {
        err("podLogsDir", format!("{text:?} must be an absolute path"));
    }
    if clean_path(&text) != text {
        err("podLogsDir", format!("{text:?} must be normalized"));
    }
    if !text.is_ascii() {
        err(
            "podLogsDir",
            format!("{text:?} must contain ASCII characters only"),
        );
    }
}

/// Lexical path clean-up, as Go's `filepath.Clean` (Unix).
pub(crate) fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `validation.IsQualifiedName`: `[prefix/]name`.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!("{key:?}: prefix must be a DNS subdomain"));
    }
    if !is_name_part(name) {
        return Err(format!(
            "{key:?}: name must be 63 characters or less, start and end with an alphanumeric \
             character and contain only alphanumerics, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// `validation.IsValidLabelValue`: empty, or a name part.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} must be 63 characters or less, start and end with an alphanumeric \
             character and contain only alphanumerics, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        for (input, want) in [
            ("/var/log/pods", "/var/log/pods"),
            ("/var/log/pods/", "/var/log/pods"),
            ("/var//log/./pods", "/var/log/pods"),
            ("/var/log/../pods", "/var/pods"),
            ("/..", "/"),
            ("a/../..", ".."),
            ("", "."),
            ("./x", "x"),
        ] {
            assert_eq!(clean_path(input), want, "{input}");
        }
    }

    #[test]
    fn taint_names() {
        assert!(check_qualified_name("node.kubernetes.io/unschedulable").is_ok());
        assert!(check_qualified_name("dedicated").is_ok());
        assert!(check_qualified_name("").is_err());
        assert!(check_qualified_name("-bad").is_err());
        assert!(check_qualified_name("Bad_Prefix/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("gpu").is_ok());
        assert!(check_label_value("a b").is_err());
    }
}
