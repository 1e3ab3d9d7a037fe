use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ExecAction, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::events::MemoryRecorder;

/// A prober whose outcome per container the test sets; it counts calls per container.
#[derive(Default)]
struct FakeProber {
    outcomes: Mutex<HashMap<String, Outcome>>,
    calls: Mutex<HashMap<String, usize>>,
}

impl FakeProber {
    fn set(&self, container: &str, outcome: Outcome) {
        self.outcomes
            .lock()
            .unwrap()
            .insert(container.into(), outcome);
    }

    fn calls(&self, container: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(container)
            .copied()
            .unwrap_or(0)
    }
}

impl Prober for FakeProber {
    fn probe<'a>(
        &'a self,
        _probe: &'a Probe,
        _pod: &'a Pod,
        _pod_ip: &'a str,
        container: &'a Container,
        _container_id: &'a str,
        _timeout: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, String>> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(container.name.clone())
            .or_default() += 1;
        let outcome = self
            .outcomes
            .lock()
            .unwrap()
            .get(&container.name)
            .cloned()
            .unwrap_or(Outcome::Success(String::new()));
        Box::pin(async move { Ok(outcome) })
    }
}

fn probe(period: i32, failure_threshold: i32, initial_delay: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["true".into()]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        initial_delay_seconds: Some(initial_delay),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(name: &str, id: &str, started: bool) -> ApiContainerStatus {
    ApiContainerStatus {
        name: name.into(),
        container_id: Some(format!("containerd://{id}")),
        started: Some(started),
        ready: true,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(jiff::Timestamp::now())),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Fixture {
    manager: ProbeManager,
    updates: mpsc::Receiver<PodUid>,
    prober: Arc<FakeProber>,
    statuses: Arc<StatusManager>,
    recorder: Arc<MemoryRecorder>,
    results: Arc<ProbeResults>,
}

fn fixture() -> Fixture {
    let statuses = Arc::new(StatusManager::new());
    let prober = Arc::new(FakeProber::default());
    let recorder = Arc::new(MemoryRecorder::default());
    let results = Arc::new(ProbeResults::default());
    let metrics = Arc::new(KubeletMetrics::new("n"));
    let (manager, updates) = ProbeManager::new(
        statuses.clone(),
        prober.clone(),
        recorder.clone(),
        results.clone(),
        Some(metrics),
    );
    Fixture {
        manager,
        updates,
        prober,
        statuses,
        recorder,
        results,
    }
}

fn set_status(f: &Fixture, containers: Vec<ApiContainerStatus>) {
    f.statuses.set(
        "uid-1",
        ApiPodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.1".into()),
            container_statuses: Some(containers),
            ..Default::default()
        },
    );
}

async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn readiness_starts_failed_turns_ready_on_success_and_unready_after_the_threshold() {
    let mut f = fixture();
    let web = Container {
        name: "web".into(),
        readiness_probe: Some(probe(10, 3, 0)),
        ..Default::default()
    };
    set_status(&f, vec![running("web", "a", true)]);
    f.prober.set("web", Outcome::Failure("not yet".into()));
    f.manager.add_pod(&pod(vec![web]));
    advance(Duration::from_secs(11)).await;
    let id = "containerd://a";
    assert_eq!(
        f.results.get(id, ProbeType::Readiness),
        Some(ProbeResult::Failure),
        "a readiness probe starts failed"
    );
    let mut statuses = vec![running("web", "a", true)];
    f.manager.update_container_statuses("uid-1", &mut statuses);
    assert!(!statuses[0].ready);

    f.prober.set("web", Outcome::Success(String::new()));
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        f.results.get(id, ProbeType::Readiness),
        Some(ProbeResult::Success)
    );
    let mut statuses = vec![running("web", "a", true)];
    f.manager.update_container_statuses("uid-1", &mut statuses);
    assert!(statuses[0].ready);
    // The engine was asked to sync the pod.
    let mut told = false;
    while let Ok(uid) = f.updates.try_recv() {
        told |= uid.as_str() == "uid-1";
    }
    assert!(told);

    // Two failures leave it ready; the third makes it unready.
    f.prober.set("web", Outcome::Failure("down".into()));
    advance(Duration::from_secs(20)).await;
    assert_eq!(
        f.results.get(id, ProbeType::Readiness),
        Some(ProbeResult::Success)
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        f.results.get(id, ProbeType::Readiness),
        Some(ProbeResult::Failure)
    );
    let events = f.recorder.events();
    assert!(
        events.iter().any(|e| e.reason == "Unhealthy"
            && e.message == "Readiness probe failed: down"
            && e.object.field_path == "spec.containers{web}"),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_liveness_probe_is_a_verdict_held_until_a_new_container() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        liveness_probe: Some(probe(5, 2, 0)),
        ..Default::default()
    };
    set_status(&f, vec![running("app", "one", true)]);
    f.prober.set("app", Outcome::Failure("dead".into()));
    f.manager.add_pod(&pod(vec![app]));
    // The first probe comes within a period (the random start), the second a period later.
    advance(Duration::from_millis(4900)).await;
    assert_eq!(
        f.results.failed("containerd://one"),
        None,
        "one failure is below 2"
    );
    advance(Duration::from_millis(5200)).await;
    assert_eq!(
        f.results.failed("containerd://one"),
        Some(ProbeType::Liveness)
    );
    // On hold: no more probes of that container.
    let calls = f.prober.calls("app");
    advance(Duration::from_secs(30)).await;
    assert_eq!(f.prober.calls("app"), calls);
    // A new container starts from success.
    f.prober.set("app", Outcome::Success(String::new()));
    set_status(&f, vec![running("app", "two", true)]);
    advance(Duration::from_secs(6)).await;
    assert_eq!(f.results.failed("containerd://two"), None);
    assert_eq!(
        f.results.get("containerd://two", ProbeType::Liveness),
        Some(ProbeResult::Success)
    );
    assert_eq!(
        f.results.get("containerd://one", ProbeType::Liveness),
        None,
        "the old container's result is forgotten"
    );
}

#[tokio::test(start_paused = true)]
async fn the_startup_probe_holds_liveness_and_readiness_back_and_sets_started() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        startup_probe: Some(probe(1, 30, 0)),
        liveness_probe: Some(probe(1, 3, 0)),
        ..Default::default()
    };
    set_status(&f, vec![running("app", "c", false)]);
    f.prober.set("app", Outcome::Failure("starting".into()));
    f.manager.add_pod(&pod(vec![app]));
    advance(Duration::from_secs(5)).await;
    // Only the startup probe ran (the fake counts per container: all calls are startup's,
    // and liveness's result is still its initial success).
    assert_eq!(
        f.results.get("containerd://c", ProbeType::Startup),
        Some(ProbeResult::Unknown)
    );
    assert_eq!(
        f.results.get("containerd://c", ProbeType::Liveness),
        Some(ProbeResult::Success)
    );
    let mut statuses = vec![running("app", "c", false)];
    f.manager.update_container_statuses("uid-1", &mut statuses);
    assert_eq!(statuses[0].started, Some(false));
    assert!(!statuses[0].ready, "not ready before it started");
    f.prober.set("app", Outcome::Success(String::new()));
    advance(Duration::from_secs(2)).await;
    let mut statuses = vec![running("app", "c", false)];
    f.manager.update_container_statuses("uid-1", &mut statuses);
    assert_eq!(statuses[0].started, Some(true));
    assert!(statuses[0].ready, "no readiness probe: ready once started");
}

#[tokio::test(start_paused = true)]
async fn a_startup_probe_that_never_succeeds_fails_after_its_threshold() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        startup_probe: Some(probe(2, 3, 0)),
        ..Default::default()
    };
    set_status(&f, vec![running("app", "c", false)]);
    f.prober.set("app", Outcome::Failure("no".into()));
    f.manager.add_pod(&pod(vec![app]));
    // Failures at t0, t0 + 2 and t0 + 4 s, t0 within the first period.
    advance(Duration::from_millis(3900)).await;
    assert_eq!(f.results.failed("containerd://c"), None);
    advance(Duration::from_millis(2200)).await;
    assert_eq!(f.results.failed("containerd://c"), Some(ProbeType::Startup));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_probed_before_the_initial_delay() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        liveness_probe: Some(probe(1, 3, 30)),
        ..Default::default()
    };
    set_status(&f, vec![running("app", "c", true)]);
    f.manager.add_pod(&pod(vec![app]));
    advance(Duration::from_secs(20)).await;
    assert_eq!(f.prober.calls("app"), 0);
    // started_at is wall-clock time: the delay counts from the container's start, which
    // paused tokio time does not move; a container started 31 s ago is probed.
    let mut old = running("app", "c", true);
    old.state = Some(ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(31),
            )),
        }),
        ..Default::default()
    });
    set_status(&f, vec![old]);
    advance(Duration::from_secs(2)).await;
    assert!(f.prober.calls("app") > 0);
}

#[tokio::test(start_paused = true)]
async fn terminating_stops_liveness_and_removal_stops_everything() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        liveness_probe: Some(probe(1, 1, 0)),
        readiness_probe: Some(probe(1, 1, 0)),
        ..Default::default()
    };
    set_status(&f, vec![running("app", "c", true)]);
    f.manager.add_pod(&pod(vec![app.clone()]));
    assert_eq!(f.manager.worker_count(), 2);
    f.manager.add_pod(&pod(vec![app]));
    assert_eq!(
        f.manager.worker_count(),
        2,
        "adding again starts nothing new"
    );
    advance(Duration::from_secs(3)).await;
    f.manager.stop_liveness_and_startup("uid-1");
    assert_eq!(f.manager.worker_count(), 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        f.results.get("containerd://c", ProbeType::Liveness),
        None,
        "a stopped worker forgets its result"
    );
    f.manager.remove_pod("uid-1");
    assert_eq!(f.manager.worker_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exited_for_good_stops_its_worker() {
    let f = fixture();
    let app = Container {
        name: "app".into(),
        readiness_probe: Some(probe(1, 1, 0)),
        ..Default::default()
    };
    let mut p = pod(vec![app]);
    p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let mut exited = running("app", "c", false);
    exited.state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated::default()),
        ..Default::default()
    });
    set_status(&f, vec![exited]);
    f.manager.add_pod(&p);
    advance(Duration::from_secs(3)).await;
    assert_eq!(f.prober.calls("app"), 0);
    assert_eq!(
        f.results.get("containerd://c", ProbeType::Readiness),
        None,
        "the worker ended and forgot its result"
    );
}
