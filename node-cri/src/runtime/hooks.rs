//! Lifecycle hooks (upstream `pkg/kubelet/lifecycle`): postStart and preStop handlers,
//! exec (through the runtime, no timeout of its own), HTTP(S) GET (no certificate
//! verification; only a failure to get an answer fails) and sleep. The error messages are
//! upstream's (`Exec lifecycle hook ([sh -c exit 1]) for Container "c" in Pod
//! "p_default(uid)" failed - error: ..., message: "..."`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use node_core::prober::handlers;
use node_core::runtime::{CommandRunner, ContainerId};

/// The longest an HTTP hook waits for its answer when nothing else bounds it (a postStart
/// hook: the container is not reported started meanwhile).
const HTTP_HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// Upstream's `format.Pod`: `name_namespace(uid)`.
fn pod_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs `handler` for `container` (runtime id `id`) of `pod` at `pod_ip`; `Err` is the
/// message of the failure.
pub(crate) async fn run(
    runner: &dyn CommandRunner,
    handler: &LifecycleHandler,
    pod: &Pod,
    container: &Container,
    id: &ContainerId,
    pod_ip: &str,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let failed = |error: String, output: String| {
            format!(
                "Exec lifecycle hook ([{}]) for Container {:?} in Pod {:?} failed - error: {error}, message: {output:?}",
                command.join(" "),
                container.name,
                pod_name(pod)
            )
        };
        return match runner
            .run_in_container(id, command.clone(), Duration::ZERO)
            .await
        {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => {
                let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&out.stderr));
                Err(failed(
                    format!(
                        "command '{}' exited with {}: {}",
                        command.join(" "),
                        out.exit_code,
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    output,
                ))
            }
            Err(e) => Err(failed(e.to_string(), String::new())),
        };
    }
    if let Some(get) = &handler.http_get {
        let failed = |error: String| {
            format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {error}",
                get.path.as_deref().unwrap_or_default(),
                container.name,
                pod_name(pod)
            )
        };
        let port = handlers::resolve_port(&get.port, container).map_err(&failed)?;
        return match tokio::time::timeout(HTTP_HOOK_TIMEOUT, handlers::http_hook(get, pod_ip, port))
            .await
        {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(failed("timed out".into())),
        };
    }
    if let Some(sleep) = &handler.sleep {
        let seconds = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return Ok(());
    }
    Err(format!(
        "cannot run handler: no handler of container {:?} in pod {:?}",
        container.name,
        pod_name(pod)
    ))
}
