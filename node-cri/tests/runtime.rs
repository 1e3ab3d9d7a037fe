//! The CRI runtime's garbage collection against a real containerd (a private one: GC looks at
//! every container the runtime has).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use node_core::events::MemoryRecorder;
use node_core::runtime::{GcPolicy, PodStateProvider, Runtime};
use node_cri::harness::{self, eventually};
use node_cri::runtime::CriRuntime;
use node_cri::runtime::container::{ContainerInputs, ContainerKind, container_config};
use node_cri::runtime::sandbox::{NodeContext, pod_sandbox_config};
use node_cri::{ManagedContainerd, cri};
use node_images::oci::BUSYBOX_IMAGE;

struct Provider {
    removable: bool,
}

impl PodStateProvider for Provider {
    fn should_pod_content_be_removed(&self, _uid: &node_core::runtime::PodUid) -> bool {
        self.removable
    }
}

fn pod(uid: &str) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("gc".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(BUSYBOX_IMAGE.into()),
                command: Some(vec!["true".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn gc_keeps_the_newest_dead_container_and_removes_everything_of_gone_pods() {
    let config = harness::test_config("gc").unwrap();
    let dir = config.dir.clone();
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = containerd.client().clone();
    let node = NodeContext {
        node_name: "gc-node".into(),
        pod_logs_dir: dir.join("logs"),
        cgroup_root: format!("/node-agent-test/{}", std::process::id()),
        resolv_conf: None,
        ..NodeContext::default()
    };
    let uid = format!("gc-{}", std::process::id());
    let pod = pod(&uid);
    let (sandbox_config, _) = pod_sandbox_config(&pod, 0, &node).unwrap();
    std::fs::create_dir_all(&sandbox_config.log_directory).unwrap();
    let sandbox = client
        .run_pod_sandbox(sandbox_config.clone(), "")
        .await
        .unwrap();
    let image = client.image_status(BUSYBOX_IMAGE).await.unwrap().unwrap();
    let spec = pod.spec.as_ref().unwrap().containers[0].clone();
    let mut ids = Vec::new();
    for restart in 0..3 {
        let inputs = ContainerInputs {
            pod: &pod,
            container: &spec,
            kind: ContainerKind::Regular,
            restart_count: restart,
            pod_ips: &[],
            image_ref: &image.id,
            image_uid: None,
            image_username: "",
            mounts: &[],
        };
        let config = container_config(&inputs, &node).unwrap();
        let id = client
            .create_container(&sandbox, config, sandbox_config.clone())
            .await
            .unwrap();
        client.start_container(&id).await.unwrap();
        eventually(Duration::from_secs(20), "the container to exit", || async {
            let s = client.container_status(&id, false).await.ok()?;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(())
        })
        .await;
        ids.push(id);
    }

    let runtime = CriRuntime::new(client.clone(), node, Arc::new(MemoryRecorder::default()));
    runtime
        .garbage_collect(&GcPolicy::default(), &Provider { removable: false }, true)
        .await
        .unwrap();
    let left: Vec<String> = client
        .list_containers(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        left,
        [ids[2].clone()],
        "only the newest dead container is kept"
    );
    assert_eq!(
        client.list_pod_sandbox(None).await.unwrap().len(),
        1,
        "a ready sandbox stays"
    );

    // The pod is gone: its containers and (stopped) sandbox go too.
    client.stop_pod_sandbox(&sandbox).await.unwrap();
    runtime
        .garbage_collect(&GcPolicy::default(), &Provider { removable: true }, true)
        .await
        .unwrap();
    assert!(client.list_containers(None).await.unwrap().is_empty());
    assert!(client.list_pod_sandbox(None).await.unwrap().is_empty());
    containerd.stop().await.unwrap();
}
