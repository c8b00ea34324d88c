//! Helpers shared by the crate's unit tests: where the committed golden files are, and a
//! scratch folder per test.
//!
//! Book: "Parity with the reference" (the golden files). Reference: none (test support).
//!
//! **Deviation:** none.

use std::path::PathBuf;

/// `path` under the repository's `golden/` folder (`golden("pytorch/resnet/x.safetensors")`).
pub(crate) fn golden(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(path)
}

/// A fresh folder under the system's temporary folder, unique to this process and `name`.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
