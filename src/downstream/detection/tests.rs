//! The detector and its task: shapes, what a training step may and may not change, and the
//! evaluation's round trip.

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::Tensor;

use super::*;
use crate::backend::{CpuAutodiff, cpu_device};
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::model::mgca::ImageEncoder;

fn smoke_backbone<B: Backend>(device: &B::Device) -> ResNet<B> {
    let config = MgcaConfig::smoke_for(ImageEncoderKind::Resnet50);
    match config.init_model_seeded::<B>(3, device).into_image_encoder() {
        ImageEncoder::ResNet(r) => r,
        ImageEncoder::Vit(_) => unreachable!("a ResNet preset"),
    }
}

fn flat<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    let mut values = Vec::new();
    let mut visitor = Collect { values: &mut values };
    module.visit(&mut visitor);
    values
}

struct Collect<'a> {
    values: &'a mut Vec<f32>,
}

/// Counts the parameters (and running statistics) of a module that have a gradient.
struct WithGradient<'a> {
    grads: &'a GradientsParams,
    count: usize,
}

impl burn::module::ModuleVisitor<CpuAutodiff> for WithGradient<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<CpuAutodiff, D>>) {
        self.count += usize::from(self.grads.get::<crate::backend::Cpu, D>(param.id).is_some());
    }
}

impl<B: Backend> burn::module::ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        self.values.extend(param.val().into_data().to_vec::<f32>().unwrap());
    }
}

fn running_stats<B: Backend>(r: &ResNet<B>) -> Vec<f32> {
    let (mean, var) = r.stem_running_stats();
    [mean, var].into_iter().flat_map(|t| t.into_data().to_vec::<f32>().unwrap()).collect()
}

/// One optimiser step of the detection loss: the neck moves, the backbone's parameters do
/// not; its BatchNorm statistics move in faithful mode and stay with `Frozen`.
#[test]
fn a_step_trains_the_neck_only() {
    type B = CpuAutodiff;
    let device = cpu_device();
    for (norm, stats_move) in [(BackboneNorm::Train, true), (BackboneNorm::Frozen, false)] {
        let backbone = smoke_backbone::<B>(&device);
        let neck = Detector::neck_config(&backbone);
        assert_eq!(neck.backbone_channels, [32, 64, 128]);
        let model = Detector::new(backbone, &neck, &device);
        let images = Tensor::<B, 4>::random([2, 3, 224, 224], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let heads = model.forward(images.clone(), Mode::Eval, Mode::Eval);
        assert_eq!(heads.each_ref().map(|h| h.dims()), [[2, 18, 7, 7], [2, 18, 14, 14], [2, 18, 28, 28]]);
        let boxes = vec![vec![TargetBox { class: 0, cx: 0.4, cy: 0.5, w: 0.2, h: 0.3 }], vec![]];
        let batch = DetectionBatch { images, boxes };
        let loss_config = YoloLossConfig::reference();
        let stats_before = running_stats(model.backbone());
        let neck_before = flat(&model.neck);
        let backbone_mode = if norm == BackboneNorm::Train { Mode::Train } else { Mode::Eval };
        let loss =
            yolo_loss(model.forward(batch.images.clone(), backbone_mode, Mode::Train), &batch.boxes, &loss_config).loss;
        let mut optim = burn::optim::AdamWConfig::new().init::<B, Detector<B>>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut backbone_grads = WithGradient { grads: &grads, count: 0 };
        model.backbone().visit(&mut backbone_grads);
        let mut neck_grads = WithGradient { grads: &grads, count: 0 };
        model.neck.visit(&mut neck_grads);
        assert_eq!(backbone_grads.count, 0, "{norm:?}: no backbone parameter has a gradient");
        assert!(neck_grads.count > 20, "{norm:?}: the neck's parameters have gradients");
        let model = optim.step(1e-3, model, grads);
        let changed = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert!(changed(&flat(&model.neck), &neck_before) > 0, "{norm:?}: the neck trains");
        let stats_after = running_stats(model.backbone());
        assert_eq!(changed(&stats_after, &stats_before) > 0, stats_move, "{norm:?}: running statistics");
        // The inner model evaluates to the same heads as the autodiff one in eval mode.
        let x = Tensor::<B, 4>::ones([1, 3, 224, 224], &device);
        let a = model.forward(x.clone(), Mode::Eval, Mode::Eval)[0].clone().into_data();
        let b = model.valid().forward(x.inner(), Mode::Eval, Mode::Eval)[0].clone().into_data();
        assert!(a.to_vec::<f32>().unwrap() == b.to_vec::<f32>().unwrap(), "inner and autodiff heads differ");
    }
}

/// Detections written into an evaluation's rows come back per image, `None` where an image had
/// none; the faithful and standard mAP of the rebuilt outputs differ as the rule says.
#[test]
fn evaluation_rows_round_trip() {
    let truth_row = [0.0, 0.5, 0.5, 0.2, 0.2];
    let mut targets = Vec::new();
    for image in 0..3 {
        let mut rows = vec![0.0f32; 10 * 5];
        if image < 2 {
            rows[..5].copy_from_slice(&truth_row);
        }
        targets.extend(rows);
    }
    // Image 0: a perfect detection; image 1: none; image 2: a false alarm.
    let outputs = vec![
        0.0, 89.6, 89.6, 134.4, 134.4, 0.8, 0.7, 0.0, //
        2.0, 10.0, 10.0, 40.0, 40.0, 0.9, 0.6, 0.0,
    ];
    let e = Evaluation { loss: 0.0, score: 0.0, outputs, targets };
    let o = DetectionOutputs::from_evaluation(&e, 10);
    assert_eq!(o.detections.iter().map(Option::is_some).collect::<Vec<_>>(), vec![true, false, true]);
    assert_eq!(o.truth.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 0]);
    let all = [0, 1, 2];
    assert!((o.map(&all, Inclusion::Faithful) - 1.0).abs() < 1e-6);
    assert!((o.map(&all, Inclusion::Standard) - 0.5 * 51.0 / 101.0).abs() < 1e-6);
    // Resampling with repeats: image 1 twice, no included image for the faithful rule.
    assert_eq!(o.map(&[1, 1], Inclusion::Faithful), -1.0);
}
