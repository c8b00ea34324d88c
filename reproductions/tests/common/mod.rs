//! Helpers shared by the reproductions' integration tests: a fresh temporary folder, the
//! `pretrain` binary run as a user runs it, and a folder's files with their bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh, empty folder for one test (named after it and the process).
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-repro-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pretrain --config CONFIG --out OUT --no-progress EXTRA…`.
#[allow(dead_code)] // not every test crate that includes this module runs pretraining
pub fn pretrain(config: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretrain"))
        .args(["--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-progress"])
        .args(extra)
        .output()
        .unwrap()
}

/// Every file under `dir` and its bytes, by relative path.
#[allow(dead_code)] // not every test crate that includes this module compares trees
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}
