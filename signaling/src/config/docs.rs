//! The documentation and the example configuration name every setting.

use super::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn every_key_is_documented_and_set_in_the_example() {
    let doc = std::fs::read_to_string(repo("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(repo("docs/fanout.example.yaml")).unwrap();
    for key in known_keys() {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/configuration.md lacks `{key}`"
        );
        assert!(
            example.contains(&format!("{key}:")),
            "docs/fanout.example.yaml lacks `{key}`"
        );
    }
}

#[test]
fn the_example_file_is_valid() {
    let s = load(
        Some(&repo("docs/fanout.example.yaml")),
        Vec::new(),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(s.media_drivers, Some(2));
    assert_eq!(s.drain_timeout, Duration::from_secs(600));
    assert_eq!(s.webhook_urls.len(), 1);
}
