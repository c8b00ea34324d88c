//! Helpers shared by the `mgca` binary's integration tests: where the committed golden files
//! are, a scratch folder per test, and the binary itself.
//!
//! Not every test crate that includes this module uses every helper, hence the `dead_code`
//! allowances.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `path` under the repository's `golden/` folder (`golden("pytorch/resnet/x.safetensors")`).
#[allow(dead_code)]
pub fn golden(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(path)
}

/// The `.safetensors` files of the golden folder `dir`, sorted.
#[allow(dead_code)]
pub fn golden_cases(dir: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    cases.sort();
    cases
}

/// A folder under the system's temporary folder for one test, unique to this test crate
/// (`crate_tag`), the process and `name`.
#[allow(dead_code)]
pub fn scratch(crate_tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-{crate_tag}-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `mgca` binary, as a user runs it.
#[allow(dead_code)]
pub fn mgca() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mgca"))
}

/// Run `f` alone among this test crate's run-level tests, on a rayon pool of its own: a run's
/// initialisation and dropout masks draw from the backend's one global generator (burn-flex
/// keeps a single seeded generator per process), so another test drawing random numbers at the
/// same time would change the run; and parallel reductions should split as in the binaries.
/// Each run-level golden test is an integration-test crate of its own for the same reason
/// (cargo runs test crates one after another).
#[allow(dead_code)]
pub fn alone<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool").install(f)
}
