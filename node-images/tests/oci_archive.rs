//! Tests of `node_images::oci` through its public API, on the real busybox-static binary
//! (`/bin/busybox`) and, where installed by the project's setup script, skopeo.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use node_images::oci::{
    self, ANNOTATION_CONTAINERD_IMAGE_NAME, BUSYBOX_ARCHIVE, BUSYBOX_IMAGE, DEFAULT_BUSYBOX_PATH,
    ImageBuilder, LocalImages, OciArchive, OciImageError, PAUSE_ARCHIVE, PAUSE_IMAGE, PAUSE_SCRIPT,
};
use node_images::oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

/// The host's static busybox; the tests that need it fail (never skip) without it.
fn busybox() -> PathBuf {
    let path = PathBuf::from(DEFAULT_BUSYBOX_PATH);
    assert!(
        path.is_file(),
        "{DEFAULT_BUSYBOX_PATH} is missing: install Debian's busybox-static package (the project's setup script does)"
    );
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug)]
struct TarEntry {
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// All entries of an uncompressed tar, in archive order.
fn tar_entries(bytes: &[u8]) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .expect("tar entries")
        .map(|entry| {
            let mut entry = entry.expect("tar entry");
            let name = String::from_utf8(entry.path_bytes().into_owned()).expect("utf-8 path");
            let h = entry.header().clone();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).expect("utf-8 link"));
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry data");
            let e = TarEntry {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link,
                data,
            };
            (name, e)
        })
        .collect()
}

/// The parsed pieces of an OCI layout archive.
struct Layout {
    files: BTreeMap<String, TarEntry>,
    index: ImageIndex,
    manifest: ImageManifest,
    config: ImageConfiguration,
    layer_gzip: Vec<u8>,
}

/// The blob a descriptor points to, checking it exists with the declared size.
fn blob<'a>(files: &'a BTreeMap<String, TarEntry>, descriptor: &Descriptor) -> &'a [u8] {
    let hex = descriptor.as_digest_sha256().expect("sha256 digest");
    let entry = files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {hex} missing"));
    assert_eq!(entry.data.len() as u64, descriptor.size(), "size of {hex}");
    &entry.data
}

impl Layout {
    fn blob(&self, descriptor: &Descriptor) -> &[u8] {
        blob(&self.files, descriptor)
    }

    fn layer_tar(&self) -> Vec<u8> {
        let mut tar = Vec::new();
        GzDecoder::new(&self.layer_gzip[..])
            .read_to_end(&mut tar)
            .expect("layer is gzip");
        tar
    }
}

fn parse(archive: &[u8]) -> Layout {
    let files: BTreeMap<_, _> = tar_entries(archive).into_iter().collect();
    let index = ImageIndex::from_reader(&files["index.json"].data[..]).expect("index.json");
    assert_eq!(index.manifests().len(), 1);
    let manifest =
        ImageManifest::from_reader(blob(&files, &index.manifests()[0])).expect("manifest blob");
    let config =
        ImageConfiguration::from_reader(blob(&files, manifest.config())).expect("config blob");
    assert_eq!(manifest.layers().len(), 1);
    let layer_gzip = blob(&files, &manifest.layers()[0]).to_vec();
    Layout {
        files,
        index,
        manifest,
        config,
        layer_gzip,
    }
}

fn busybox_archive() -> OciArchive {
    oci::busybox_image(&busybox(), BUSYBOX_IMAGE)
        .build()
        .expect("busybox image builds")
}

#[test]
fn archive_has_layout_index_and_content_addressed_blobs() {
    let archive = busybox_archive();
    let files: BTreeMap<_, _> = tar_entries(archive.as_bytes()).into_iter().collect();

    let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"].data).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    assert!(files.contains_key("index.json"));

    let blobs: Vec<_> = files
        .iter()
        .filter_map(|(name, e)| name.strip_prefix("blobs/sha256/").map(|hex| (hex, e)))
        .filter(|(hex, _)| !hex.is_empty())
        .collect();
    assert_eq!(blobs.len(), 3, "layer, config and manifest");
    for (hex, entry) in blobs {
        assert_eq!(
            sha256_hex(&entry.data),
            hex,
            "blob content matches its name"
        );
        assert_eq!((entry.kind, entry.mode), (EntryType::Regular, 0o644));
    }
    for (name, entry) in &files {
        assert_eq!((entry.uid, entry.gid, entry.mtime), (0, 0, 0), "{name}");
    }

    // Every descriptor resolves to a blob of the declared size (checked in `blob`).
    let layout = parse(archive.as_bytes());
    assert_eq!(layout.manifest.schema_version(), 2);
    assert_eq!(
        layout.manifest.media_type().as_ref(),
        Some(&MediaType::ImageManifest)
    );
    assert_eq!(
        layout.manifest.config().media_type(),
        &MediaType::ImageConfig
    );
    assert_eq!(
        layout.manifest.layers()[0].media_type(),
        &MediaType::ImageLayerGzip
    );
    assert_eq!(
        layout.manifest.config().digest().to_string(),
        archive.image_id().to_string()
    );
}

#[test]
fn index_names_the_image_for_containerd() {
    let archive = busybox_archive();
    let layout = parse(archive.as_bytes());
    assert_eq!(layout.index.schema_version(), 2);
    assert_eq!(
        layout.index.media_type().as_ref(),
        Some(&MediaType::ImageIndex)
    );

    let descriptor = &layout.index.manifests()[0];
    assert_eq!(descriptor.media_type(), &MediaType::ImageManifest);
    assert_eq!(descriptor.digest(), archive.manifest_digest());
    let annotations = descriptor.annotations().as_ref().expect("annotations");
    assert_eq!(
        annotations[ANNOTATION_CONTAINERD_IMAGE_NAME],
        "docker.io/library/busybox:1.35"
    );
    assert_eq!(annotations[ANNOTATION_REF_NAME], "1.35");
    let platform = descriptor.platform().as_ref().expect("platform");
    assert_eq!(platform.os(), &Os::Linux);
    assert_eq!(platform.architecture(), &oci::host_arch());
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(platform.architecture().to_string(), "amd64");
    }
    assert_eq!(archive.platform(), platform);
    assert_eq!(archive.reference(), BUSYBOX_IMAGE);
    assert_eq!(archive.tag(), "1.35");

    // The digest is the sha256 of the manifest blob.
    let hex = descriptor.as_digest_sha256().unwrap();
    assert_eq!(sha256_hex(layout.blob(descriptor)), hex);
}

#[test]
fn config_diff_id_is_digest_of_uncompressed_layer() {
    let archive = busybox_archive();
    let layout = parse(archive.as_bytes());
    let layer_tar = layout.layer_tar();
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    assert_eq!(layout.config.rootfs().typ(), "layers");
    assert_eq!(layout.config.rootfs().diff_ids(), &vec![diff_id.clone()]);
    assert_eq!(archive.diff_id().to_string(), diff_id);
    assert_ne!(
        layout.manifest.layers()[0].digest().to_string(),
        diff_id,
        "the layer blob is compressed"
    );

    assert_eq!(layout.config.os(), &Os::Linux);
    assert_eq!(layout.config.architecture(), &oci::host_arch());
    assert!(
        layout.config.created().is_none(),
        "no build time in the config"
    );
    let config = layout.config.config().as_ref().expect("container config");
    assert_eq!(config.cmd().as_deref(), Some(&["sh".to_owned()][..]));
    assert!(config.entrypoint().is_none());
    assert_eq!(
        config.env().as_deref(),
        Some(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()][..])
    );

    // The gzip header carries no name and no timestamp.
    let gz = &layout.layer_gzip;
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(gz[3] & 0x08, 0, "no FNAME");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "MTIME is 0");
}

#[test]
fn busybox_layer_has_binary_applet_links_and_tmp() {
    let host_busybox = std::fs::read(busybox()).unwrap();
    let layout = parse(busybox_archive().as_bytes());
    let entries = tar_entries(&layout.layer_tar());
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let by_name: BTreeMap<&str, &TarEntry> = entries.iter().map(|(n, e)| (n.as_str(), e)).collect();

    // Paths are relative, without `..`, and every parent precedes its children.
    for (i, name) in names.iter().enumerate() {
        assert!(
            !name.starts_with('/') && !name.split('/').any(|c| c == ".."),
            "{name}"
        );
        let trimmed = name.trim_end_matches('/');
        if let Some((parent, _)) = trimmed.rsplit_once('/') {
            let parent_index = names
                .iter()
                .position(|n| *n == format!("{parent}/"))
                .unwrap_or_else(|| panic!("no directory entry for the parent of {name}"));
            assert!(parent_index < i, "{parent}/ comes after {name}");
        }
        let e = by_name[name];
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{name}");
    }

    let bin_busybox = by_name["bin/busybox"];
    assert_eq!(
        (bin_busybox.kind, bin_busybox.mode),
        (EntryType::Regular, 0o755)
    );
    assert!(
        bin_busybox.data == host_busybox,
        "bin/busybox is the host binary"
    );

    let sh = by_name["bin/sh"];
    assert_eq!(
        (sh.kind, sh.link.as_deref()),
        (EntryType::Symlink, Some("busybox"))
    );
    let applets = Command::new(busybox()).arg("--list").output().unwrap();
    let applets = String::from_utf8(applets.stdout).unwrap();
    for applet in applets.lines().filter(|a| *a != "busybox") {
        let e = by_name
            .get(format!("bin/{applet}").as_str())
            .unwrap_or_else(|| panic!("no link for applet {applet}"));
        assert_eq!(
            (e.kind, e.link.as_deref()),
            (EntryType::Symlink, Some("busybox"))
        );
    }

    let tmp = by_name["tmp/"];
    assert_eq!((tmp.kind, tmp.mode), (EntryType::Directory, 0o1777));
    assert_eq!(by_name["bin/"].mode, 0o755);
    assert_eq!(by_name["root/"].mode, 0o700);
    for dir in ["etc/", "home/", "var/"] {
        assert_eq!(
            (by_name[dir].kind, by_name[dir].mode),
            (EntryType::Directory, 0o755)
        );
    }
    let passwd = String::from_utf8(by_name["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.contains("root:x:0:0:root:/root:/bin/sh\n"));
    assert!(passwd.contains("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"));
    let group = String::from_utf8(by_name["etc/group"].data.clone()).unwrap();
    assert!(group.starts_with("root:x:0:"));
    assert!(!by_name.contains_key("etc/hostname") && !by_name.contains_key("etc/hosts"));
}

#[test]
fn builds_are_deterministic() {
    let image = || {
        oci::busybox_image(&busybox(), "example.com/det:1")
            .label("a", "1")
            .label("b", "2")
            .label("c", "3")
            .label("d", "4")
            .user("65534")
            .working_dir("/tmp")
    };
    let first = image().build().unwrap();
    let second = image().build().unwrap();
    assert!(first.as_bytes() == second.as_bytes(), "identical bytes");
    assert_eq!(first.manifest_digest(), second.manifest_digest());
    assert_eq!(first.image_id(), second.image_id());

    let other = image().cmd(["true"]).build().unwrap();
    assert_ne!(first.manifest_digest(), other.manifest_digest());
    assert_ne!(first.image_id(), other.image_id());
    assert_eq!(first.diff_id(), other.diff_id(), "same layer");
}

#[test]
fn custom_image_with_every_entry_kind() {
    let archive = ImageBuilder::new("localhost:5000/custom")
        .file("/opt/app/run", "#!/bin/sh\necho hi\n", 0o755)
        .hard_link("/opt/app/run-again", "/opt/app/run")
        .symlink("/usr/bin/run", "/opt/app/run")
        .dir("/data", 0o750)
        .entrypoint(["/opt/app/run"])
        .cmd(["--flag"])
        .env("A", "1")
        .env("B", "x=y")
        .working_dir("/data")
        .user("1000:1000")
        .label("org.example.role", "test")
        .build()
        .unwrap();
    assert_eq!(archive.reference(), "localhost:5000/custom:latest");
    assert_eq!(archive.tag(), "latest");
    let layout = parse(archive.as_bytes());
    let names: Vec<_> = tar_entries(&layout.layer_tar())
        .into_iter()
        .map(|(n, e)| (n, e.kind, e.mode, e.link))
        .collect();
    assert_eq!(
        names,
        [
            ("data/".to_owned(), EntryType::Directory, 0o750, None),
            ("opt/".to_owned(), EntryType::Directory, 0o755, None),
            ("opt/app/".to_owned(), EntryType::Directory, 0o755, None),
            ("opt/app/run".to_owned(), EntryType::Regular, 0o755, None),
            ("usr/".to_owned(), EntryType::Directory, 0o755, None),
            ("usr/bin/".to_owned(), EntryType::Directory, 0o755, None),
            (
                "usr/bin/run".to_owned(),
                EntryType::Symlink,
                0o777,
                Some("/opt/app/run".to_owned())
            ),
            (
                "opt/app/run-again".to_owned(),
                EntryType::Link,
                0o755,
                Some("opt/app/run".to_owned())
            ),
        ]
    );
    let config = layout.config.config().as_ref().unwrap();
    assert_eq!(
        config.entrypoint().as_deref(),
        Some(&["/opt/app/run".to_owned()][..])
    );
    assert_eq!(config.cmd().as_deref(), Some(&["--flag".to_owned()][..]));
    assert_eq!(
        config.env().as_deref(),
        Some(&["A=1".to_owned(), "B=x=y".to_owned()][..])
    );
    assert_eq!(config.working_dir().as_deref(), Some("/data"));
    assert_eq!(config.user().as_deref(), Some("1000:1000"));
    assert_eq!(
        layout.config.get_config_annotation("org.example.role"),
        Some("test")
    );
}

#[test]
fn pause_image_runs_the_sandbox_script() {
    let archive = oci::pause_image(&busybox(), PAUSE_IMAGE).build().unwrap();
    assert_eq!(archive.reference(), "registry.k8s.io/pause:3.10");
    let layout = parse(archive.as_bytes());
    let config = layout.config.config().as_ref().unwrap();
    assert_eq!(
        config.entrypoint().as_deref(),
        Some(
            &[
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".to_owned()
            ][..]
        )
    );
    assert!(config.cmd().is_none());
    let entries: Vec<_> = tar_entries(&layout.layer_tar())
        .into_iter()
        .map(|(n, e)| (n, e.kind, e.link))
        .collect();
    assert_eq!(
        entries,
        [
            ("bin/".to_owned(), EntryType::Directory, None),
            ("bin/busybox".to_owned(), EntryType::Regular, None),
            (
                "bin/sh".to_owned(),
                EntryType::Symlink,
                Some("busybox".to_owned())
            ),
            (
                "bin/sleep".to_owned(),
                EntryType::Symlink,
                Some("busybox".to_owned())
            ),
        ]
    );
}

/// Runs the pause script under the host busybox's sh and checks it exits 0 promptly on
/// SIGTERM and SIGINT.
#[test]
fn pause_script_exits_zero_on_term_and_int() {
    let busybox = busybox();
    for signal in ["TERM", "INT"] {
        let mut child = Command::new(&busybox)
            .args(["sh", "-c", PAUSE_SCRIPT])
            .process_group(0)
            .spawn()
            .expect("start busybox sh");
        let pid = child.id().to_string();
        // Let the shell install its trap and start waiting.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pause script keeps running"
        );
        let sent = Command::new(&busybox)
            .args(["kill", &format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The backgrounded `sleep 3600` is left behind in the group; end the group we started.
        let _ = Command::new(&busybox)
            .args(["kill", "-KILL", "--", &format!("-{pid}")])
            .status();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = status.unwrap_or_else(|| panic!("no exit within 5s of SIG{signal}"));
        assert_eq!(status.code(), Some(0), "SIG{signal} gives exit 0");
    }
}

#[test]
fn local_images_rewrite_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let images_dir = dir.path().join("images");
    let first = LocalImages::with_defaults(&images_dir, busybox())
        .write()
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].path, images_dir.join(BUSYBOX_ARCHIVE));
    assert_eq!(first[0].reference, BUSYBOX_IMAGE);
    assert_eq!(first[1].path, images_dir.join(PAUSE_ARCHIVE));
    assert_eq!(first[1].reference, PAUSE_IMAGE);
    assert!(first.iter().all(|i| i.written));
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.modified().unwrap())
    };
    let busybox_stat = stat(&first[0].path);
    let pause_stat = stat(&first[1].path);

    // Unchanged: nothing is written, the files keep their inode and mtime.
    let second = LocalImages::with_defaults(&images_dir, busybox())
        .write()
        .unwrap();
    assert!(second.iter().all(|i| !i.written), "{second:?}");
    assert_eq!(second[0].manifest_digest, first[0].manifest_digest);
    assert_eq!(second[1].image_id, first[1].image_id);
    assert_eq!(stat(&first[0].path), busybox_stat);
    assert_eq!(stat(&first[1].path), pause_stat);
    // Nothing else (no temporary files) is left in the directory.
    let mut names: Vec<_> = std::fs::read_dir(&images_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [BUSYBOX_ARCHIVE, PAUSE_ARCHIVE]);

    // A different command changes the busybox archive only.
    let changed = LocalImages::with_defaults(&images_dir, busybox())
        .image(
            BUSYBOX_ARCHIVE,
            oci::busybox_image(&busybox(), BUSYBOX_IMAGE).cmd(["sleep", "3600"]),
        )
        .write()
        .unwrap();
    assert!(changed[0].written && !changed[1].written, "{changed:?}");
    assert_ne!(changed[0].manifest_digest, first[0].manifest_digest);
    assert_ne!(stat(&first[0].path), busybox_stat);
    assert_eq!(stat(&first[1].path), pause_stat);
    let listed = oci::read_archive_index(&changed[0].path).unwrap();
    assert_eq!(listed[0].manifest_digest, changed[0].manifest_digest);

    // A damaged file of the right name is rewritten.
    std::fs::write(&first[1].path, b"garbage").unwrap();
    let repaired = LocalImages::with_defaults(&images_dir, busybox())
        .write()
        .unwrap();
    assert!(repaired[1].written);
    assert_eq!(repaired[1].manifest_digest, first[1].manifest_digest);
}

#[test]
fn read_archive_index_lists_reference_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause.tar");
    let archive = oci::pause_image(&busybox(), "registry.k8s.io/pause:3.10")
        .build()
        .unwrap();
    archive.write_to(&path).unwrap();
    let listed = oci::read_archive_index(&path).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference.as_deref(), Some(PAUSE_IMAGE));
    assert_eq!(listed[0].ref_name.as_deref(), Some("3.10"));
    assert_eq!(&listed[0].manifest_digest, archive.manifest_digest());
    assert_eq!(listed[0].media_type, MediaType::ImageManifest);
    assert_eq!(listed[0].platform.as_ref(), Some(archive.platform()));

    // Not an archive, an archive without index.json, a missing file: errors naming the path.
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, vec![7u8; 1024]).unwrap();
    let empty = dir.path().join("empty.tar");
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    builder
        .append_data(&mut h, "other.json", &b"{}"[..])
        .unwrap();
    std::fs::write(&empty, builder.into_inner().unwrap()).unwrap();
    let missing = dir.path().join("missing.tar");
    for bad in [&garbage, &empty, &missing] {
        let err = oci::read_archive_index(bad).unwrap_err();
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        oci::read_archive_index(&empty),
        Err(OciImageError::InvalidArchive { .. })
    ));
}

/// The whole error chain as one string, to check what a log line would show.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[test]
fn missing_busybox_is_an_error_naming_the_path() {
    let missing = Path::new("/nonexistent/bin/busybox");
    for image in [
        oci::busybox_image(missing, BUSYBOX_IMAGE),
        oci::pause_image(missing, PAUSE_IMAGE),
    ] {
        let err = image.build().unwrap_err();
        assert!(
            matches!(&err, OciImageError::ReadHostFile { path, .. } if path == missing),
            "{err:?}"
        );
        assert!(chain(&err).contains("/nonexistent/bin/busybox"), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let err = LocalImages::with_defaults(dir.path(), missing)
        .write()
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/bin/busybox"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn busybox_that_cannot_list_applets_is_an_error_naming_the_path() {
    // Readable but not executable: --list cannot be run.
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("busybox");
    std::fs::write(&not_executable, b"not a program").unwrap();
    let err = oci::busybox_image(&not_executable, BUSYBOX_IMAGE)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, OciImageError::RunBusybox { path, .. } if *path == not_executable),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&not_executable.display().to_string())
    );

    // Runs but fails.
    let failing = Path::new("/bin/false");
    assert!(failing.exists(), "/bin/false is part of coreutils");
    let err = oci::busybox_image(failing, BUSYBOX_IMAGE)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, OciImageError::BusyboxApplets { path, .. } if path == failing),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("/bin/false --list"), "{err}");
}

#[test]
fn unwritable_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let images_dir = file.join("images");
    let err = LocalImages::with_defaults(&images_dir, busybox())
        .write()
        .unwrap_err();
    assert!(
        matches!(&err, OciImageError::CreateDir { path, .. } if *path == images_dir),
        "{err:?}"
    );

    let err = LocalImages::new(dir.path())
        .image("../escape.tar", ImageBuilder::new("x"))
        .write()
        .unwrap_err();
    assert!(
        matches!(err, OciImageError::InvalidFileName { .. }),
        "{err:?}"
    );
}

/// skopeo (installed by the project's setup script) must accept the archive as an OCI archive.
#[test]
fn skopeo_inspects_the_archive() {
    let skopeo = Path::new("/usr/bin/skopeo");
    assert!(
        skopeo.is_file(),
        "/usr/bin/skopeo is missing: install the skopeo package (the project's setup script does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(BUSYBOX_ARCHIVE);
    let archive = busybox_archive();
    archive.write_to(&path).unwrap();
    let layout = parse(archive.as_bytes());
    let manifest_blob = layout.blob(&layout.index.manifests()[0]).to_vec();

    let transport = format!("oci-archive:{}", path.display());
    let raw = Command::new(skopeo)
        .args(["inspect", "--raw", &transport])
        .output()
        .expect("run skopeo");
    assert!(
        raw.status.success(),
        "skopeo inspect --raw failed: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(raw.stdout, manifest_blob, "skopeo returns our manifest");

    let inspect = Command::new(skopeo)
        .args(["inspect", &transport])
        .output()
        .expect("run skopeo");
    assert!(
        inspect.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], oci::host_arch().to_string());
    assert_eq!(info["Digest"], archive.manifest_digest().to_string());
    assert_eq!(
        info["Layers"][0],
        layout.manifest.layers()[0].digest().to_string()
    );
}
