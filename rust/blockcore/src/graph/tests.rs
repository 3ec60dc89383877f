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
