//! `gpu-check`: the paper-sized pretraining step (ViT-B/16 + 6-layer BERT, heads 2048 → 128,
//! 500 prototypes, a shard of 72 pairs) on a GPU: its losses against the CPU's on the same
//! batch and weights, then the training throughput in pairs per second.
//!
//! Run by `ci/gpu-check.sh` (which builds it with `--features cuda`). Prints one JSON line per
//! figure and `gpu-check: PASS` or `FAIL`.
//!
//! Spec: `hyperparameters.md` §1 (sizes). **Deviation:** none.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "gpu-check", about = "Paper-sized MGCA step on the GPU against the CPU")]
struct Args {
    /// Pairs in the batch (one shard of the reference).
    #[arg(long, default_value_t = 72)]
    batch: usize,
    /// Timed training steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Relative tolerance of GPU losses against CPU losses.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f64,
    /// Skip the CPU comparison (throughput only).
    #[arg(long)]
    no_cpu: bool,
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::time::Instant;

    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Int, Tensor, TensorData};
    use mgca::backend::GradientLink;
    use mgca::config::MgcaConfig;
    use mgca::loss::{CtaEngine, Objective};
    use mgca::model::batchnorm::Mode;
    use mgca::model::mgca::{Mgca, MgcaBatch};
    use mgca::pretrain::losses::Losses;
    use mgca::text::words::WordGrouping;

    /// A deterministic batch: smooth formula images and reports of 20–112 tokens with word pieces.
    fn batch<B: burn::tensor::backend::Backend>(config: &MgcaConfig, n: usize, device: &B::Device) -> MgcaBatch<B> {
        let s = config.image_size();
        let l = config.train.max_tokens;
        let images = mgca::parity::formula_images(n, s).values;
        let mut state = 12345u64;
        let reports = mgca::parity::synthetic_reports(
            n,
            l,
            |b| 20 + (b * 37) % (l - 20 + 1),
            4,
            |_, _| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                1000 + (state >> 33) as i64 % 20000
            },
        );
        MgcaBatch {
            images: Tensor::from_data(TensorData::new(images, [n, 3, s, s]), device),
            ids: Tensor::<B, 2, Int>::from_data(TensorData::new(reports.ids, [n, l]), device),
            mask: Tensor::from_data(TensorData::new(reports.mask, [n, l]), device),
            words: WordGrouping::from_tokens(&reports.tokens),
            dropout: None,
        }
    }

    fn losses<B: AutodiffBackend + GradientLink>(
        model: &Mgca<B>,
        config: &MgcaConfig,
        engine: CtaEngine,
        batch: MgcaBatch<B>,
    ) -> (Losses, Tensor<B, 1>) {
        let inputs = model.clone().renormalize_prototypes().forward(batch, Mode::Train);
        let out = Objective::new(config.objective.clone()).with_engine(engine).forward(inputs);
        (mgca::pretrain::read_losses(&out), out.total)
    }

    pub fn check(args: &super::Args) -> Result<bool, String> {
        use burn::optim::{GradientsParams, Optimizer};
        use mgca::backend::{CpuAutodiff, CudaAutodiff, cpu_device};
        if !mgca::backend::cuda_driver_present() {
            return Err("no CUDA driver (libcuda.so.1) on this machine".into());
        }
        let config = MgcaConfig::reference();
        let gpu = burn::backend::cuda::CudaDevice::new(0);
        let cpu_model = config.init_model_seeded::<CpuAutodiff>(config.train.seed as u64, &cpu_device());
        // The same weights on the GPU, through a full-precision record.
        let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
            .record(burn::module::Module::into_record(cpu_model.clone()), ())
            .map_err(|e| e.to_string())?;
        let record =
            Recorder::<CudaAutodiff>::load(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), bytes, &gpu)
                .map_err(|e| e.to_string())?;
        let gpu_model = burn::module::Module::load_record(config.init_model::<CudaAutodiff>(&gpu), record);
        let mut pass = true;
        let started = Instant::now();
        let (g, _) = losses(&gpu_model, &config, CtaEngine::Graph, batch(&config, args.batch, &gpu));
        println!(r#"{{"figure":"gpu_first_forward_s","value":{:.3}}}"#, started.elapsed().as_secs_f64());
        if !args.no_cpu {
            let started = Instant::now();
            let (c, _) = losses(&cpu_model, &config, CtaEngine::FusedCpu, batch(&config, args.batch, &cpu_device()));
            println!(r#"{{"figure":"cpu_forward_s","value":{:.3}}}"#, started.elapsed().as_secs_f64());
            for (name, a, b) in [
                ("loss", g.loss, c.loss),
                ("loss_ita", g.loss_ita, c.loss_ita),
                ("loss_local", g.loss_local, c.loss_local),
                ("loss_proto", g.loss_proto, c.loss_proto),
            ] {
                let rel = (a - b).abs() / b.abs().max(1e-12);
                let ok = rel <= args.tolerance;
                pass &= ok;
                println!(r#"{{"figure":"{name}","gpu":{a},"cpu":{b},"relative":{rel:.3e},"ok":{ok}}}"#);
            }
        }
        // Throughput: full steps (forward, backward, AdamW) at the reference's learning rate.
        let mut model = gpu_model;
        let mut optim = mgca::pretrain::adamw(&config).init::<CudaAutodiff, Mgca<CudaAutodiff>>();
        let mut index = 0;
        let mut step = |model: Mgca<CudaAutodiff>| {
            let model = model.renormalize_prototypes();
            // Training mode as the trainer runs it, the text encoder's dropout included.
            let key = mgca::model::dropout::DropoutKey::new(config.train.seed as u64, index, 0);
            index += 1;
            let b = MgcaBatch { dropout: Some((config.text_dropout, key)), ..batch(&config, args.batch, &gpu) };
            let (l, total) = losses(&model, &config, CtaEngine::Graph, b);
            let grads = GradientsParams::from_grads(total.backward(), &model);
            (optim.step(2e-5, model, grads), l)
        };
        for _ in 0..2 {
            model = step(model).0;
        }
        let started = Instant::now();
        let mut last = Losses::default();
        for _ in 0..args.steps {
            (model, last) = step(model);
        }
        let seconds = started.elapsed().as_secs_f64();
        let finite = last.is_finite();
        pass &= finite;
        println!(
            r#"{{"figure":"train_pairs_per_s","value":{:.1},"steps":{},"batch":{},"seconds":{seconds:.2},"last_loss":{},"finite":{finite}}}"#,
            (args.batch * args.steps) as f64 / seconds,
            args.steps,
            args.batch,
            last.loss
        );
        Ok(pass)
    }
}

#[cfg(feature = "cuda")]
use gpu::check;

#[cfg(not(feature = "cuda"))]
fn check(_: &Args) -> Result<bool, String> {
    Err("built without `--features cuda`; ci/gpu-check.sh builds it with CUDA".into())
}

fn main() -> ExitCode {
    mgca::backend::tune_allocator();
    let args = Args::parse();
    match check(&args) {
        Ok(true) => {
            println!("gpu-check: PASS");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("gpu-check: FAIL");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gpu-check: {e}");
            ExitCode::from(2)
        }
    }
}
