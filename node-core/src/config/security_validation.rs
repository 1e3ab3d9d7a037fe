//! Static pods' security contexts and container restart rules, validated as the API server
//! validates them (upstream `validatePodSpecSecurityContext`, `ValidateSecurityContext`,
//! `validateSeccompProfileField`, `validateContainerRestartPolicy`): the same field paths and
//! messages.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

use super::error::FieldError;

const ID_RANGE_MSG: &str = "must be between 0 and 2147483647, inclusive";
/// Most rules a container may have (upstream `MaxContainerRestartRules`).
const MAX_RESTART_RULES: usize = 20;
/// Most exit codes one rule may list.
const MAX_RESTART_RULE_VALUES: usize = 255;

fn check_id(value: Option<i64>, field: String, errors: &mut Vec<FieldError>) {
    if let Some(id) = value
        && !(0..=i64::from(i32::MAX)).contains(&id)
    {
        errors.push(FieldError::invalid(field, id, ID_RANGE_MSG));
    }
}

/// The pod's and each container's security context.
pub(crate) fn validate_security(spec: &PodSpec, errors: &mut Vec<FieldError>) {
    let host_users = spec.host_users.unwrap_or(true);
    if let Some(psc) = spec.security_context.as_ref() {
        validate_pod_security_context(psc, errors);
    }
    let lists = [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.into_iter().flatten().enumerate() {
            if let Some(sc) = container.security_context.as_ref() {
                let path = format!("spec.{list}[{i}].securityContext");
                validate_security_context(sc, &path, host_users, errors);
            }
        }
    }
}

fn validate_pod_security_context(psc: &PodSecurityContext, errors: &mut Vec<FieldError>) {
    let path = "spec.securityContext";
    check_id(psc.run_as_user, format!("{path}.runAsUser"), errors);
    check_id(psc.run_as_group, format!("{path}.runAsGroup"), errors);
    check_id(psc.fs_group, format!("{path}.fsGroup"), errors);
    for (i, gid) in psc.supplemental_groups.iter().flatten().enumerate() {
        check_id(
            Some(*gid),
            format!("{path}.supplementalGroups[{i}]"),
            errors,
        );
    }
    let enums = [
        (
            "fsGroupChangePolicy",
            psc.fs_group_change_policy.as_deref(),
            &["OnRootMismatch", "Always"][..],
        ),
        (
            "supplementalGroupsPolicy",
            psc.supplemental_groups_policy.as_deref(),
            &["Merge", "Strict"][..],
        ),
        (
            "seLinuxChangePolicy",
            psc.se_linux_change_policy.as_deref(),
            &["MountOption", "Recursive"][..],
        ),
    ];
    for (field, value, supported) in enums {
        if let Some(value) = value
            && !supported.contains(&value)
        {
            errors.push(FieldError::not_supported(
                format!("{path}.{field}"),
                value,
                supported,
            ));
        }
    }
    if let Some(profile) = psc.seccomp_profile.as_ref() {
        validate_seccomp(profile, &format!("{path}.seccompProfile"), errors);
    }
    if let Some(profile) = psc.app_armor_profile.as_ref() {
        validate_apparmor(profile, &format!("{path}.appArmorProfile"), errors);
    }
}

fn validate_security_context(
    sc: &SecurityContext,
    path: &str,
    host_users: bool,
    errors: &mut Vec<FieldError>,
) {
    check_id(sc.run_as_user, format!("{path}.runAsUser"), errors);
    check_id(sc.run_as_group, format!("{path}.runAsGroup"), errors);
    match sc.proc_mount.as_deref() {
        None | Some("Default") => {}
        Some("Unmasked") if host_users => errors.push(FieldError::invalid_str(
            format!("{path}.procMount"),
            "Unmasked",
            "`hostUsers` must be false to use `Unmasked`",
        )),
        Some("Unmasked") => {}
        Some(other) => errors.push(FieldError::not_supported(
            format!("{path}.procMount"),
            other,
            &["Default", "Unmasked"],
        )),
    }
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errors.push(FieldError::invalid(
                path,
                "securityContext",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let adds_sys_admin = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|add| add.iter().any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"));
        if adds_sys_admin {
            errors.push(FieldError::invalid(
                path,
                "securityContext",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
    if let Some(profile) = sc.seccomp_profile.as_ref() {
        validate_seccomp(profile, &format!("{path}.seccompProfile"), errors);
    }
    if let Some(profile) = sc.app_armor_profile.as_ref() {
        validate_apparmor(profile, &format!("{path}.appArmorProfile"), errors);
    }
}

/// A profile type with an optional localhost name: the type is one of the three, the name is
/// set exactly for `Localhost`, and is a relative path without `..`.
fn validate_profile(
    kind: &str,
    type_: &str,
    localhost: Option<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    match type_ {
        "Localhost" => match localhost {
            None | Some("") => errors.push(FieldError::required(
                format!("{path}.localhostProfile"),
                &format!("must be set when {kind} type is Localhost"),
            )),
            Some(name) => {
                if name.starts_with('/') {
                    errors.push(FieldError::invalid_str(
                        format!("{path}.localhostProfile"),
                        name,
                        "must be a relative path",
                    ));
                } else if name.split('/').any(|part| part == "..") {
                    errors.push(FieldError::invalid_str(
                        format!("{path}.localhostProfile"),
                        name,
                        "must not contain '..'",
                    ));
                }
            }
        },
        "RuntimeDefault" | "Unconfined" => {
            if localhost.is_some() {
                errors.push(FieldError::invalid_str(
                    format!("{path}.localhostProfile"),
                    localhost.unwrap_or_default(),
                    &format!("can only be set when {kind} type is Localhost"),
                ));
            }
        }
        "" => errors.push(FieldError::required(format!("{path}.type"), "")),
        other => errors.push(FieldError::not_supported(
            format!("{path}.type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
}

fn validate_seccomp(profile: &SeccompProfile, path: &str, errors: &mut Vec<FieldError>) {
    validate_profile(
        "seccomp",
        &profile.type_,
        profile.localhost_profile.as_deref(),
        path,
        errors,
    );
}

fn validate_apparmor(profile: &AppArmorProfile, path: &str, errors: &mut Vec<FieldError>) {
    validate_profile(
        "AppArmor",
        &profile.type_,
        profile.localhost_profile.as_deref(),
        path,
        errors,
    );
}

/// A regular container's `restartPolicy` and `restartPolicyRules` (ContainerRestartRules):
/// the policy is one of the three and must be set when rules are; each rule's action is
/// `Restart`, with `exitCodes` whose operator is `In` or `NotIn` and whose values are
/// non-negative and unique.
pub(crate) fn validate_restart_rules(
    container: &Container,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(policy) = container.restart_policy.as_deref()
        && !["Always", "OnFailure", "Never"].contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            &["Always", "Never", "OnFailure"],
        ));
    }
    let rules = container
        .restart_policy_rules
        .as_deref()
        .unwrap_or_default();
    if rules.is_empty() {
        return;
    }
    if container.restart_policy.is_none() {
        errors.push(FieldError::required(
            format!("{path}.restartPolicy"),
            "must specify restartPolicy when restart rules are used",
        ));
    }
    if rules.len() > MAX_RESTART_RULES {
        errors.push(FieldError::forbidden(
            format!("{path}.restartPolicyRules"),
            &format!("must not have more than {MAX_RESTART_RULES} rules"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{path}.restartPolicyRules[{i}]");
        if rule.action != "Restart" {
            errors.push(FieldError::not_supported(
                format!("{rule_path}.action"),
                &rule.action,
                &["Restart"],
            ));
        }
        let Some(codes) = rule.exit_codes.as_ref() else {
            errors.push(FieldError::required(
                format!("{rule_path}.exitCodes"),
                "must be specified",
            ));
            continue;
        };
        if codes.operator != "In" && codes.operator != "NotIn" {
            errors.push(FieldError::not_supported(
                format!("{rule_path}.exitCodes.operator"),
                &codes.operator,
                &["In", "NotIn"],
            ));
        }
        let values = codes.values.as_deref().unwrap_or_default();
        if values.len() > MAX_RESTART_RULE_VALUES {
            errors.push(FieldError::forbidden(
                format!("{rule_path}.exitCodes.values"),
                &format!("must not have more than {MAX_RESTART_RULE_VALUES} elements"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (j, value) in values.iter().enumerate() {
            let field = format!("{rule_path}.exitCodes.values[{j}]");
            if *value < 0 {
                errors.push(FieldError::invalid(
                    field,
                    value,
                    "must be greater than or equal to 0",
                ));
            } else if !seen.insert(*value) {
                errors.push(FieldError {
                    field,
                    message: format!("Duplicate value: {value}"),
                });
            }
        }
    }
}
