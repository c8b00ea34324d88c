//! Helpers shared by the crate's unit tests: where the committed golden files are, a scratch
//! folder per test, and the weight formula of the decoder fixtures.
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

/// The weights of a fixture whose tensors are not stored (`golden/pytorch/unet`,
/// `golden/reference/setr`): every float tensor of the state dict filled by a formula of its key
/// and element index, as their generators' `weight_values` (SplitMix64 of the key's FNV-1a hash
/// plus the index, scaled per kind, in f64, rounded once to f32), with the key list the
/// fixture's metadata holds (`keys`: `[[name, shape], …]`).
pub(crate) fn formula_weights(keys_json: &str) -> crate::tensor_file::TensorFile {
    let keys: Vec<(String, Vec<usize>)> = serde_json::from_str(keys_json).expect("the fixture's key list");
    let mut file = crate::tensor_file::TensorFile::default();
    for (name, shape) in keys {
        let values = formula_values(&name, &shape);
        file.tensors.insert(name, crate::tensor_file::HostTensor { shape, values });
    }
    file
}

fn formula_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let n: usize = shape.iter().product();
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / 16_777_216.0;
            let v = if name.ends_with("running_mean") {
                0.1 * (2.0 * u - 1.0)
            } else if name.ends_with("running_var") {
                0.5 + u
            } else if shape.len() == 4 {
                (2.0 * u - 1.0) * (1.0 / ((shape[1] * shape[2] * shape[3]) as f64).sqrt())
            } else if name.ends_with("weight") {
                0.5 + u
            } else {
                0.2 * (2.0 * u - 1.0)
            };
            v as f32
        })
        .collect()
}
