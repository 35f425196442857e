//! The README's limits table must name every limit in shared/src/limits.rs,
//! so the documentation cannot fall behind the code.

#[test]
fn readme_lists_every_limit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let limits = std::fs::read_to_string(root.join("shared/src/limits.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let missing: Vec<&str> = limits
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "README.md's limits table lacks: {missing:?}");
}
