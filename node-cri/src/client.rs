//! A CRI v1 client over the runtime's unix socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{CriError, Result};
use node_core::metrics::KubeletMetrics;

/// The upstream kubelet's default `runtimeRequestTimeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest CRI message accepted, as upstream's remote runtime client (16 MiB).
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Options of a [`CriClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of each unary call (the kubelet's `runtimeRequestTimeout`, default 2m).
    pub request_timeout: Duration,
    /// Deadline of an image pull; `None` lets a pull run as long as it makes progress, as
    /// upstream does.
    pub pull_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pull_timeout: None,
        }
    }
}

/// How long [`CriClient::container_events`] waits for the runtime's answer before it hands
/// out a stream that keeps waiting.
pub const EVENTS_ANSWER_WINDOW: Duration = Duration::from_millis(500);

/// A stream of container lifecycle events from `GetContainerEvents`.
pub type ContainerEventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse>> + Send + 'static>>;

/// A client of a CRI v1 runtime and image service.
///
/// Cheap to clone: clones share the connection. The connection is made on first use and made
/// again after the runtime restarts, so a client outlives a runtime restart; calls made while
/// the runtime is down fail with [`CriError::Unreachable`].
#[derive(Clone, Debug)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    runtime_socket: PathBuf,
    image_socket: PathBuf,
    options: ClientOptions,
    /// Where calls are counted (`kubelet_runtime_operations_*`), when set.
    metrics: Option<Arc<KubeletMetrics>>,
}

/// Parses a runtime endpoint (`unix:///run/containerd/containerd.sock` or an absolute socket
/// path) into the socket path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let invalid = |reason| CriError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if endpoint.contains("://") {
        return Err(invalid("only unix:// endpoints are supported"));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(invalid("the socket path is empty"));
    }
    if !path.starts_with('/') {
        return Err(invalid("the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    Endpoint::from_static("http://cri.invalid").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        },
    ))
}

impl CriClient {
    /// Connects to the runtime at `endpoint` (image service on the same socket) and checks that
    /// it answers `Version`.
    pub async fn connect(endpoint: &str, options: ClientOptions) -> Result<Self> {
        let client = Self::connect_lazy(endpoint, endpoint, options)?;
        client.version().await?;
        Ok(client)
    }

    /// Makes a client for a runtime and an image service endpoint (they may be the same)
    /// without dialling: the first call connects.
    pub fn connect_lazy(
        runtime_endpoint: &str,
        image_endpoint: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let runtime_socket = socket_path(runtime_endpoint)?;
        let image_socket = socket_path(image_endpoint)?;
        let runtime_channel = channel(&runtime_socket);
        let image_channel = if image_socket == runtime_socket {
            runtime_channel.clone()
        } else {
            channel(&image_socket)
        };
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(runtime_channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(image_channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            runtime_socket,
            image_socket,
            options,
            metrics: None,
        })
    }

    /// Counts every call of this client (and of its clones made afterwards) in `metrics`:
    /// `kubelet_runtime_operations_total`, `_errors_total` and `_duration_seconds` by
    /// upstream's operation type.
    pub fn with_metrics(mut self, metrics: Arc<KubeletMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn observe(&self, call: &'static str, started: std::time::Instant, failed: bool) {
        if let Some(m) = &self.metrics {
            m.observe_runtime_operation(call, started.elapsed(), failed);
        }
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The runtime service's socket path.
    pub fn runtime_socket(&self) -> &Path {
        &self.runtime_socket
    }

    /// The runtime service's gRPC client, for calls this type does not wrap.
    pub fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The image service's gRPC client, for calls this type does not wrap.
    pub fn image_service(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    fn request<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Runs one unary call with a deadline (sent to the runtime too) and turns its failure into
    /// a [`CriError`] that names the call and the object.
    async fn unary<C, Req, T, Fut>(
        call: &'static str,
        object: impl FnOnce() -> String,
        socket: &Path,
        timeout: Option<Duration>,
        client: C,
        message: Req,
        send: impl FnOnce(C, tonic::Request<Req>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = std::time::Instant::now();
        let response = send(client, Self::request(message, timeout));
        let outcome = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, response).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(CriError::Timeout {
                        call,
                        object: object(),
                        timeout,
                    });
                }
            },
            None => response.await,
        };
        tracing::trace!(
            call,
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = outcome.is_ok(),
            "CRI call"
        );
        outcome
            .map(tonic::Response::into_inner)
            .map_err(|status| status_error(call, object(), socket, timeout, status))
    }

    /// A RuntimeService call.
    async fn runtime_call<Req, T, Fut>(
        &self,
        call: &'static str,
        object: impl FnOnce() -> String,
        timeout: Option<Duration>,
        message: Req,
        send: impl FnOnce(RuntimeServiceClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.runtime.clone();
        let started = std::time::Instant::now();
        let result = Self::unary(
            call,
            object,
            &self.runtime_socket,
            timeout,
            client,
            message,
            send,
        )
        .await;
        self.observe(call, started, result.is_err());
        result
    }

    /// An ImageService call.
    async fn image_call<Req, T, Fut>(
        &self,
        call: &'static str,
        object: impl FnOnce() -> String,
        timeout: Option<Duration>,
        message: Req,
        send: impl FnOnce(ImageServiceClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.images.clone();
        let started = std::time::Instant::now();
        let result = Self::unary(
            call,
            object,
            &self.image_socket,
            timeout,
            client,
            message,
            send,
        )
        .await;
        self.observe(call, started, result.is_err());
        result
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.options.request_timeout)
    }

    // ---- RuntimeService ----

    /// `Version`: the runtime's name and versions.
    pub async fn version(&self) -> Result<cri::VersionResponse> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        self.runtime_call(
            "Version",
            String::new,
            self.timeout(),
            req,
            |mut c, r| async move { c.version(r).await },
        )
        .await
    }

    /// `Status`: the runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub async fn status(&self, verbose: bool) -> Result<cri::StatusResponse> {
        let req = cri::StatusRequest { verbose };
        self.runtime_call(
            "Status",
            String::new,
            self.timeout(),
            req,
            |mut c, r| async move { c.status(r).await },
        )
        .await
    }

    /// `RuntimeConfig`: the runtime's configuration the kubelet must agree with (cgroup driver).
    pub async fn runtime_config(&self) -> Result<cri::RuntimeConfigResponse> {
        self.runtime_call(
            "RuntimeConfig",
            String::new,
            self.timeout(),
            cri::RuntimeConfigRequest {},
            |mut c, r| async move { c.runtime_config(r).await },
        )
        .await
    }

    /// `RunPodSandbox`: creates and starts a pod sandbox; returns its id.
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let object = sandbox_object(&config);
        // Sandbox creation includes network set-up: twice the request timeout, as upstream's
        // CRI client.
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.into(),
        };
        let resp = self
            .runtime_call(
                "RunPodSandbox",
                || object,
                Some(self.options.request_timeout * 2),
                req,
                |mut c, r| async move { c.run_pod_sandbox(r).await },
            )
            .await?;
        Ok(resp.pod_sandbox_id)
    }

    /// `StopPodSandbox`: stops the sandbox and its containers and tears down its network.
    pub async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        self.runtime_call(
            "StopPodSandbox",
            || format!("pod sandbox {pod_sandbox_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.stop_pod_sandbox(r).await },
        )
        .await
        .map(drop)
    }

    /// `RemovePodSandbox`: removes a stopped sandbox and its containers.
    pub async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        self.runtime_call(
            "RemovePodSandbox",
            || format!("pod sandbox {pod_sandbox_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.remove_pod_sandbox(r).await },
        )
        .await
        .map(drop)
    }

    /// `PodSandboxStatus`: state, network and metadata of one sandbox.
    pub async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            verbose,
        };
        self.runtime_call(
            "PodSandboxStatus",
            || format!("pod sandbox {pod_sandbox_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.pod_sandbox_status(r).await },
        )
        .await
    }

    /// `ListPodSandbox`: the sandboxes that match `filter`.
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let req = cri::ListPodSandboxRequest { filter };
        let resp = self
            .runtime_call(
                "ListPodSandbox",
                String::new,
                self.timeout(),
                req,
                |mut c, r| async move { c.list_pod_sandbox(r).await },
            )
            .await?;
        Ok(resp.items)
    }

    /// `CreateContainer`: creates a container in a sandbox; returns its id.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let resp = self
            .runtime_call(
                "CreateContainer",
                || format!("container {name:?} in pod sandbox {pod_sandbox_id}"),
                self.timeout(),
                req,
                |mut c, r| async move { c.create_container(r).await },
            )
            .await?;
        Ok(resp.container_id)
    }

    /// `StartContainer`.
    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        let req = cri::StartContainerRequest {
            container_id: container_id.into(),
        };
        self.runtime_call(
            "StartContainer",
            || format!("container {container_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.start_container(r).await },
        )
        .await
        .map(drop)
    }

    /// `StopContainer`: SIGTERM (or the image's stop signal), then SIGKILL after
    /// `grace_period_seconds`. The call's deadline is the grace period plus the request timeout,
    /// as upstream.
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace_period_seconds: i64,
    ) -> Result<()> {
        let timeout = self.options.request_timeout
            + Duration::from_secs(u64::try_from(grace_period_seconds).unwrap_or(0));
        let req = cri::StopContainerRequest {
            container_id: container_id.into(),
            timeout: grace_period_seconds,
        };
        self.runtime_call(
            "StopContainer",
            || format!("container {container_id}"),
            Some(timeout),
            req,
            |mut c, r| async move { c.stop_container(r).await },
        )
        .await
        .map(drop)
    }

    /// `RemoveContainer`: removes a container (killing it first if it runs).
    pub async fn remove_container(&self, container_id: &str) -> Result<()> {
        let req = cri::RemoveContainerRequest {
            container_id: container_id.into(),
        };
        self.runtime_call(
            "RemoveContainer",
            || format!("container {container_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.remove_container(r).await },
        )
        .await
        .map(drop)
    }

    /// `ListContainers`: the containers that match `filter` (id, state, sandbox, labels).
    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let req = cri::ListContainersRequest { filter };
        let resp = self
            .runtime_call(
                "ListContainers",
                String::new,
                self.timeout(),
                req,
                |mut c, r| async move { c.list_containers(r).await },
            )
            .await?;
        Ok(resp.containers)
    }

    /// `ContainerStatus`: state, exit code, reason and timestamps of one container.
    pub async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatus> {
        let resp = self
            .container_status_response(container_id, verbose)
            .await?;
        resp.status.ok_or_else(|| CriError::MissingField {
            call: "ContainerStatus",
            object: format!("container {container_id}"),
            field: "status",
        })
    }

    async fn container_status_response(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse> {
        let req = cri::ContainerStatusRequest {
            container_id: container_id.into(),
            verbose,
        };
        self.runtime_call(
            "ContainerStatus",
            || format!("container {container_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.container_status(r).await },
        )
        .await
    }

    /// The host PID of a container's first process, from the runtime's verbose
    /// `ContainerStatus` (containerd's `info.pid`); `None` when the runtime does not say (a
    /// container not running, or a runtime without that detail).
    pub async fn container_pid(&self, container_id: &str) -> Result<Option<u32>> {
        let resp = self.container_status_response(container_id, true).await?;
        let pid = resp
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info.get("pid").and_then(serde_json::Value::as_u64))
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0);
        Ok(pid)
    }

    /// `UpdateContainerResources`: changes a running container's Linux resources.
    pub async fn update_container_resources(
        &self,
        container_id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let req = cri::UpdateContainerResourcesRequest {
            container_id: container_id.into(),
            linux,
            ..Default::default()
        };
        self.runtime_call(
            "UpdateContainerResources",
            || format!("container {container_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.update_container_resources(r).await },
        )
        .await
        .map(drop)
    }

    /// `ReopenContainerLog`: asks the runtime to reopen a container's log file (after
    /// rotation).
    pub async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        let req = cri::ReopenContainerLogRequest {
            container_id: container_id.into(),
        };
        self.runtime_call(
            "ReopenContainerLog",
            || format!("container {container_id}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.reopen_container_log(r).await },
        )
        .await
        .map(drop)
    }

    /// `ExecSync`: runs `cmd` in a container and returns its stdout, stderr and exit code.
    /// `timeout` of zero means none; otherwise the call's deadline is `timeout` plus the request
    /// timeout, as upstream.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse> {
        let deadline = (!timeout.is_zero()).then(|| timeout + self.options.request_timeout);
        let req = cri::ExecSyncRequest {
            container_id: container_id.into(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        self.runtime_call(
            "ExecSync",
            || format!("container {container_id}"),
            deadline,
            req,
            |mut c, r| async move { c.exec_sync(r).await },
        )
        .await
    }

    /// `Exec`: prepares a streaming exec; returns the URL of the runtime's streaming server.
    pub async fn exec(&self, request: cri::ExecRequest) -> Result<String> {
        let id = request.container_id.clone();
        let resp = self
            .runtime_call(
                "Exec",
                || format!("container {id}"),
                self.timeout(),
                request,
                |mut c, r| async move { c.exec(r).await },
            )
            .await?;
        Ok(resp.url)
    }

    /// `Attach`: prepares a streaming attach; returns the streaming server URL.
    pub async fn attach(&self, request: cri::AttachRequest) -> Result<String> {
        let id = request.container_id.clone();
        let resp = self
            .runtime_call(
                "Attach",
                || format!("container {id}"),
                self.timeout(),
                request,
                |mut c, r| async move { c.attach(r).await },
            )
            .await?;
        Ok(resp.url)
    }

    /// `PortForward`: prepares a port forward into a sandbox; returns the streaming server URL.
    pub async fn port_forward(&self, pod_sandbox_id: &str, ports: Vec<i32>) -> Result<String> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            port: ports,
        };
        let resp = self
            .runtime_call(
                "PortForward",
                || format!("pod sandbox {pod_sandbox_id}"),
                self.timeout(),
                req,
                |mut c, r| async move { c.port_forward(r).await },
            )
            .await?;
        Ok(resp.url)
    }

    /// `ContainerStats`: CPU, memory and writable-layer usage of one container.
    pub async fn container_stats(&self, container_id: &str) -> Result<cri::ContainerStats> {
        let req = cri::ContainerStatsRequest {
            container_id: container_id.into(),
        };
        let resp = self
            .runtime_call(
                "ContainerStats",
                || format!("container {container_id}"),
                self.timeout(),
                req,
                |mut c, r| async move { c.container_stats(r).await },
            )
            .await?;
        resp.stats.ok_or_else(|| CriError::MissingField {
            call: "ContainerStats",
            object: format!("container {container_id}"),
            field: "stats",
        })
    }

    /// `ListContainerStats`: stats of the containers that match `filter`.
    pub async fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Result<Vec<cri::ContainerStats>> {
        let req = cri::ListContainerStatsRequest { filter };
        let resp = self
            .runtime_call(
                "ListContainerStats",
                String::new,
                self.timeout(),
                req,
                |mut c, r| async move { c.list_container_stats(r).await },
            )
            .await?;
        Ok(resp.stats)
    }

    /// `PodSandboxStats`: CPU, memory, network and process stats of one sandbox.
    pub async fn pod_sandbox_stats(&self, pod_sandbox_id: &str) -> Result<cri::PodSandboxStats> {
        let req = cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
        };
        let resp = self
            .runtime_call(
                "PodSandboxStats",
                || format!("pod sandbox {pod_sandbox_id}"),
                self.timeout(),
                req,
                |mut c, r| async move { c.pod_sandbox_stats(r).await },
            )
            .await?;
        resp.stats.ok_or_else(|| CriError::MissingField {
            call: "PodSandboxStats",
            object: format!("pod sandbox {pod_sandbox_id}"),
            field: "stats",
        })
    }

    /// `ListPodSandboxStats`: stats of the sandboxes that match `filter`.
    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Result<Vec<cri::PodSandboxStats>> {
        let req = cri::ListPodSandboxStatsRequest { filter };
        let resp = self
            .runtime_call(
                "ListPodSandboxStats",
                String::new,
                self.timeout(),
                req,
                |mut c, r| async move { c.list_pod_sandbox_stats(r).await },
            )
            .await?;
        Ok(resp.stats)
    }

    /// `UpdateRuntimeConfig`: tells the runtime the node's pod CIDR.
    pub async fn update_runtime_config(&self, pod_cidr: &str) -> Result<()> {
        let req = cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: pod_cidr.into(),
                }),
            }),
        };
        self.runtime_call(
            "UpdateRuntimeConfig",
            || format!("pod CIDR {pod_cidr}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.update_runtime_config(r).await },
        )
        .await
        .map(drop)
    }

    /// `GetContainerEvents`: a stream of container created / started / stopped / deleted
    /// events. Runtimes without it (containerd 1.6) give an error for which
    /// [`CriError::is_unimplemented`] is true, either here or as the stream's first item.
    ///
    /// containerd answers the call only with its first event, so a quiet runtime leaves it
    /// pending: failures (no runtime there, no such method) come back here when the runtime
    /// answers within [`EVENTS_ANSWER_WINDOW`]; otherwise the stream is handed out and waits
    /// for the runtime's answer and its events without a deadline.
    pub async fn container_events(&self) -> Result<ContainerEventStream> {
        let socket = self.runtime_socket.clone();
        let client = self.runtime.clone();
        let open_socket = socket.clone();
        let mut open = Box::pin(async move {
            Self::unary(
                "GetContainerEvents",
                String::new,
                &open_socket,
                None,
                client,
                cri::GetEventsRequest {},
                |mut c, r| async move { c.get_container_events(r).await },
            )
            .await
        });
        let map = move |item: std::result::Result<cri::ContainerEventResponse, tonic::Status>| {
            item.map_err(|status| {
                status_error("GetContainerEvents", String::new(), &socket, None, status)
            })
        };
        match tokio::time::timeout(EVENTS_ANSWER_WINDOW, &mut open).await {
            Ok(answered) => Ok(Box::pin(answered?.map(map))),
            Err(_) => Ok(Box::pin(
                futures::stream::once(open)
                    .map(move |opened| match opened {
                        Ok(stream) => stream.map(map.clone()).boxed(),
                        Err(e) => futures::stream::iter([Err(e)]).boxed(),
                    })
                    .flatten(),
            )),
        }
    }

    // ---- ImageService ----

    /// `ListImages`: the images that match `filter`.
    pub async fn list_images(&self, filter: Option<cri::ImageFilter>) -> Result<Vec<cri::Image>> {
        let req = cri::ListImagesRequest { filter };
        let resp = self
            .image_call(
                "ListImages",
                String::new,
                self.timeout(),
                req,
                |mut c, r| async move { c.list_images(r).await },
            )
            .await?;
        Ok(resp.images)
    }

    /// `ImageStatus`: the image, or `None` when the runtime does not have it.
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let req = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let resp = self
            .image_call(
                "ImageStatus",
                || format!("image {image:?}"),
                self.timeout(),
                req,
                |mut c, r| async move { c.image_status(r).await },
            )
            .await?;
        Ok(resp.image)
    }

    /// `PullImage`: pulls `image` with optional registry credentials; returns the image
    /// reference the runtime stored (usually a digest).
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String> {
        let timeout = self.options.pull_timeout;
        let req = cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config,
        };
        let resp = self
            .image_call(
                "PullImage",
                || format!("image {image:?}"),
                timeout,
                req,
                |mut c, r| async move { c.pull_image(r).await },
            )
            .await?;
        Ok(resp.image_ref)
    }

    /// `RemoveImage`.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let req = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.image_call(
            "RemoveImage",
            || format!("image {image:?}"),
            self.timeout(),
            req,
            |mut c, r| async move { c.remove_image(r).await },
        )
        .await
        .map(drop)
    }

    /// `ImageFsInfo`: usage of the filesystems that hold images and container layers.
    pub async fn image_fs_info(&self) -> Result<cri::ImageFsInfoResponse> {
        self.image_call(
            "ImageFsInfo",
            String::new,
            self.timeout(),
            cri::ImageFsInfoRequest {},
            |mut c, r| async move { c.image_fs_info(r).await },
        )
        .await
    }
}

/// An `ImageSpec` for a reference.
pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

fn sandbox_object(config: &cri::PodSandboxConfig) -> String {
    match &config.metadata {
        Some(m) => format!("for pod {}/{} ({})", m.namespace, m.name, m.uid),
        None => "for a pod without metadata".into(),
    }
}

/// Turns a failed call's status into a [`CriError`]; a connection failure becomes
/// [`CriError::Unreachable`] with the reason the socket could not be dialled.
fn status_error(
    call: &'static str,
    object: String,
    socket: &Path,
    timeout: Option<Duration>,
    status: tonic::Status,
) -> CriError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown if is_transport_failure(&status) => {
            let reason = if !socket.exists() {
                "no such socket".to_string()
            } else {
                error_chain(&status)
            };
            CriError::Unreachable {
                call,
                object,
                endpoint: format!("unix://{}", socket.display()),
                reason,
            }
        }
        // Our deadline passed: tonic reports its own timer as Cancelled("Timeout expired"),
        // the runtime reports DeadlineExceeded.
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled if timeout.is_some() => {
            CriError::Timeout {
                call,
                object,
                timeout: timeout.unwrap_or_default(),
            }
        }
        code => CriError::Status {
            call,
            object,
            code,
            message: status.message().to_string(),
        },
    }
}

fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.code() == tonic::Code::Unavailable
        || status
            .source()
            .is_some_and(|s| s.is::<tonic::transport::Error>())
}

fn error_chain(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut out = status.message().to_string();
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "unix://", "relative.sock", ""] {
            let err = socket_path(bad).unwrap_err();
            assert!(
                matches!(err, CriError::InvalidEndpoint { ref endpoint, .. } if endpoint == bad),
                "{bad}: {err}"
            );
        }
    }
}
