use super::*;
use crate::mount::remove_all_one_filesystem;

#[test]
fn removal_stays_on_one_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).expect("dirs");
    std::fs::write(tree.join("a/b/file"), "x").expect("file");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("keep"), "keep").expect("keep");
    std::os::unix::fs::symlink(&outside, tree.join("link")).expect("symlink");
    remove_all_one_filesystem(&tree).expect("removed");
    assert!(!tree.exists());
    assert!(
        outside.join("keep").exists(),
        "a symlink is removed, not followed"
    );

    // A mount below is another filesystem: the removal stops there.
    let tree = dir.path().join("mounted");
    let inner = tree.join("inner");
    std::fs::create_dir_all(&inner).expect("inner");
    mount::mount_tmpfs(&inner, Some(1 << 20), 0o755).expect("tmpfs");
    std::fs::write(inner.join("data"), "data").expect("data");
    let err = remove_all_one_filesystem(&tree).unwrap_err();
    let kept = std::fs::read_to_string(inner.join("data"));
    let _ = nix::mount::umount2(&inner, nix::mount::MntFlags::MNT_DETACH);
    assert!(err.to_string().contains("on another filesystem"), "{err}");
    assert_eq!(kept.expect("the mounted data is kept"), "data");
}

fn container(
    name: &str,
    memory: Option<&str>,
    restart: Option<&str>,
) -> k8s_openapi::api::core::v1::Container {
    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    Container {
        name: name.into(),
        restart_policy: restart.map(Into::into),
        resources: memory.map(|m| ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity(m.into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn memory_volumes_are_sized_like_upstream() {
    use k8s_openapi::api::core::v1::PodSpec;
    let node = NodeAllocatable {
        memory_bytes: 1 << 30,
        cpu_millis: 1000,
    };
    let pod = |init: Vec<_>, apps: Vec<_>| Pod {
        spec: Some(PodSpec {
            init_containers: Some(init),
            containers: apps,
            ..Default::default()
        }),
        ..Default::default()
    };
    // No limits: the node's allocatable memory, or sizeLimit when smaller.
    let unlimited = pod(vec![], vec![container("a", None, None)]);
    assert_eq!(memory_volume_size(&unlimited, None, &node), 1 << 30);
    assert_eq!(
        memory_volume_size(&unlimited, Some(1 << 20), &node),
        1 << 20
    );
    // Apps plus sidecars, against the largest init container plus earlier sidecars.
    let limited = pod(
        vec![
            container("sidecar", Some("16Mi"), Some("Always")),
            container("init", Some("100Mi"), None),
        ],
        vec![
            container("a", Some("32Mi"), None),
            container("b", Some("32Mi"), None),
        ],
    );
    assert_eq!(pod_memory_limit(&limited), Some(116 << 20));
    assert_eq!(memory_volume_size(&limited, None, &node), 116 << 20);
    assert_eq!(memory_volume_size(&limited, Some(8 << 20), &node), 8 << 20);
    // An init container without a limit means no pod limit.
    let open = pod(
        vec![container("init", None, None)],
        vec![container("a", Some("32Mi"), None)],
    );
    assert_eq!(pod_memory_limit(&open), None);
    // Huge limits saturate instead of overflowing.
    let huge = pod(
        vec![],
        vec![
            container("a", Some("16Ei"), None),
            container("b", Some("16Ei"), None),
        ],
    );
    assert_eq!(memory_volume_size(&huge, None, &node), 1 << 30);
}
