//! The gallery rendered by `zoo demo`: for each published model, pictures made from its
//! checkpoint on the data bundled in the repository, and one `index.html` that shows them.
//!
//! It runs offline on a fresh clone: bundled checkpoints come from `weights/`, data from `data/`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use zoo_core::checkpoint::ZooModel;
use zoo_data::Mnist;
use zoo_eval::judge::{evaluate, Judge};
use zoo_eval::picture::{self, CORRECT_GREEN, WRONG_RED};

/// One section of the gallery: a title, a paragraph and pictures (file name, caption).
#[derive(Debug, Clone)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// A short paragraph (HTML allowed).
    pub text: String,
    /// Pictures written into the gallery directory, with captions.
    pub pictures: Vec<(String, String)>,
}

/// Renders every section into `out` and writes `out/index.html`.
pub fn run(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let dev = Device::Cpu;
    let mut sections = vec![judge_section(out, &dev).context("judge section")?];
    if let Some(s) = gan_section(out, &dev).context("EBGAN section")? {
        sections.push(s);
    }
    if let Some(s) = adaptation_section(out, &dev).context("domain adaptation section")? {
        sections.push(s);
    }
    if let Some(s) = conditional_gan_section(out, &dev).context("InfoGAN / AC-GAN section")? {
        sections.push(s);
    }
    write_index(out, &sections)
}

/// The judge: its predictions on bundled MNIST test digits, its mistakes and its confusion matrix.
pub fn judge_section(out: &Path, dev: &Device) -> Result<Section> {
    let judge = Judge::from_pretrained("judge-mnist", dev)?;
    let test = Mnist::bundled_test_slice()?;
    let r = evaluate(&judge, &test, 250, dev)?;

    let shown: Vec<usize> = (0..64).collect();
    let (x, _) = test.batch(&shown, dev)?;
    let labels: Vec<String> = shown.iter().map(|&i| r.predictions[i].to_string()).collect();
    let colours: Vec<[u8; 3]> =
        shown.iter().map(|&i| if r.predictions[i] == r.labels[i] { CORRECT_GREEN } else { WRONG_RED }).collect();
    picture::grid::save_labelled_grid(&x, &labels, &colours, 16, &out.join("judge-predictions.png"))?;

    let wrong: Vec<usize> = (0..test.len()).filter(|&i| r.predictions[i] != r.labels[i]).take(32).collect();
    let mut pictures = vec![(
        "judge-predictions.png".to_string(),
        "The first 64 test digits, labelled with the judge's prediction (red: wrong).".to_string(),
    )];
    if !wrong.is_empty() {
        let (xw, _) = test.batch(&wrong, dev)?;
        let labels: Vec<String> = wrong.iter().map(|&i| format!("{}/{}", r.predictions[i], r.labels[i])).collect();
        picture::grid::save_labelled_grid(&xw, &labels, &[WRONG_RED], 8, &out.join("judge-mistakes.png"))?;
        pictures
            .push(("judge-mistakes.png".into(), "Every misclassified digit of the slice, as predicted/true.".into()));
    }
    // The training log published beside the checkpoint (one JSON object per step).
    let log = zoo_data::mnist::workspace_root().join("weights/judge-mnist.train-log.jsonl");
    if log.exists() {
        let opts = picture::curve::CurveOptions {
            title: "judge-mnist training (60,000 digits, 3 epochs)".into(),
            smoothing: 50,
            ..Default::default()
        };
        picture::curve::plot_curves_from_jsonl_with(
            &log,
            &["loss", "batch_accuracy"],
            &opts,
            &out.join("judge-training.png"),
        )?;
        pictures.push((
            "judge-training.png".into(),
            "Training loss and batch accuracy per step (faint: raw; solid: 50-step moving average).".into(),
        ));
    }
    let matrix = picture::confusion::confusion_matrix(&r.labels, &r.predictions, 10)?;
    picture::confusion::save_confusion_png(&matrix, &[], &out.join("judge-confusion.png"))?;
    pictures.push(("judge-confusion.png".into(), "Confusion matrix (rows: true digit, columns: predicted).".into()));

    // A check that what we show is what the model computes: probabilities sum to one.
    let p = judge.probabilities(&x)?.sum(1)?.to_dtype(DType::F64)?;
    let ones = Tensor::ones(64, DType::F64, dev)?;
    let gap = p.sub(&ones)?.abs()?.max_all()?.to_scalar::<f64>()?;
    anyhow::ensure!(gap < 1e-4, "judge probabilities do not sum to one (off by {gap})");

    Ok(Section {
        title: "Judge: MNIST classifier".into(),
        text: format!(
            "The LeNet-style judge (<code>judge-mnist</code>, {} parameters) that scores the zoo's generators. \
             Accuracy on the bundled slice (the first {} digits of the MNIST <em>test</em> set): <b>{:.2} %</b> \
             ({} mistakes).",
            judge.num_params(),
            test.len(),
            100.0 * r.accuracy,
            r.labels.len() - (r.accuracy * r.labels.len() as f64).round() as usize
        ),
        pictures,
    })
}

/// EBGAN and its GAN baseline: samples, latent interpolations, judge scores of 1,000 samples,
/// and the hyper-parameter sweep's histogram if it was published. `None` when neither checkpoint
/// is in the manifest.
pub fn gan_section(out: &Path, dev: &Device) -> Result<Option<Section>> {
    let manifest = zoo_core::manifest::Manifest::workspace()?;
    let judge = Judge::from_pretrained("judge-mnist", dev)?;
    let test = Mnist::bundled_test_slice()?;
    let train = Mnist::bundled_train_subset()?;
    let mut pictures = Vec::new();
    let mut rows = String::new();
    for id in ["ebgan-mnist", "gan-mnist"] {
        if manifest.get(id).is_err() {
            continue;
        }
        let model = zoo_ebgan::AnyModel::from_pretrained(id, dev)?;
        let samples = model.sample(1000, &mut zoo_core::ZooRng::new(0), dev)?;
        picture::save_image_grid(&samples.narrow(0, 0, 64)?, 8, 2, 2, &out.join(format!("{id}-samples.png")))?;
        pictures.push((format!("{id}-samples.png"), format!("<code>{id}</code>: 64 samples.")));
        let interp = model.interpolation(8, 10, &mut zoo_core::ZooRng::new(1), dev)?;
        picture::save_image_grid(&interp, 10, 2, 2, &out.join(format!("{id}-interpolation.png")))?;
        pictures.push((
            format!("{id}-interpolation.png"),
            format!("<code>{id}</code>: each row walks in a straight line between two random latents."),
        ));
        let m = zoo_eval::gan::gan_metrics(&judge, &samples, &test, &train, 0)?;
        let _ = write!(
            rows,
            "<tr><td><code>{id}</code></td><td>{:.2}</td><td>{}/10</td><td>{:.3}</td><td>{:.1} (floor {:.1})</td></tr>",
            m.inception_score, m.modes_covered, m.kl_to_uniform, m.judge_fd, m.judge_fd_floor
        );
    }
    if pictures.is_empty() {
        return Ok(None);
    }
    // The judge's scores logged during the published trainings, side by side.
    let root = zoo_data::mnist::workspace_root();
    let mut curves = Vec::new();
    for id in ["ebgan-mnist", "gan-mnist"] {
        let log = root.join(format!("weights/{id}.quality.jsonl"));
        if log.exists() {
            let mut series = picture::read_metrics_jsonl(&log, &["inception_score"])?;
            if let Some((_, points)) = series.pop() {
                curves.push((id.to_string(), points));
            }
        }
    }
    if !curves.is_empty() {
        picture::plot_curves(
            &curves,
            "Judge inception score of 2,000 samples during training",
            &out.join("gan-training.png"),
        )?;
        pictures.push((
            "gan-training.png".into(),
            "Inception score (judge) every 500 steps of the published trainings (recipes in weights-manifest.toml)."
                .into(),
        ));
    }
    let sweep = root.join("weights/ebgan-sweep-histogram.png");
    if sweep.exists() {
        std::fs::copy(&sweep, out.join("ebgan-sweep-histogram.png"))?;
        pictures.push((
            "ebgan-sweep-histogram.png".into(),
            "The robustness sweep: judge inception scores of EBGAN and GAN runs over a grid of learning rates, \
             depths and widths."
                .into(),
        ));
    }
    Ok(Some(Section {
        title: "EBGAN and the GAN baseline".into(),
        text: format!(
            "The energy-based GAN (autoencoder discriminator, margin, pulling-away term) and a standard GAN with the \
             same generator. Judge scores of 1,000 samples against the bundled slices (small-sample figures; \
             <code>ebgan eval</code> measures the published ones on 10,000):\
             <table><tr><th>model</th><th>inception score</th><th>modes</th><th>KL to uniform</th>\
             <th>judge FD</th></tr>{rows}</table>"
        ),
        pictures,
    }))
}

/// The published domain-adaptation checkpoints, in the table's order, with their methods' names.
const ADAPTATION_IDS: [(&str, &str); 4] = [
    ("source-only-mnist-mnistm", "source only"),
    ("ddc-mnist-mnistm", "DDC"),
    ("dann-mnist-mnistm", "DANN"),
    ("target-only-mnist-mnistm", "target only"),
];

/// MNIST -> MNIST-M: accuracies of the published networks on the bundled test slice, their
/// predictions on MNIST-M digits, and the features before and after adaptation. `None` when none
/// is in the manifest.
pub fn adaptation_section(out: &Path, dev: &Device) -> Result<Option<Section>> {
    let manifest = zoo_core::manifest::Manifest::workspace()?;
    let mnist = Mnist::bundled_test_slice()?;
    let target = zoo_data::build_mnistm(&mnist, &zoo_data::Photos::bundled()?, 1)?;
    let test = (zoo_data::ImageSet::from_mnist_rgb(&mnist), target);
    let shown: Vec<usize> = (0..48).collect();
    let (x, _) = test.1.batch(&shown, dev)?;
    let mut pictures = Vec::new();
    let mut rows = String::new();
    let mut models = Vec::new();
    for (id, name) in ADAPTATION_IDS {
        if manifest.get(id).is_err() {
            continue;
        }
        let model = crate::adaptation::AnyAdapted::from_pretrained(id, dev)?;
        let acc = crate::adaptation::evaluate(model.net(), &test, dev)?;
        let _ = write!(
            rows,
            "<tr><td>{name}</td><td><code>{id}</code></td><td>{:.3}</td><td>{:.3}</td></tr>",
            acc.target_accuracy, acc.source_accuracy
        );
        if id.starts_with("source-only") || id.starts_with("dann") {
            let pred = model.net().forward(&x)?.argmax(1)?.to_vec1::<u32>()?;
            let labels: Vec<String> = pred.iter().map(|p| p.to_string()).collect();
            let colours: Vec<[u8; 3]> = shown
                .iter()
                .zip(&pred)
                .map(|(&i, &p)| if p == test.1.labels[i] as u32 { CORRECT_GREEN } else { WRONG_RED })
                .collect();
            let file = format!("{id}-predictions.png");
            picture::grid::save_labelled_grid(&x, &labels, &colours, 12, &out.join(&file))?;
            pictures.push((file, format!("{name}: its predictions on the first 48 MNIST-M test digits (red: wrong).")));
        }
        models.push((id, name, model));
    }
    if models.is_empty() {
        return Ok(None);
    }
    let before = models.iter().find(|m| m.0.starts_with("source-only"));
    let after = models.iter().find(|m| m.0.starts_with("dann"));
    if let (Some(b), Some(a)) = (before, after) {
        let nets = [(format!("{} (before)", b.1), b.2.net()), (format!("{} (after)", a.1), a.2.net())];
        crate::adaptation::embedding_figure(&nets, &test, 1000, &out.join("adaptation-embedding.png"), dev)?;
        pictures.push((
            "adaptation-embedding.png".into(),
            "Features of 1,000 MNIST and 1,000 MNIST-M test digits on their first two principal components: \
             the source-only network keeps the domains apart, DANN draws them together."
                .into(),
        ));
    }
    Ok(Some(Section {
        title: "Domain adaptation: MNIST -> MNIST-M".into(),
        text: format!(
            "Networks trained on labelled MNIST and unlabelled MNIST-M (built from six public-domain/CC0 photos), \
             scored on the bundled test slice (1,000 digits per domain; <code>dann eval</code> measures the \
             published figures on 10,000):\
             <table><tr><th>method</th><th>checkpoint</th><th>MNIST-M accuracy</th><th>MNIST accuracy</th></tr>\
             {rows}</table>"
        ),
        pictures,
    }))
}

/// InfoGAN's code traversal and AC-GAN's class grids (with and without MSGAN), for the
/// checkpoints in the manifest. `None` when there are none.
pub fn conditional_gan_section(out: &Path, dev: &Device) -> Result<Option<Section>> {
    use zoo_ebgan::Adversarial;
    let manifest = zoo_core::manifest::Manifest::workspace()?;
    let mut pictures = Vec::new();
    if manifest.get("infogan-mnist").is_ok() {
        let model = zoo_cgan::InfoGan::from_pretrained("infogan-mnist", dev)?;
        let cfg = model.config().clone();
        let (rows, k) = (6, cfg.categories);
        let mut rng = zoo_core::ZooRng::new(0);
        let noise = model.noise(rows, &mut rng, dev)?;
        let noise = noise.unsqueeze(1)?.repeat((1, k, 1))?.reshape((rows * k, cfg.noise_dim))?;
        let category: Vec<u32> = (0..rows * k).map(|i| (i % k) as u32).collect();
        let zero = Tensor::zeros((rows * k, cfg.continuous), DType::F32, dev)?;
        let x = model.generate(&model.latents_with_codes(&noise, &category, &zero)?)?;
        picture::save_image_grid(&x, k, 2, 2, &out.join("infogan-mnist-c1.png"))?;
        pictures.push((
            "infogan-mnist-c1.png".to_string(),
            "<code>infogan-mnist</code>: each row one noise vector, each column one value of the categorical code \
             (learnt without labels)."
                .to_string(),
        ));
    }
    for id in ["acgan-mnist", "acgan-msgan-mnist"] {
        if manifest.get(id).is_err() {
            continue;
        }
        let model = zoo_cgan::AcGan::from_pretrained(id, dev)?;
        let per_class = 10;
        let noise =
            zoo_core::ZooRng::new(0).uniform((per_class, model.config().noise_dim), -1.0, 1.0, DType::F32, dev)?;
        let mut rows = Vec::new();
        for c in 0..model.config().classes as u32 {
            rows.push(model.generate(&model.latents_for(&noise, &vec![c; per_class])?)?);
        }
        let file = format!("{id}-classes.png");
        picture::save_image_grid(&Tensor::cat(&rows, 0)?, per_class, 2, 2, &out.join(&file))?;
        pictures
            .push((file, format!("<code>{id}</code>: one row per class, the same ten noise vectors in every row.")));
    }
    if pictures.is_empty() {
        return Ok(None);
    }
    Ok(Some(Section {
        title: "InfoGAN and AC-GAN".into(),
        text: "Generators with more than noise at their input: InfoGAN's categorical code, learnt without labels, \
               and AC-GAN's class label (with the MSGAN mode-seeking regulariser in <code>acgan-msgan-mnist</code>)."
            .into(),
        pictures,
    }))
}

fn write_index(out: &Path, sections: &[Section]) -> Result<()> {
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>candle-zoo gallery</title>\n\
         <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         figure{display:inline-block;margin:1em;vertical-align:top}figcaption{max-width:520px;font-size:90%}\
         img{image-rendering:pixelated;border:1px solid #ccc}</style></head><body>\n<h1>candle-zoo gallery</h1>\n",
    );
    for s in sections {
        let _ = writeln!(html, "<h2>{}</h2>\n<p>{}</p>", s.title, s.text);
        for (file, caption) in &s.pictures {
            let _ = writeln!(
                html,
                "<figure><img src=\"{file}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>"
            );
        }
    }
    html.push_str("</body></html>\n");
    zoo_core::atomic::write_bytes_atomic(&out.join("index.html"), html.as_bytes())
}
