//! The device path of dropout (the one CUDA takes), run on the CPU backend in a process of its
//! own: burn's generator is global, so no other test may draw from it meanwhile.

use mgca::backend::{Cpu, CpuAutodiff, cpu_device};
use mgca::kernels::on_cpu;
use mgca::model::dropout::{DropoutKey, device_keep_mask};

/// The same key draws the same mask, also when threads draw concurrently; different keys
/// draw different masks; about 1 − p of the elements survive.
#[test]
fn device_masks_are_keyed_under_concurrency() {
    let dev = cpu_device();
    let keys: Vec<DropoutKey> = (0..8).map(|step| DropoutKey::new(5, step, 0)).collect();
    let draw = |k: DropoutKey| device_keep_mask::<Cpu, 1>(k, [20_000], 0.1, &dev).into_data().to_vec::<f32>().unwrap();
    let alone: Vec<Vec<f32>> = keys.iter().map(|k| draw(*k)).collect();
    let together: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = keys.iter().map(|k| s.spawn(move || draw(*k))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(alone == together, "a mask depends on its key alone");
    assert!(alone[0] != alone[1], "different keys, different masks");
    let kept = alone[0].iter().sum::<f32>() / 20_000.0;
    assert!((kept - 0.9).abs() < 0.01, "{kept}");
    assert!(alone[0].iter().all(|v| *v == 0.0 || *v == 1.0));
    // The CPU backend itself takes the host path.
    assert!(on_cpu::<Cpu>() && on_cpu::<CpuAutodiff>());
}
