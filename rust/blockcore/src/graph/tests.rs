use super::*;
use tempfile::TempDir;

fn raw_graph(size: u64) -> (TempDir, Graph) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("r.raw");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut g = Graph::new();
    g.add_file("f0", path.to_str().unwrap(), false).unwrap();
    g.add_format("disk0", "raw", "f0", false).unwrap();
    (dir, g)
}

fn gran(b: u64) -> Granularity {
    Granularity::new(b).unwrap()
}

#[test]
fn write_marks_node_and_file_child_bitmaps() {
    let (_d, mut g) = raw_graph(1 << 20);
    g.bitmap_add("disk0", "top", gran(65536), true, false)
        .unwrap();
    g.bitmap_add("f0", "low", gran(4096), true, false).unwrap();
    g.write("disk0", 100, WriteKind::Data, &[1; 10], 10)
        .unwrap();
    assert_eq!(g.bitmap("disk0", "top").unwrap().bits.count(), 65536);
    assert_eq!(g.bitmap("f0", "low").unwrap().bits.count(), 4096);
    assert_eq!(g.read("disk0", 100, 10).unwrap(), vec![1; 10]);
}

#[test]
fn bitmaps_list_newest_first_and_names_unique() {
    let (_d, mut g) = raw_graph(1 << 20);
    g.bitmap_add("disk0", "a", gran(512), true, false).unwrap();
    g.bitmap_add("disk0", "b", gran(512), false, false).unwrap();
    let names: Vec<_> = g
        .get("disk0")
        .unwrap()
        .bitmaps
        .iter()
        .map(|b| b.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["b", "a"]);
    assert!(matches!(
        g.bitmap_add("disk0", "a", gran(512), true, false),
        Err(GraphError::BitmapExists(_))
    ));
}

#[test]
fn remove_node_with_parent_is_refused() {
    let (_d, mut g) = raw_graph(4096);
    assert!(matches!(g.remove_node("f0"), Err(GraphError::NodeInUse(_))));
    g.remove_node("disk0").unwrap();
    g.remove_node("f0").unwrap();
    assert_eq!(g.nodes().count(), 0);
}

#[test]
fn take_and_put_restore_bitmap_position() {
    let (_d, mut g) = raw_graph(1 << 20);
    for n in ["a", "b", "c"] {
        g.bitmap_add("disk0", n, gran(512), true, false).unwrap();
    }
    let (pos, bm) = g.bitmap_take("disk0", "b").unwrap();
    g.bitmap_put("disk0", pos, bm).unwrap();
    let names: Vec<_> = g
        .get("disk0")
        .unwrap()
        .bitmaps
        .iter()
        .map(|b| b.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["c", "b", "a"]);
}

#[test]
fn write_past_end_is_refused_and_marks_nothing() {
    let (_d, mut g) = raw_graph(4096);
    g.bitmap_add("disk0", "a", gran(512), true, false).unwrap();
    assert!(g
        .write("disk0", 4000, WriteKind::Data, &[0; 200], 200)
        .is_err());
    assert_eq!(g.bitmap("disk0", "a").unwrap().bits.count(), 0);
}

/// A graph with qcow2 nodes `base` (read-only, 1 MiB of 0x11 then zeros) and `top` (empty,
/// writable, no backing child yet) and a backend `drv0` on `base`.
fn chain_graph() -> (TempDir, Graph) {
    let dir = TempDir::new().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    format::create_image("qcow2", &path("base.qcow2"), 4 << 20, None, None).unwrap();
    format::create_image("qcow2", &path("top.qcow2"), 4 << 20, None, None).unwrap();
    let mut g = Graph::new();
    g.add_file("base-file", &path("base.qcow2"), false).unwrap();
    g.add_format("base", "qcow2", "base-file", false).unwrap();
    g.write("base", 0, WriteKind::Data, &[0x11; 1 << 20], 1 << 20)
        .unwrap();
    g.add_file("top-file", &path("top.qcow2"), false).unwrap();
    g.add_format("top", "qcow2", "top-file", false).unwrap();
    g.add_backend("drv0", Some("base")).unwrap();
    (dir, g)
}

#[test]
fn append_overlay_repoints_parents_and_reads_through() {
    let (_d, mut g) = chain_graph();
    g.append_overlay("base", "top").unwrap();
    assert_eq!(g.backend("drv0").unwrap().root.as_deref(), Some("top"));
    assert_eq!(g.backing_of("top").as_deref(), Some("base"));
    assert_eq!(g.parents("base"), vec![("top".into(), "backing".into())]);
    assert_eq!(g.read("top", 0, 3).unwrap(), vec![0x11; 3]);
    g.write("top", 10, WriteKind::Data, &[0x22; 5], 5).unwrap();
    assert_eq!(
        g.read("top", 8, 9).unwrap(),
        [0x11, 0x11, 0x22, 0x22, 0x22, 0x22, 0x22, 0x11, 0x11]
    );
    assert_eq!(g.read("base", 10, 1).unwrap(), vec![0x11]);
    // Undo: the backend is back on base, top has no backing and reads its own clusters only.
    g.remove_overlay("top", "base").unwrap();
    assert_eq!(g.backend("drv0").unwrap().root.as_deref(), Some("base"));
    assert_eq!(g.backing_of("top"), None);
    // The written cluster was copied up whole; the next one was never written.
    assert_eq!(g.read("top", 8, 4).unwrap(), [0x11, 0x11, 0x22, 0x22]);
    assert_eq!(g.read("top", 65536, 2).unwrap(), [0, 0]);
    assert!(g.parents("base").iter().all(|(p, _)| p != "top"));
}

#[test]
fn backing_refuses_cycles_and_formats_without_backing() {
    let (_d, mut g) = chain_graph();
    g.set_backing("top", Some("base")).unwrap();
    let err = g.set_backing("base", Some("top")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Making 'top' a backing child of 'base' would create a cycle"
    );
    assert!(matches!(
        g.append_overlay("top", "top"),
        Err(GraphError::Cycle { .. })
    ));
    let err = g.set_backing("base-file", Some("top")).unwrap_err();
    assert!(
        matches!(err, GraphError::Format(FormatError::Unsupported(_))),
        "{err}"
    );
    assert!(matches!(
        g.set_backing("top", Some("nope")),
        Err(GraphError::NodeNotFound(_))
    ));
    // Detaching and re-attaching is allowed.
    g.set_backing("top", None).unwrap();
    g.set_backing("top", Some("base")).unwrap();
}

#[test]
fn backing_shorter_than_overlay_reads_zeros_past_its_end() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("b.raw");
    std::fs::write(&raw, vec![0x77u8; 1000]).unwrap();
    let top = dir.path().join("t.qcow2");
    format::create_image("qcow2", top.to_str().unwrap(), 1 << 20, None, None).unwrap();
    let mut g = Graph::new();
    g.add_file("bf", raw.to_str().unwrap(), true).unwrap();
    g.add_format("b", "raw", "bf", true).unwrap();
    g.add_file("tf", top.to_str().unwrap(), false).unwrap();
    g.add_format("t", "qcow2", "tf", false).unwrap();
    g.set_backing("t", Some("b")).unwrap();
    let got = g.read("t", 990, 20).unwrap();
    assert_eq!(&got[..10], &[0x77; 10]);
    assert_eq!(&got[10..], &[0; 10]);
    // Copy-up of the partial cluster takes the short backing's bytes and zeros past its end.
    g.write("t", 5000, WriteKind::Data, &[1; 4], 4).unwrap();
    g.set_backing("t", None).unwrap();
    assert_eq!(
        g.read("t", 996, 8).unwrap(),
        [0x77, 0x77, 0x77, 0x77, 0, 0, 0, 0]
    );
}

#[test]
fn reopen_read_only_marks_persistent_bitmaps_readonly_once() {
    let (_d, mut g) = chain_graph();
    g.bitmap_add("base", "p", gran(65536), true, true).unwrap();
    g.bitmap_add("base", "t", gran(65536), true, false).unwrap();
    assert!(g.reopen_read_only("base").unwrap().is_empty());
    assert!(g.get("base").unwrap().read_only && g.get("base-file").unwrap().read_only);
    assert!(g.bitmap("base", "p").unwrap().state.readonly);
    assert!(!g.bitmap("base", "t").unwrap().state.readonly);
    let stored = g.get("base").unwrap().format().unwrap().facts();
    assert_eq!(stored.qcow2.unwrap().bitmaps.len(), 1);
    // A second reopen is a no-op.
    assert!(g.reopen_read_only("base").unwrap().is_empty());
    assert!(matches!(
        g.write("base", 0, WriteKind::Data, &[0; 512], 512),
        Err(GraphError::Format(FormatError::ReadOnly))
    ));
}

#[test]
fn internal_snapshot_errors() {
    let (_d, mut g) = raw_graph(1 << 20);
    let p = SnapshotParams::default();
    let err = g.snapshot_create("disk0", &p).unwrap_err();
    assert!(
        matches!(&err, GraphError::Format(e) if e.errno() == 95),
        "{err}"
    );
    assert!(matches!(g.snapshots("disk0"), Err(GraphError::Format(e)) if e.errno() == 95));
    let (_d2, mut g) = chain_graph();
    let s = g
        .snapshot_create(
            "top",
            &SnapshotParams {
                name: vec![b'n'; 300],
                ..p
            },
        )
        .unwrap();
    assert_eq!((s.id.as_str(), s.name.len()), ("1", 255));
    let err = g.snapshot_delete("top", Some("2"), None).unwrap_err();
    assert!(matches!(
        err,
        GraphError::SnapshotNotFound {
            id: Some(_),
            name: None
        }
    ));
    let err = g.snapshot_delete("top", None, None).unwrap_err();
    assert!(matches!(
        err,
        GraphError::SnapshotNotFound {
            id: None,
            name: None
        }
    ));
    assert_eq!(g.snapshot_delete("top", Some("1"), None).unwrap().id, "1");
    g.reopen_read_only("top").unwrap();
    let err = g
        .snapshot_create("top", &SnapshotParams::default())
        .unwrap_err();
    assert!(matches!(err, GraphError::Format(FormatError::ReadOnly)));
}

#[test]
fn qcow2_nodes_lock_their_files_as_qemu() {
    let (d, mut g) = chain_graph();
    let top = d.path().join("top.qcow2");
    let top = top.to_str().unwrap();
    // A second writable qcow2 node on an image in use fails before reading anything.
    g.add_file("again-file", top, false).unwrap();
    let err = g
        .add_format("again", "qcow2", "again-file", false)
        .unwrap_err();
    assert_eq!(err.to_string(), "Failed to get \"write\" lock");
    let err = g
        .add_format("again", "qcow2", "again-file", true)
        .unwrap_err();
    assert_eq!(err.to_string(), "Failed to get shared \"write\" lock");
    // Raw over the same file takes no locks; neither does a file node with locking off.
    g.add_format("as-raw", "raw", "again-file", false).unwrap();
    g.add_file_with("nolock-file", top, false, false).unwrap();
    g.add_format("nolock", "qcow2", "nolock-file", false)
        .unwrap();
    // Creating an image over a file in use is refused and leaves it alone.
    let len = std::fs::metadata(top).unwrap().len();
    let err = format::create_image("qcow2", top, 1 << 20, None, None).unwrap_err();
    assert!(matches!(&err, FormatError::Locked(m) if m == "Failed to get \"write\" lock"));
    assert_eq!(std::fs::metadata(top).unwrap().len(), len);
    // Read-only users share consistent reads with each other.
    g.reopen_read_only("nolock").unwrap();
    g.remove_node("nolock").unwrap();
    g.reopen_read_only("top").unwrap();
    g.add_format("ro2", "qcow2", "again-file", true).unwrap();
    // Once every qcow2 user is gone, the file is free again.
    g.remove_node("ro2").unwrap();
    g.remove_node("top").unwrap();
    format::create_image("qcow2", top, 1 << 20, None, None).unwrap();
    // `quit` (close_all) releases every lock although the graph still exists.
    let base = d.path().join("base.qcow2");
    let base = base.to_str().unwrap();
    assert!(format::create_image("qcow2", base, 1 << 20, None, None).is_err());
    assert!(g.close_all().is_empty());
    format::create_image("qcow2", base, 1 << 20, None, None).unwrap();
}

#[test]
fn second_qcow2_parent_of_one_file_node_conflicts_as_in_qemu() {
    let (_d, mut g) = chain_graph();
    let err = g.add_format("b", "qcow2", "top-file", true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Permission conflict on node 'top-file': permissions 'write, resize' are both required by node 'top' (uses node 'top-file' as 'file' child) and unshared by node 'b' (uses node 'top-file' as 'file' child)."
    );
    let err = g.add_format("c", "qcow2", "top-file", false).unwrap_err();
    assert!(err.to_string().contains("required by node 'top'"), "{err}");
    assert!(err.to_string().contains("unshared by node 'c'"), "{err}");
    // Raw takes nothing, so it fits; two read-only qcow2 parents share what they need.
    g.add_format("r", "raw", "top-file", false).unwrap();
    g.reopen_read_only("top").unwrap();
    g.add_format("ro", "qcow2", "top-file", true).unwrap();
}

#[test]
fn reserved_name_keeps_place_before_children_added_later() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("r.raw");
    std::fs::File::create(&path).unwrap().set_len(4096).unwrap();
    let path = path.to_str().unwrap();
    let mut g = Graph::new();
    g.add_file("old", path, true).unwrap();
    // blkdebug is named before it opens its image: the image is the newer node.
    g.reserve_name("dbg").unwrap();
    g.add_file("img", path, true).unwrap();
    g.add_blkdebug("dbg", "img", true, Vec::new(), Vec::new())
        .unwrap();
    let names: Vec<_> = g.nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["img", "dbg", "old"]);
    assert!(!g.is_reserved("dbg"));
}

#[test]
fn reserved_name_is_taken_until_released() {
    let mut g = Graph::new();
    g.reserve_name("n").unwrap();
    assert!(matches!(g.reserve_name("n"), Err(GraphError::NameInUse(_))));
    assert!(matches!(
        g.add_null("n2", 512, false).and(g.reserve_name("n")),
        Err(GraphError::NameInUse(_))
    ));
    g.release_name("n");
    g.add_null("n", 512, false).unwrap();
    let names: Vec<_> = g.nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["n", "n2"]);
}

#[test]
fn nested_reservations_list_outer_oldest() {
    let mut g = Graph::new();
    g.reserve_name("outer").unwrap();
    g.reserve_name("inner").unwrap();
    g.add_null("leaf", 512, false).unwrap();
    g.add_null("inner", 512, false).unwrap();
    g.add_null("outer", 512, false).unwrap();
    let names: Vec<_> = g.nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["leaf", "inner", "outer"]);
}

fn qcow2_chain(dir: &TempDir) -> Graph {
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    let (base, top) = (base.to_str().unwrap(), top.to_str().unwrap());
    format::create_image("qcow2", base, 1 << 20, None, None).unwrap();
    format::create_image("qcow2", top, 1 << 20, Some(base), Some("qcow2")).unwrap();
    let mut g = Graph::new();
    g.add_file("bf", base, false).unwrap();
    g.add_format("base", "qcow2", "bf", false).unwrap();
    g.write("base", 0, WriteKind::Data, &[0x11; 4096], 4096)
        .unwrap();
    g.add_file("tf", top, false).unwrap();
    g.add_format("top", "qcow2", "tf", false).unwrap();
    g.set_backing("top", Some("base")).unwrap();
    g
}

#[test]
fn copy_on_read_copies_clusters_without_marking_child_bitmaps() {
    let dir = TempDir::new().unwrap();
    let mut g = qcow2_chain(&dir);
    g.add_copy_on_read("cor", "top", false, None).unwrap();
    g.bitmap_add("cor", "b0", gran(4096), true, false).unwrap();
    g.bitmap_add("top", "b1", gran(4096), true, false).unwrap();
    assert!(!g.is_allocated("top", 0).unwrap());

    assert_eq!(g.read("cor", 100, 10).unwrap(), vec![0x11; 10]);

    assert!(g.is_allocated("top", 0).unwrap());
    assert!(!g.is_allocated("top", 65536).unwrap());
    assert_eq!(g.bitmap("top", "b1").unwrap().bits.count(), 0);
    assert_eq!(g.bitmap("cor", "b0").unwrap().bits.count(), 0);
    g.write("cor", 0, WriteKind::Data, &[2; 512], 512).unwrap();
    assert_eq!(g.bitmap("top", "b1").unwrap().bits.count(), 4096);
    assert_eq!(g.bitmap("cor", "b0").unwrap().bits.count(), 4096);
}

#[test]
fn copy_on_read_with_bottom_copies_chain_data_but_not_zeros() {
    let dir = TempDir::new().unwrap();
    let mut g = qcow2_chain(&dir);
    g.add_copy_on_read("cor", "top", false, Some("base"))
        .unwrap();

    assert_eq!(g.read("cor", 0, 4096).unwrap(), vec![0x11; 4096]);
    assert_eq!(g.read("cor", 65536, 4096).unwrap(), vec![0; 4096]);

    assert!(g.is_allocated("top", 0).unwrap());
    assert!(!g.is_allocated("top", 65536).unwrap());
}

#[test]
fn copy_on_read_without_bottom_copies_zeros_too() {
    let dir = TempDir::new().unwrap();
    let mut g = qcow2_chain(&dir);
    g.add_copy_on_read("cor", "top", false, None).unwrap();

    g.read("cor", 65536, 4096).unwrap();

    assert!(g.is_allocated("top", 65536).unwrap());
}

#[test]
fn raw_over_null_co_drops_writes_and_marks_both_bitmaps() {
    let mut g = Graph::new();
    g.add_null("n0", 1 << 20, false).unwrap();
    g.add_format("r0", "raw", "n0", false).unwrap();
    assert_eq!(g.get("r0").unwrap().length().unwrap(), 1 << 20);
    g.bitmap_add("r0", "top", gran(65536), true, false).unwrap();
    g.bitmap_add("n0", "low", gran(4096), true, false).unwrap();
    g.write("r0", 8192, WriteKind::Data, &[0x5a; 4096], 4096)
        .unwrap();
    assert_eq!(g.read("r0", 8192, 4096).unwrap(), vec![0; 4096]);
    assert_eq!(g.bitmap("r0", "top").unwrap().bits.count(), 65536);
    assert_eq!(g.bitmap("n0", "low").unwrap().bits.count(), 4096);
}

#[test]
fn qcow2_over_null_co_is_not_qcow2() {
    let mut g = Graph::new();
    g.add_null("n0", 1 << 20, false).unwrap();
    let err = g.add_format("q0", "qcow2", "n0", false).unwrap_err();
    assert!(err.to_string().contains("not in qcow2 format"), "{err}");
    assert!(g.node("q0").is_none());
}

#[test]
fn truncate_raw_resizes_file_first_and_bitmaps_follow() {
    let (_d, mut g) = raw_graph(1 << 20);
    g.bitmap_add("disk0", "top", gran(65536), true, false)
        .unwrap();
    g.write("disk0", 960 << 10, WriteKind::Data, &[1; 65536], 65536)
        .unwrap();

    g.truncate("disk0", 1000, false).unwrap();

    assert_eq!(g.get("disk0").unwrap().length().unwrap(), 1000);
    assert_eq!(g.get("f0").unwrap().length().unwrap(), 1000);
    let bits = &g.bitmap("disk0", "top").unwrap().bits;
    assert_eq!((bits.len(), bits.count()), (1024, 0));
}

#[test]
fn truncate_file_under_raw_moves_the_raw_node_only_when_parents_follow() {
    let (_d, mut g) = raw_graph(1 << 20);

    g.truncate("f0", 2 << 20, false).unwrap();
    let kept = g.get("disk0").unwrap().length().unwrap();
    g.truncate("f0", 3 << 20, true).unwrap();

    assert_eq!(kept, 1 << 20);
    assert_eq!(g.get("disk0").unwrap().length().unwrap(), 3 << 20);
}

#[test]
fn truncate_refuses_null_co_and_read_only_nodes() {
    let mut g = Graph::new();
    g.add_null("n0", 1 << 20, false).unwrap();
    g.add_null("n1", 1 << 20, true).unwrap();

    let null = g.truncate("n0", 2 << 20, false).unwrap_err();
    let ro = g.truncate("n1", 2 << 20, false).unwrap_err();

    assert!(
        null.to_string().contains("does not support resize"),
        "{null}"
    );
    assert!(matches!(ro, GraphError::Format(FormatError::ReadOnly)));
}

#[test]
fn null_co_without_read_zeroes_leaves_the_fill() {
    let mut g = Graph::new();
    g.add_null_with("n0", 1 << 20, false, false).unwrap();
    g.add_null_with("z0", 1 << 20, false, true).unwrap();

    let kept = g.read_filled("n0", 0, 16, 0xab).unwrap();
    let zeroed = g.read_filled("z0", 0, 16, 0xab).unwrap();

    assert_eq!((kept, zeroed), (vec![0xab; 16], vec![0; 16]));
}

#[test]
fn copy_on_read_flag_copies_into_the_top_layer() {
    let (_d, mut g) = chain_graph();
    g.set_backing("top", Some("base")).unwrap();
    g.set_copy_on_read("top", true).unwrap();
    assert!(!g.is_allocated("top", 0).unwrap());

    let data = g.read("top", 0, 4096).unwrap();

    assert_eq!(data, vec![0x11; 4096]);
    assert!(g.is_allocated("top", 0).unwrap());
}

#[test]
fn reopen_read_only_stops_at_a_child_with_its_own_read_only() {
    let (_d, mut g) = chain_graph();
    g.keep_own_read_only("base-file").unwrap();
    g.reopen_read_only("base").unwrap();
    g.reopen_read_only("top").unwrap();
    let ro = |g: &Graph, n: &str| g.get(n).unwrap().read_only;
    assert!(ro(&g, "base") && !ro(&g, "base-file"));
    assert!(ro(&g, "top") && ro(&g, "top-file"));
}
