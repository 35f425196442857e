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

/// The allocator's memory formula (scripts/nitro/lib.sh, docs/DEPLOY.md's
/// "Memory budget") counts the model server's budgets as limits.rs sets them.
#[test]
fn the_allocator_formula_counts_the_servers_budgets() {
    use shared::limits::{FRAME_MEMORY_BUDGET, IMAGE_MEMORY_BUDGET};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = std::fs::read_to_string(root.join("scripts/nitro/lib.sh")).unwrap();
    let value = |name: &str| -> u64 {
        let line = lib.lines().find(|l| l.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("{name} not in lib.sh"));
        line[name.len() + 1..].parse().unwrap_or_else(|_| panic!("{line}: not a number"))
    };
    const MIB: u64 = 1024 * 1024;
    assert_eq!(value("IMAGE_BUDGET_MIB"), IMAGE_MEMORY_BUDGET / MIB);
    assert_eq!(value("FRAME_BUDGET_MIB"), FRAME_MEMORY_BUDGET.div_ceil(MIB));
}
