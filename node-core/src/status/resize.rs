//! The in-place resize part of a pod's status (upstream `convertContainerStatusResources` and
//! the resize conditions): each container's `allocatedResources` (its allocated requests),
//! a running container's `resources` as the runtime applied them, `PodResizePending` for a
//! resize the node did not allocate, and `PodResizeInProgress` while a running container's
//! applied resources differ from its allocation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus as ApiContainerStatus, PodCondition, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::downward::parse_quantity;
use crate::qos::{milli_cpu_to_quota, milli_cpu_to_shares};
pub(super) use crate::resize::RESIZE_ERROR;
use crate::resize::{POD_RESIZE_IN_PROGRESS, POD_RESIZE_PENDING, Pending};
use crate::runtime::{ContainerResources, ContainerState, PodStatus};

type List = BTreeMap<String, ApiQuantity>;

/// Millicores for CPU shares (upstream `SharesToMilliCPU`).
fn shares_to_milli(shares: i64) -> i64 {
    if shares < 2 {
        return 0;
    }
    (shares * 1000 + 1023) / 1024
}

fn milli(m: i64) -> ApiQuantity {
    ApiQuantity(format!("{m}m"))
}

/// What the runtime applied, as requests and limits: the allocated values where the applied
/// ones are what they become, the applied ones otherwise. Also whether they differ.
fn applied(spec: &Container, actual: &ContainerResources) -> (ResourceRequirements, bool) {
    let r = spec.resources.as_ref();
    let mut requests: List = r.and_then(|r| r.requests.clone()).unwrap_or_default();
    let mut limits: List = r.and_then(|r| r.limits.clone()).unwrap_or_default();
    let mut differs = false;
    let cpu_request = parse_quantity(Some(&requests), "cpu").map(|q| q.milli_value());
    let cpu_limit = parse_quantity(Some(&limits), "cpu").map(|q| q.milli_value());
    // The request as the shares went: a container with a limit only gets shares from it.
    let wanted_shares = milli_cpu_to_shares(cpu_request.or(cpu_limit).unwrap_or(0));
    if u64::try_from(actual.cpu_shares).ok() != Some(wanted_shares) {
        differs = true;
        requests.insert("cpu".into(), milli(shares_to_milli(actual.cpu_shares)));
    }
    if actual.cpu_period > 0 {
        let wanted = milli_cpu_to_quota(cpu_limit.unwrap_or(0), actual.cpu_period);
        let quota = actual.cpu_quota.max(0);
        if wanted != quota {
            differs = true;
            if quota > 0 {
                limits.insert("cpu".into(), milli(quota * 1000 / actual.cpu_period));
            } else {
                limits.remove("cpu");
            }
        }
    }
    let memory_limit = parse_quantity(Some(&limits), "memory").map_or(0, |q| q.value());
    if memory_limit != actual.memory_limit.max(0) {
        differs = true;
        if actual.memory_limit > 0 {
            limits.insert(
                "memory".into(),
                ApiQuantity(actual.memory_limit.to_string()),
            );
        } else {
            limits.remove("memory");
        }
    }
    let resources = ResourceRequirements {
        requests: Some(requests).filter(|l| !l.is_empty()),
        limits: Some(limits).filter(|l| !l.is_empty()),
        ..Default::default()
    };
    (resources, differs)
}

/// Fills the resize fields of the statuses of `containers` (regular ones, or sidecars);
/// returns whether a running one's applied resources differ from its allocation.
pub(super) fn fill(
    containers: &[&Container],
    runtime: &PodStatus,
    statuses: &mut [ApiContainerStatus],
) -> bool {
    let mut in_progress = false;
    for status in statuses.iter_mut() {
        let Some(spec) = containers.iter().find(|c| c.name == status.name) else {
            continue;
        };
        status.allocated_resources = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .filter(|l| !l.is_empty());
        let newest = runtime.containers_named(&spec.name).next();
        let Some(actual) = newest
            .filter(|c| c.state == ContainerState::Running)
            .and_then(|c| c.resources.as_ref())
        else {
            continue;
        };
        let (resources, differs) = applied(spec, actual);
        in_progress |= differs;
        status.resources = Some(resources);
    }
    in_progress
}

/// Adds `PodResizePending` for a resize the node did not allocate and `PodResizeInProgress`
/// while one is being applied (reason `Error` and the error's message when the last attempt
/// failed).
pub(super) fn conditions(
    pending: Option<&Pending>,
    in_progress: bool,
    failed: Option<&crate::runtime::SyncError>,
    conditions: &mut Vec<PodCondition>,
    generation: Option<i64>,
) {
    let condition = |kind: &str, reason: Option<&str>, message: Option<String>| PodCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: reason.map(str::to_string),
        message,
        observed_generation: generation,
        ..Default::default()
    };
    if let Some(p) = pending {
        conditions.push(condition(
            POD_RESIZE_PENDING,
            Some(p.reason),
            Some(p.message.clone()),
        ));
    }
    if in_progress {
        conditions.push(match failed {
            Some(e) => condition(
                POD_RESIZE_IN_PROGRESS,
                Some("Error"),
                Some(e.message.clone()),
            ),
            None => condition(POD_RESIZE_IN_PROGRESS, None, None),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |l: &[(&str, &str)]| {
            Some(
                l.iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect(),
            )
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn applied_resources_read_back_and_differences_show() {
        let spec = container(
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "500m"), ("memory", "128Mi")],
        );
        let exact = ContainerResources {
            cpu_shares: 256,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit: 128 << 20,
        };
        let (r, differs) = applied(&spec, &exact);
        assert!(!differs);
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "128Mi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "250m");
        // The runtime still has the old memory limit and cpu limit.
        let old = ContainerResources {
            cpu_quota: 20_000,
            memory_limit: 64 << 20,
            ..exact
        };
        let (r, differs) = applied(&spec, &old);
        assert!(differs);
        assert_eq!(
            r.limits.as_ref().unwrap()["memory"].0,
            (64u64 << 20).to_string()
        );
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "200m");
    }
}
