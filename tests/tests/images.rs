//! The image store against a real registry (Debian's docker-registry on a loopback port)
//! seeded with images these tests build, and against skopeo both ways.

use berth_e2e::oci::{self, tar_of, Entry, Layer, Node, TestImage};
use berth_e2e::registry::{Auth, Registry, Throttle};
use berth_e2e::{built_binary, busybox_rootfs, Finished, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bi(store: &Path, args: &[&str]) -> Finished {
    Command::new(built_binary("berth-image"))
        .arg("--root")
        .arg(store)
        .args(args)
        .env_remove("BERTH_REGISTRY_CREDS")
        .output()
        .expect("run berth-image")
        .into()
}

fn ok(f: Finished) -> Finished {
    assert_eq!(f.status, 0, "failed: {}\n{}", f.stdout, f.stderr);
    f
}

fn skopeo(args: &[&str]) -> Finished {
    let f: Finished = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo")
        .into();
    assert_eq!(f.status, 0, "skopeo {args:?}: {}", f.stderr);
    f
}

/// Pushes tag `tag` of the layout at `layout` to `dest` (`host/repo:tag`) with skopeo.
fn seed(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{dest}");
    let mut a = vec!["copy", "--all", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        a.extend(["--dest-creds", c]);
    }
    a.extend([src.as_str(), dst.as_str()]);
    skopeo(&a);
}

/// The registry's digest for an image, as skopeo sees it.
fn remote_digest(image: &str, creds: Option<&str>) -> String {
    let r = format!("docker://{image}");
    let mut a = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        a.extend(["--creds", c]);
    }
    a.push(&r);
    let raw = skopeo(&a).stdout;
    berth_image::Digest::of(raw.as_bytes()).to_string()
}

fn busybox_layer() -> Layer {
    let d = TempDir::new("bbroot").unwrap();
    busybox_rootfs(d.path()).unwrap();
    std::fs::write(d.path().join("etc/motd"), "hello from a berth test image\n").unwrap();
    Layer::gzip(oci::tar_dir(d.path()).unwrap())
}

fn busybox_image() -> TestImage {
    TestImage::new(vec![busybox_layer()], &["/bin/cat", "/etc/motd"])
}

/// Blob files in a store.
fn blobs(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_consistent_and_empty(store: &Path) {
    let v = ok(bi(store, &["verify"]));
    assert!(v.stdout.contains("store is consistent"), "{}", v.stdout);
    assert_eq!(
        ok(bi(store, &["images", "-q"])).stdout,
        "",
        "no image recorded"
    );
    assert_eq!(blobs(store), Vec::<String>::new(), "no blob left behind");
}

#[test]
fn pull_by_tag_and_digest_then_run_from_the_unpacked_root() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    oci::write_layout(layouts.path(), vec![("1", Node::Image(busybox_image()))]).unwrap();
    let name = format!("{}/test/busybox:1", reg.host);
    seed(layouts.path(), "1", &name, None); // skopeo pushes, berth pulls
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    let out = ok(bi(s, &["pull", &name]));
    assert!(out.stdout.contains("Pull complete"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{}",
        out.stdout
    );
    let images = ok(bi(s, &["images"])).stdout;
    assert!(
        images.contains(&format!("{}/test/busybox", reg.host)) && images.contains(" 1 "),
        "{images}"
    );
    // Made runnable: the unpacked root runs busybox, and the root disk is an erofs image.
    let root = PathBuf::from(ok(bi(s, &["rootfs", &name])).stdout.trim());
    let run: Finished = Command::new("chroot")
        .arg(&root)
        .args(["/bin/cat", "/etc/motd"])
        .output()
        .unwrap()
        .into();
    assert_eq!(
        run.stdout, "hello from a berth test image\n",
        "{}",
        run.stderr
    );
    let disk = PathBuf::from(ok(bi(s, &["disk", &name])).stdout.trim());
    let img = std::fs::read(&disk).unwrap();
    assert_eq!(
        &img[1024..1028],
        &0xE0F5_E1E2u32.to_le_bytes(),
        "erofs superblock"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(bi(s, &["inspect", &name])).stdout).unwrap();
    assert_eq!(
        inspect["Config"]["config"]["Cmd"],
        serde_json::json!(["/bin/cat", "/etc/motd"])
    );
    // By digest: the same image, nothing fetched again.
    let digest = remote_digest(&name, None);
    assert_eq!(
        inspect["RepoDigests"][0],
        format!("{}/test/busybox@{digest}", reg.host)
    );
    let by_digest = format!("{}/test/busybox@{digest}", reg.host);
    let out = ok(bi(s, &["pull", &by_digest]));
    assert!(out.stdout.contains("Already exists"), "{}", out.stdout);
    assert_eq!(
        ok(bi(s, &["inspect", &by_digest])).stdout,
        ok(bi(s, &["inspect", &name])).stdout
    );
    // A digest that doesn't match what the registry serves for it is refused.
    let wrong = format!("{}/test/busybox@sha256:{}", reg.host, "0".repeat(64));
    let e = bi(s, &["pull", &wrong]);
    assert_ne!(e.status, 0);
    assert!(
        e.stderr.contains("test/busybox") && e.stderr.contains("manifest unknown"),
        "{}",
        e.stderr
    );
    ok(bi(s, &["verify"]));
}

#[test]
fn layers_with_whiteouts_opaque_dirs_and_three_compressions() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    let base = busybox_layer();
    let l2 = Layer::zstd(tar_of(&[
        Entry::Dir("data"),
        Entry::File("data/keep", b"keep", 0o644),
        Entry::File("data/gone", b"gone", 0o644),
        Entry::Dir("cache"),
        Entry::File("cache/old1", b"1", 0o644),
        Entry::File("cache/old2", b"2", 0o644),
        Entry::Symlink("data/link", "keep"),
    ]));
    let l3 = Layer::plain(tar_of(&[
        Entry::Whiteout("data/gone"),
        Entry::Whiteout("etc/motd"),
        Entry::Opaque("cache"),
        Entry::File("cache/new", b"new", 0o600),
        Entry::Hardlink("data/hard", "data/keep"),
    ]));
    let img = TestImage::new(vec![base, l2, l3], &["/bin/sh"]);
    oci::write_layout(layouts.path(), vec![("multi", Node::Image(img))]).unwrap();
    let name = format!("{}/test/multi:latest", reg.host);
    seed(layouts.path(), "multi", &name, None);
    let store = TempDir::new("store").unwrap();
    ok(bi(store.path(), &["pull", &name]));
    let root = PathBuf::from(ok(bi(store.path(), &["rootfs", &name])).stdout.trim());
    assert_eq!(std::fs::read(root.join("data/keep")).unwrap(), b"keep");
    assert_eq!(std::fs::read(root.join("data/link")).unwrap(), b"keep");
    assert_eq!(std::fs::read(root.join("data/hard")).unwrap(), b"keep");
    assert!(
        !root.join("data/gone").exists(),
        "whiteout removed data/gone"
    );
    assert!(
        !root.join("etc/motd").exists(),
        "whiteout removed a lower layer's file"
    );
    assert!(root.join("etc/passwd").exists());
    let mut cache: Vec<String> = std::fs::read_dir(root.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cache.sort();
    assert_eq!(cache, ["new"], "the opaque dir hides everything below it");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("cache/new"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!root.join("data/.wh.gone").exists() && !root.join("cache/.wh..wh..opq").exists());
}

#[test]
fn a_multi_platform_index_gives_linux_amd64_and_other_platforms_only_are_refused() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    let mut arm = TestImage::new(
        vec![Layer::gzip(tar_of(&[Entry::File(
            "arch", b"arm64\n", 0o644,
        )]))],
        &["/arch"],
    );
    arm.arch = "arm64";
    let amd = TestImage::new(
        vec![Layer::gzip(tar_of(&[Entry::File(
            "arch", b"amd64\n", 0o644,
        )]))],
        &["/arch"],
    );
    let mut arm_only = TestImage::new(
        vec![Layer::gzip(tar_of(&[Entry::File(
            "arch",
            b"arm only\n",
            0o644,
        )]))],
        &["/arch"],
    );
    arm_only.arch = "arm64";
    let mut s390 = TestImage::new(
        vec![Layer::gzip(tar_of(&[Entry::File(
            "arch", b"s390x\n", 0o644,
        )]))],
        &["/arch"],
    );
    s390.arch = "s390x";
    oci::write_layout(
        layouts.path(),
        vec![
            ("multi", Node::Index(vec![arm, amd])),
            ("armonly", Node::Index(vec![arm_only, s390])),
        ],
    )
    .unwrap();
    let multi = format!("{}/test/multiarch:v1", reg.host);
    let armonly = format!("{}/test/multiarch:armonly", reg.host);
    seed(layouts.path(), "multi", &multi, None);
    seed(layouts.path(), "armonly", &armonly, None);
    let store = TempDir::new("store").unwrap();
    ok(bi(store.path(), &["pull", &multi]));
    let root = PathBuf::from(ok(bi(store.path(), &["rootfs", &multi])).stdout.trim());
    assert_eq!(
        std::fs::read_to_string(root.join("arch")).unwrap(),
        "amd64\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(bi(store.path(), &["inspect", &multi])).stdout).unwrap();
    // The repo digest is the index's, as Docker reports it.
    assert_eq!(
        inspect["RepoDigests"][0],
        format!(
            "{}/test/multiarch@{}",
            reg.host,
            remote_digest(&multi, None)
        )
    );

    let other = TempDir::new("store").unwrap();
    let e = bi(other.path(), &["pull", &armonly]);
    assert_ne!(e.status, 0);
    assert!(e.stderr.contains("test/multiarch:armonly"), "{}", e.stderr);
    assert!(
        e.stderr.contains("no matching manifest for linux/amd64")
            && e.stderr.contains("linux/s390x"),
        "{}",
        e.stderr
    );
    assert_consistent_and_empty(other.path());
}

#[test]
fn push_then_pull_back_with_identical_digests_and_skopeo_reads_it() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    // An image that exists only locally: imported from a rootfs tarball.
    let rootfs = TempDir::new("bbroot").unwrap();
    busybox_rootfs(rootfs.path()).unwrap();
    let tarball = rootfs.path().join("../rootfs-push.tar.gz");
    std::fs::write(&tarball, oci::gzip(&oci::tar_dir(rootfs.path()).unwrap())).unwrap();
    let id = ok(bi(
        s,
        &[
            "import",
            "--change",
            "CMD [\"/bin/echo\", \"pushed\"]",
            tarball.to_str().unwrap(),
            "local/pushme:1",
        ],
    ))
    .stdout
    .trim()
    .to_owned();
    std::fs::remove_file(&tarball).unwrap();
    let target = format!("{}/pushed/one:v1", reg.host);
    let out = ok(bi(s, &["push", "local/pushme:1", &target]));
    assert!(
        out.stdout.contains("Pushed") && out.stdout.contains("digest: sha256:"),
        "{}",
        out.stdout
    );
    let pushed_digest = out
        .stdout
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    assert_eq!(
        remote_digest(&target, None),
        pushed_digest,
        "the registry has the same manifest"
    );
    // Pushing again: the registry has everything.
    let again = ok(bi(s, &["push", "local/pushme:1", &target]));
    assert!(
        again.stdout.contains("Layer already exists"),
        "{}",
        again.stdout
    );
    // To another repository on the same registry: blobs are mounted, not uploaded.
    let other = format!("{}/pushed/two:v1", reg.host);
    let mounted = ok(bi(s, &["push", "local/pushme:1", &other]));
    assert!(
        mounted.stdout.contains("Mounted from"),
        "{}",
        mounted.stdout
    );
    // Chunked upload to a third.
    let third = format!("{}/pushed/three:v1", reg.host);
    ok(bi(
        s,
        &["push", "--chunk-size", "65536", "local/pushme:1", &third],
    ));
    // Pull back into an empty store: the same image ID and manifest digest.
    let fresh = TempDir::new("store").unwrap();
    for t in [&target, &other, &third] {
        ok(bi(fresh.path(), &["pull", t]));
        let i: serde_json::Value =
            serde_json::from_str(&ok(bi(fresh.path(), &["inspect", t])).stdout).unwrap();
        assert_eq!(i["Id"], id.as_str());
        assert_eq!(i["Manifest"], pushed_digest.as_str());
    }
    // skopeo pulls what berth pushed, with the same digest.
    let layout = TempDir::new("layout").unwrap();
    let dest = format!("oci:{}:v1", layout.path().join("out").display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{third}"),
        &dest,
    ]);
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("out/index.json")).unwrap())
            .unwrap();
    assert_eq!(idx["manifests"][0]["digest"], pushed_digest.as_str());
}

#[test]
fn corrupted_and_truncated_blobs_are_rejected_and_leave_the_store_unchanged() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    let layer = busybox_layer();
    let hex = berth_image::Digest::of(&layer.blob).hex().to_owned();
    let img = TestImage::new(vec![layer], &["/bin/sh"]);
    oci::write_layout(layouts.path(), vec![("1", Node::Image(img))]).unwrap();
    let name = format!("{}/test/corrupt:1", reg.host);
    seed(layouts.path(), "1", &name, None);
    let data = reg.blob_data(&hex);
    let good = std::fs::read(&data).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();
    let store = TempDir::new("store").unwrap();
    let e = bi(store.path(), &["pull", &name]);
    assert_ne!(e.status, 0);
    assert!(
        e.stderr.contains("test/corrupt:1")
            && e.stderr
                .contains(&format!("verification failed for digest sha256:{hex}")),
        "{}",
        e.stderr
    );
    assert_consistent_and_empty(store.path());
    std::fs::write(&data, &good[..good.len() - 1000]).unwrap();
    let e = bi(store.path(), &["pull", &name]);
    assert_ne!(e.status, 0);
    assert!(
        e.stderr.contains("test/corrupt:1") && e.stderr.contains("truncated"),
        "{}",
        e.stderr
    );
    assert_consistent_and_empty(store.path());
    std::fs::write(&data, &good).unwrap();
    ok(bi(store.path(), &["pull", &name]));
}

#[test]
fn bearer_token_and_basic_auth() {
    for auth in [
        Auth::Token("alice".into(), "s3cret".into()),
        Auth::Basic("bob".into(), "hunter2".into()),
    ] {
        let reg = Registry::start(auth.clone()).unwrap();
        let (user, pass) = match &auth {
            Auth::Token(u, p) | Auth::Basic(u, p) => (u.clone(), p.clone()),
            Auth::Anonymous => unreachable!(),
        };
        let creds = format!("{user}:{pass}");
        let layouts = TempDir::new("layout").unwrap();
        let img = TestImage::new(
            vec![Layer::gzip(tar_of(&[Entry::File(
                "secret",
                b"only for alice\n",
                0o644,
            )]))],
            &["/secret"],
        );
        oci::write_layout(layouts.path(), vec![("1", Node::Image(img))]).unwrap();
        let name = format!("{}/private/app:1", reg.host);
        seed(layouts.path(), "1", &name, Some(&creds));
        let store = TempDir::new("store").unwrap();
        let s = store.path();
        let e = bi(s, &["pull", &name]);
        assert_ne!(e.status, 0, "{:?}: anonymous pull must fail", auth);
        assert!(
            e.stderr.contains("private/app:1") && e.stderr.contains("unauthorized"),
            "{:?}: {}",
            auth,
            e.stderr
        );
        let e = bi(s, &["pull", "--creds", &format!("{user}:wrong"), &name]);
        assert_ne!(e.status, 0);
        assert!(
            e.stderr.contains("unauthorized"),
            "{:?}: {}",
            auth,
            e.stderr
        );
        assert_consistent_and_empty(s);
        ok(bi(s, &["pull", "--creds", &creds, &name]));
        let pushed = format!("{}/private/copy:1", reg.host);
        assert_ne!(
            bi(s, &["push", &name, &pushed]).status,
            0,
            "push without credentials"
        );
        ok(bi(s, &["push", "--creds", &creds, &name, &pushed]));
        assert_eq!(
            remote_digest(&pushed, Some(&creds)),
            remote_digest(&name, Some(&creds))
        );
    }
}

#[test]
fn unknown_images_and_unreachable_registries_are_clear_errors() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    let e = bi(s, &["pull", &format!("{}/nobody/here:1", reg.host)]);
    assert_ne!(e.status, 0);
    assert!(
        e.stderr.contains("nobody/here:1") && e.stderr.contains("manifest unknown"),
        "{}",
        e.stderr
    );
    let port = berth_e2e::registry::free_port().unwrap();
    let e = bi(s, &["pull", &format!("127.0.0.1:{port}/x/y:1")]);
    assert_ne!(e.status, 0);
    assert!(
        e.stderr.contains("x/y:1") && e.stderr.contains("unreachable"),
        "{}",
        e.stderr
    );
    let e = bi(s, &["pull", "UPPER/Case"]);
    assert!(
        e.stderr.contains("invalid reference format"),
        "{}",
        e.stderr
    );
    let e = bi(s, &["rmi", "nothing:here"]);
    assert!(
        e.stderr.contains("No such image: nothing:here"),
        "{}",
        e.stderr
    );
    assert_consistent_and_empty(s);
}

#[test]
fn save_load_and_oci_layouts_round_trip_and_interoperate_with_skopeo() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    oci::write_layout(layouts.path(), vec![("1", Node::Image(busybox_image()))]).unwrap();
    let name = format!("{}/test/saveme:1", reg.host);
    seed(layouts.path(), "1", &name, None);
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    ok(bi(s, &["pull", &name]));
    let id = ok(bi(s, &["images", "-q"])).stdout;
    let work = TempDir::new("save").unwrap();
    let tarball = work.path().join("saved.tar");
    ok(bi(s, &["save", "-o", tarball.to_str().unwrap(), &name]));
    ok(bi(s, &["rmi", &name]));
    assert_consistent_and_empty(s);
    let out = ok(bi(s, &["load", "-i", tarball.to_str().unwrap()]));
    assert!(
        out.stdout.contains(&format!("Loaded image: {name}")),
        "{}",
        out.stdout
    );
    assert_eq!(ok(bi(s, &["images", "-q"])).stdout, id);
    // skopeo reads berth's tarball as a docker archive, and writes one berth loads.
    skopeo(&["inspect", &format!("docker-archive:{}", tarball.display())]);
    let sk = work.path().join("skopeo.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("docker-archive:{}:from/skopeo:2", sk.display()),
    ]);
    let other = TempDir::new("store").unwrap();
    let out = ok(bi(other.path(), &["load", "-i", sk.to_str().unwrap()]));
    assert!(
        out.stdout.contains("Loaded image: from/skopeo:2"),
        "{}",
        out.stdout
    );
    let root = PathBuf::from(
        ok(bi(other.path(), &["rootfs", "from/skopeo:2"]))
            .stdout
            .trim(),
    );
    assert!(root.join("etc/motd").is_file());
    // An OCI layout directory out of berth goes to the registry through skopeo, and back.
    let dir = work.path().join("layout");
    ok(bi(s, &["save", "--oci-dir", dir.to_str().unwrap(), &name]));
    let back = format!("{}/test/fromlayout:1", reg.host);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", dir.display()),
        &format!("docker://{back}"),
    ]);
    assert_eq!(remote_digest(&back, None), remote_digest(&name, None));
    let third = TempDir::new("store").unwrap();
    let out = ok(bi(
        third.path(),
        &["load", "--oci-dir", dir.to_str().unwrap()],
    ));
    assert!(
        out.stdout.contains(&format!("Loaded image: {name}")),
        "{}",
        out.stdout
    );
}

#[test]
fn import_applies_changes_and_removal_collects_what_nothing_else_uses() {
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    let work = TempDir::new("import").unwrap();
    let base = oci::tar_dir(&{
        let p = work.path().join("root");
        busybox_rootfs(&p).unwrap();
        p
    })
    .unwrap();
    let t1 = work.path().join("one.tar");
    std::fs::write(&t1, &base).unwrap();
    let out = ok(bi(
        s,
        &[
            "import",
            "-c",
            "ENV GREETING=hi",
            "-c",
            "WORKDIR /tmp",
            "-c",
            "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
            "-c",
            "CMD echo $GREETING",
            t1.to_str().unwrap(),
            "imported:1",
        ],
    ));
    let id = out.stdout.trim().to_owned();
    let i: serde_json::Value =
        serde_json::from_str(&ok(bi(s, &["inspect", "imported:1"])).stdout).unwrap();
    assert_eq!(i["Id"], id.as_str());
    let c = &i["Config"]["config"];
    assert_eq!(c["Env"], serde_json::json!(["GREETING=hi"]));
    assert_eq!(c["WorkingDir"], "/tmp");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo $GREETING"])
    );
    let e = bi(s, &["import", "-c", "FROM scratch", t1.to_str().unwrap()]);
    assert!(
        e.stderr.contains("FROM is not a valid change command"),
        "{}",
        e.stderr
    );
    // A second tag, then removal: untag first, delete with the last tag.
    ok(bi(s, &["tag", "imported:1", "imported:2"]));
    let e = bi(s, &["rmi", &id[7..19]]);
    assert!(e.stderr.contains("must be forced"), "{}", e.stderr);
    let out = ok(bi(s, &["rmi", "imported:1"]));
    assert_eq!(out.stdout, "Untagged: imported:1\n");
    ok(bi(s, &["disk", "imported:2"]));
    let out = ok(bi(s, &["rmi", "imported:2"]));
    assert!(
        out.stdout.contains("Untagged: imported:2")
            && out.stdout.contains(&format!("Deleted: {id}")),
        "{}",
        out.stdout
    );
    assert_consistent_and_empty(s);
    assert_eq!(std::fs::read_dir(s.join("rootfs")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.join("disks")).unwrap().count(), 0);
    // Two images sharing a layer: removing one keeps the shared blob.
    ok(bi(s, &["import", t1.to_str().unwrap(), "a:1"]));
    ok(bi(
        s,
        &[
            "import",
            "-c",
            "CMD [\"/bin/true\"]",
            t1.to_str().unwrap(),
            "b:1",
        ],
    ));
    let layer = berth_image::Digest::of(&base);
    ok(bi(s, &["rmi", "a:1"]));
    assert!(
        s.join("blobs/sha256").join(layer.hex()).is_file(),
        "b:1 still uses the layer"
    );
    ok(bi(s, &["rmi", "b:1"]));
    assert_consistent_and_empty(s);
}

#[test]
fn hostile_tarballs_are_rejected_and_nothing_is_written_outside_the_store() {
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    let work = TempDir::new("evil").unwrap();
    let canary_dir = work.path().join("outside");
    std::fs::create_dir_all(&canary_dir).unwrap();
    let outside = canary_dir.join("pwned");
    let abs = outside.to_str().unwrap().to_owned();
    let rel_up = format!("../../../../../../../../..{abs}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute path",
            tar_of(&[Entry::RawFile(abs.as_bytes(), b"x")]),
        ),
        (
            "dot-dot",
            tar_of(&[Entry::RawFile(rel_up.as_bytes(), b"x")]),
        ),
        (
            "relative symlink escape",
            tar_of(&[
                Entry::Symlink("up", "../../../../../../../../.."),
                Entry::RawFile(format!("up{abs}").as_bytes(), b"x"),
            ]),
        ),
        (
            "hard link to a host file",
            tar_of(&[Entry::Hardlink("passwd", "/etc/passwd")]),
        ),
        (
            "hard link climbing out",
            tar_of(&[Entry::Hardlink("passwd", "../../../../../../etc/passwd")]),
        ),
        ("absurd size header", {
            let mut t = tar_of(&[Entry::File("huge", b"", 0o644)]);
            // size field: 11 octal digits at offset 124: 77777777777 (8 GiB - 1), no data.
            t[124..135].copy_from_slice(b"77777777777");
            let mut h = tar::Header::from_byte_slice(&t[..512]).clone();
            h.set_cksum();
            t[..512].copy_from_slice(h.as_bytes());
            t
        }),
        (
            "not a tar at all",
            b"this is not a tarball, not even close".repeat(20),
        ),
    ];
    for (what, data) in cases {
        let f = work.path().join("evil.tar");
        std::fs::write(&f, &data).unwrap();
        let e = bi(s, &["import", f.to_str().unwrap(), "evil:1"]);
        assert_ne!(e.status, 0, "{what}: accepted");
        assert!(
            e.stderr.contains("invalid layer") || e.stderr.contains("invalid image archive"),
            "{what}: {}",
            e.stderr
        );
        assert!(!outside.exists(), "{what}: wrote outside the store");
        assert_consistent_and_empty(s);
    }
    // An absolute symlink resolves inside the image's root, as it would in a chroot
    // (images rely on this: /var/run -> /run): the write lands inside the store.
    let f = work.path().join("abs-link.tar");
    std::fs::write(
        &f,
        tar_of(&[
            Entry::Symlink("esc", &canary_dir.to_string_lossy()),
            Entry::File("esc/pwned", b"x", 0o644),
        ]),
    )
    .unwrap();
    ok(bi(s, &["import", f.to_str().unwrap(), "confined:1"]));
    let root = PathBuf::from(ok(bi(s, &["rootfs", "confined:1"])).stdout.trim());
    assert!(
        root.join(outside.strip_prefix("/").unwrap()).is_file(),
        "written inside the image root"
    );
    assert!(!outside.exists());
    ok(bi(s, &["rmi", "confined:1"]));
    assert_consistent_and_empty(s);
    // A docker-save archive whose entries climb out.
    let evil = tar_of(&[Entry::RawFile(b"../../outside/pwned", b"x")]);
    let f = work.path().join("evil-save.tar");
    std::fs::write(&f, evil).unwrap();
    let e = bi(s, &["load", "-i", f.to_str().unwrap()]);
    assert!(e.stderr.contains("climbs out"), "{}", e.stderr);
    assert!(!outside.exists());
    assert_consistent_and_empty(s);
    assert_eq!(std::fs::read_dir(&canary_dir).unwrap().count(), 0);
}

#[test]
fn kill_9_during_a_pull_leaves_a_consistent_store_and_the_next_pull_resumes() {
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let layouts = TempDir::new("layout").unwrap();
    let small1 = Layer::gzip(tar_of(&[Entry::File("a", b"first", 0o644)]));
    let small2 = Layer::gzip(tar_of(&[Entry::File("b", b"second", 0o644)]));
    let big_data = oci::noise(48 << 20, 7);
    let big = Layer::plain(tar_of(&[Entry::File("big", &big_data, 0o644)]));
    oci::write_layout(
        layouts.path(),
        vec![(
            "1",
            Node::Image(TestImage::new(vec![small1, small2, big], &["/a"])),
        )],
    )
    .unwrap();
    drop(big_data);
    let name = format!("{}/test/big:1", reg.host);
    seed(layouts.path(), "1", &name, None);
    // skopeo compresses the plain layer on the way: take the digests the registry has.
    let raw: serde_json::Value = serde_json::from_str(
        &skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ])
        .stdout,
    )
    .unwrap();
    let hex = |i: usize| raw["layers"][i]["digest"].as_str().unwrap()[7..].to_owned();
    let (h1, h2, hb) = (hex(0), hex(1), hex(2));
    let store = TempDir::new("store").unwrap();
    let s = store.path();
    // One download at a time, in layer order, through a proxy that slows the registry to
    // 16 MB/s: the small ones complete, then the big one is caught mid-way.
    let slow = Throttle::start(&reg.host, 16 << 20).unwrap();
    let slow_name = format!("{}/test/big:1", slow.host);
    let mut child = Command::new(built_binary("berth-image"))
        .arg("--root")
        .arg(s)
        .args(["pull", "--max-concurrent-downloads", "1", &slow_name])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(layouts.path().join("pull.err")).unwrap())
        .spawn()
        .unwrap();
    let partial = s.join("ingest").join(format!("{hb}.partial"));
    let t0 = Instant::now();
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < (1 << 20) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the big layer never started downloading"
        );
        if let Some(st) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(layouts.path().join("pull.err")).unwrap_or_default();
            panic!("the pull finished ({st}) before it could be killed: {err}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(slow);
    let have = std::fs::metadata(&partial).unwrap().len();
    assert!(
        have < raw["layers"][2]["size"].as_u64().unwrap(),
        "killed mid-download ({have} bytes)"
    );
    assert!(
        s.join("blobs/sha256").join(&h1).is_file() && s.join("blobs/sha256").join(&h2).is_file()
    );
    assert!(
        !s.join("blobs/sha256").join(&hb).exists(),
        "no partial blob is ever visible"
    );
    let v = ok(bi(s, &["verify"]));
    assert!(v.stdout.contains("store is consistent"));
    assert_eq!(ok(bi(s, &["images", "-q"])).stdout, "", "no image recorded");
    let mtime = |h: &str| {
        std::fs::metadata(s.join("blobs/sha256").join(h))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = (mtime(&h1), mtime(&h2));
    let out = ok(bi(s, &["pull", &name]));
    assert!(
        out.stdout
            .contains(&format!("{}: Already exists", &h1[..12])),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("{}: Already exists", &h2[..12])),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("{}: resuming download at {have} of", &hb[..12])),
        "{}",
        out.stdout
    );
    assert_eq!(
        (mtime(&h1), mtime(&h2)),
        before,
        "complete blobs were not fetched again"
    );
    ok(bi(s, &["verify"]));
    let root = PathBuf::from(ok(bi(s, &["rootfs", &name])).stdout.trim());
    assert_eq!(std::fs::metadata(root.join("big")).unwrap().len(), 48 << 20);
}
