//! Checkpoints: safetensors files whose `__metadata__` carries the family, the config (JSON), the
//! crate version, the training step and the seed.
//!
//! - Saving is atomic ([`crate::atomic`]): a crash mid-save never destroys the previous file.
//! - Loading is strict: a missing, unexpected or wrongly shaped tensor is an error naming it, and
//!   a file of another family is refused by name.
//! - Storage dtype may differ from compute dtype (e.g. f16 on disk, f32 in memory).
//!
//! Every family implements [`ZooModel`] and gets `save`, `load` and `from_pretrained` from it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{de::DeserializeOwned, Serialize};

/// The metadata stored in a checkpoint's `__metadata__`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// Model family, e.g. `"judge"`, `"ebgan"`.
    pub family: String,
    /// The model's configuration as JSON.
    pub config: serde_json::Value,
    /// Version of the crate that wrote the file.
    pub zoo_version: String,
    /// Training step at which it was written, if known.
    pub step: Option<u64>,
    /// Seed of the run that produced it, if known.
    pub seed: Option<u64>,
    /// Further string entries (free-form).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    /// Metadata for `family` with `config`, written by this crate version.
    pub fn new<C: Serialize>(family: &str, config: &C) -> Result<Self> {
        Ok(Self {
            family: family.to_string(),
            config: serde_json::to_value(config).context("cannot serialise the model config")?,
            zoo_version: env!("CARGO_PKG_VERSION").to_string(),
            step: None,
            seed: None,
            extra: BTreeMap::new(),
        })
    }

    fn to_map(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = self.extra.clone().into_iter().collect();
        m.insert("format".into(), "pt".into());
        m.insert("family".into(), self.family.clone());
        m.insert("config".into(), self.config.to_string());
        m.insert("zoo_version".into(), self.zoo_version.clone());
        if let Some(s) = self.step {
            m.insert("step".into(), s.to_string());
        }
        if let Some(s) = self.seed {
            m.insert("seed".into(), s.to_string());
        }
        m
    }

    fn from_map(path: &Path, m: &HashMap<String, String>) -> Result<Self> {
        let family = m
            .get("family")
            .with_context(|| {
                format!("{} has no 'family' in its metadata: it is not a candle-zoo checkpoint", path.display())
            })?
            .clone();
        let config = match m.get("config") {
            Some(c) => serde_json::from_str(c)
                .with_context(|| format!("{}: the 'config' metadata is not valid JSON", path.display()))?,
            None => serde_json::Value::Null,
        };
        let parse_u64 = |k: &str| -> Result<Option<u64>> {
            m.get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .with_context(|| format!("{}: metadata '{k}' = '{v}' is not an integer", path.display()))
                })
                .transpose()
        };
        let reserved = ["format", "family", "config", "zoo_version", "step", "seed"];
        Ok(Self {
            family,
            config,
            zoo_version: m.get("zoo_version").cloned().unwrap_or_default(),
            step: parse_u64("step")?,
            seed: parse_u64("seed")?,
            extra: m
                .iter()
                .filter(|(k, _)| !reserved.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Its tensors, in their stored dtype.
    pub tensors: HashMap<String, Tensor>,
}

/// Writes `tensors` with `meta` to `path` atomically, converting float tensors to `storage` if given.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
    storage: Option<DType>,
) -> Result<()> {
    let mut converted = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = match storage {
            Some(dt) if t.dtype().is_float() => t.to_dtype(dt)?,
            _ => t.clone(),
        };
        // safetensors wants host-contiguous data.
        converted.push((name.clone(), t.to_device(&Device::Cpu)?.contiguous()?));
    }
    let bytes = safetensors::tensor::serialize(converted.iter().map(|(n, t)| (n.as_str(), t)), Some(meta.to_map()))
        .with_context(|| format!("cannot serialise checkpoint for {}", path.display()))?;
    crate::atomic::write_bytes_atomic(path, &bytes)
        .with_context(|| format!("cannot save checkpoint {}", path.display()))
}

/// The variables of `varmap`, sorted by name.
pub fn varmap_tensors(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().expect("variable map lock poisoned");
    let mut v: Vec<(String, Tensor)> = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Reads only the metadata of a checkpoint.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let bytes = read_bytes(path)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| not_safetensors(path, e))?;
    CheckpointMeta::from_map(path, header.metadata().as_ref().unwrap_or(&HashMap::new()))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))
}

fn not_safetensors(path: &Path, e: safetensors::SafeTensorError) -> anyhow::Error {
    anyhow::anyhow!("{} is not a valid safetensors file (truncated or corrupt?): {e}", path.display())
}

impl Checkpoint {
    /// Reads a checkpoint onto `dev`; corrupt or truncated files are errors naming the path.
    pub fn read(path: &Path, dev: &Device) -> Result<Self> {
        let bytes = read_bytes(path)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| not_safetensors(path, e))?;
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| not_safetensors(path, e))?;
        let meta = CheckpointMeta::from_map(path, header.metadata().as_ref().unwrap_or(&HashMap::new()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, dev)
            .with_context(|| format!("cannot decode the tensors of {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), meta, tensors })
    }

    /// Refuses a checkpoint of another family, by name.
    pub fn expect_family(&self, family: &str) -> Result<()> {
        if self.meta.family != family {
            bail!("{} holds a checkpoint of the '{}' family, not '{family}'", self.path.display(), self.meta.family);
        }
        Ok(())
    }

    /// Refuses a checkpoint whose model configuration differs from `own` (compared after
    /// parsing, so fields added later with defaults match), e.g. a run resumed with other options.
    pub fn expect_config<C: DeserializeOwned + Serialize>(&self, own: &C) -> Result<()> {
        let stored: C = self.config()?;
        let (stored, own) = (serde_json::to_value(&stored)?, serde_json::to_value(own)?);
        if stored != own {
            bail!(
                "{} holds a model configured as {stored}, but this one is configured as {own}; \
                 resume with the options the run was started with",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The stored config, parsed.
    pub fn config<C: DeserializeOwned>(&self) -> Result<C> {
        serde_json::from_value(self.meta.config.clone()).with_context(|| {
            format!(
                "{}: the stored '{}' config does not match this version's Config",
                self.path.display(),
                self.meta.family
            )
        })
    }

    /// Sets every variable of `varmap` from this checkpoint, strictly: each variable must be
    /// present with its shape, and the file must hold no other tensor. Values are converted to
    /// each variable's dtype.
    pub fn load_into(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in &names {
            let var = &data[*name];
            let t = self.tensors.get(*name).with_context(|| {
                format!(
                    "{} lacks tensor '{name}' (shape {:?}) that the '{}' model needs",
                    self.path.display(),
                    var.dims(),
                    self.meta.family
                )
            })?;
            if t.dims() != var.dims() {
                bail!(
                    "tensor '{name}' in {} has shape {:?}, the model expects {:?}",
                    self.path.display(),
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)
                .with_context(|| format!("cannot set variable '{name}'"))?;
        }
        let mut unexpected: Vec<&String> = self.tensors.keys().filter(|k| !data.contains_key(*k)).collect();
        if !unexpected.is_empty() {
            unexpected.sort();
            bail!(
                "{} has tensors the '{}' model does not have: {:?}",
                self.path.display(),
                self.meta.family,
                unexpected
            );
        }
        Ok(())
    }
}

/// Options for [`ZooModel::save_with`].
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Training step to record.
    pub step: Option<u64>,
    /// Seed to record.
    pub seed: Option<u64>,
    /// Storage dtype (e.g. `Some(DType::F16)` to halve the file); `None` keeps the compute dtype.
    pub storage: Option<DType>,
}

/// What every model family implements to get checkpoints and pretrained loading for free.
pub trait ZooModel: Sized {
    /// The family name stored in and checked against checkpoints.
    const FAMILY: &'static str;
    /// The family's configuration, stored as JSON in each checkpoint.
    type Config: Serialize + DeserializeOwned + Clone;

    /// Builds the networks with parameters under `vb` (which must write into `varmap`).
    fn build(cfg: &Self::Config, varmap: VarMap, vb: VarBuilder) -> Result<Self>;
    /// The configuration the model was built with.
    fn config(&self) -> &Self::Config;
    /// The model's variables.
    fn varmap(&self) -> &VarMap;

    /// A freshly built model (parameters from Candle's initialisers; re-initialise with
    /// [`crate::init`] for seeded runs) in `dtype` on `dev`.
    fn new_with_dtype(cfg: &Self::Config, dev: &Device, dtype: DType) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, dev);
        Self::build(cfg, varmap.clone(), vb)
    }

    /// [`ZooModel::new_with_dtype`] in f32.
    fn new(cfg: &Self::Config, dev: &Device) -> Result<Self> {
        Self::new_with_dtype(cfg, dev, DType::F32)
    }

    /// Saves weights and config atomically.
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path, &SaveOptions::default())
    }

    /// Saves with a recorded step/seed and an optional storage dtype.
    fn save_with(&self, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<()> {
        let mut meta = CheckpointMeta::new(Self::FAMILY, self.config())?;
        meta.step = opts.step;
        meta.seed = opts.seed;
        save_tensors(path.as_ref(), &varmap_tensors(self.varmap()), &meta, opts.storage)
    }

    /// Loads a checkpoint of this family (config read from the file), computing in f32.
    fn load(path: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        Self::load_with_dtype(path, dev, DType::F32)
    }

    /// Loads a checkpoint of this family, computing in `dtype` whatever the stored dtype.
    fn load_with_dtype(path: impl AsRef<Path>, dev: &Device, dtype: DType) -> Result<Self> {
        let ckpt = Checkpoint::read(path.as_ref(), dev)?;
        ckpt.expect_family(Self::FAMILY)?;
        let cfg: Self::Config = ckpt.config()?;
        let model = Self::new_with_dtype(&cfg, dev, dtype)?;
        ckpt.load_into(model.varmap())?;
        Ok(model)
    }

    /// Rewrites the checkpoint `id_or_path` (manifest id or path) to `out` with half-precision
    /// (f16) storage, half the size and loaded back in f32, keeping its recorded step and seed.
    fn export_f16(id_or_path: &str, out: &Path) -> Result<()> {
        let (path, _) = crate::manifest::resolve_weights(id_or_path)?;
        let meta = read_meta(&path)?;
        let model = Self::from_pretrained(id_or_path, &Device::Cpu)?;
        model.save_with(out, &SaveOptions { step: meta.step, seed: meta.seed, storage: Some(DType::F16) })
    }

    /// Loads by manifest id (bundled file or hub download, sha256-verified) or by file path.
    fn from_pretrained(id_or_path: &str, dev: &Device) -> Result<Self> {
        let (path, entry) = crate::manifest::resolve_weights(id_or_path)?;
        if let Some(entry) = entry {
            if entry.family != Self::FAMILY {
                bail!(
                    "manifest entry '{}' holds a checkpoint of the '{}' family, not '{}'",
                    entry.id,
                    entry.family,
                    Self::FAMILY
                );
            }
        }
        Self::load(&path, dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct TinyConfig {
        hidden: usize,
    }

    struct Tiny {
        cfg: TinyConfig,
        varmap: VarMap,
        fc: candle_nn::Linear,
    }

    impl ZooModel for Tiny {
        const FAMILY: &'static str = "tiny";
        type Config = TinyConfig;
        fn build(cfg: &TinyConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
            let fc = candle_nn::linear(3, cfg.hidden, vb.pp("fc"))?;
            Ok(Self { cfg: cfg.clone(), varmap, fc })
        }
        fn config(&self) -> &TinyConfig {
            &self.cfg
        }
        fn varmap(&self) -> &VarMap {
            &self.varmap
        }
    }

    struct Other(Tiny);
    impl ZooModel for Other {
        const FAMILY: &'static str = "other";
        type Config = TinyConfig;
        fn build(cfg: &TinyConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
            Ok(Other(Tiny::build(cfg, varmap, vb)?))
        }
        fn config(&self) -> &TinyConfig {
            &self.0.cfg
        }
        fn varmap(&self) -> &VarMap {
            &self.0.varmap
        }
    }

    fn out(m: &Tiny) -> Vec<f32> {
        use candle_core::Module;
        let x = Tensor::new(&[[1.0f32, -2.0, 0.5]], &Device::Cpu).unwrap();
        m.fc.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn round_trip_is_bit_exact_and_metadata_survives() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let m = Tiny::new(&TinyConfig { hidden: 4 }, &Device::Cpu).unwrap();
        m.save_with(&p, &SaveOptions { step: Some(12), seed: Some(3), storage: None }).unwrap();
        let back = Tiny::load(&p, &Device::Cpu).unwrap();
        assert_eq!(out(&m), out(&back));
        assert_eq!(back.cfg, TinyConfig { hidden: 4 });
        let meta = read_meta(&p).unwrap();
        assert_eq!((meta.family.as_str(), meta.step, meta.seed), ("tiny", Some(12), Some(3)));

        // f16 storage, f32 compute: close, and the file is smaller.
        let p16 = dir.path().join("t16.safetensors");
        m.save_with(&p16, &SaveOptions { storage: Some(DType::F16), ..Default::default() }).unwrap();
        let half = Tiny::load(&p16, &Device::Cpu).unwrap();
        assert_eq!(half.fc.weight().dtype(), DType::F32);
        for (a, b) in out(&m).iter().zip(out(&half)) {
            assert!((a - b).abs() < 1e-2);
        }
        assert!(std::fs::metadata(&p16).unwrap().len() < std::fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn bad_files_get_errors_that_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let m = Tiny::new(&TinyConfig { hidden: 4 }, &Device::Cpu).unwrap();
        m.save(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();

        // Truncated.
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
        let e = format!("{:#}", Tiny::load(&cut, &Device::Cpu).err().unwrap());
        assert!(e.contains("not a valid safetensors file"), "{e}");
        // Garbage.
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"this is not a checkpoint").unwrap();
        assert!(format!("{:#}", Tiny::load(&junk, &Device::Cpu).err().unwrap()).contains("not a valid safetensors"));
        // Missing file.
        let e = format!("{:#}", Tiny::load(dir.path().join("nope"), &Device::Cpu).err().unwrap());
        assert!(e.contains("cannot read checkpoint"), "{e}");
        // Another family.
        let e = format!("{:#}", Other::load(&p, &Device::Cpu).err().unwrap());
        assert!(e.contains("holds a checkpoint of the 'tiny' family, not 'other'"), "{e}");
        // Wrong shape (config says 5, tensors are 4).
        let mut meta = CheckpointMeta::new("tiny", &TinyConfig { hidden: 5 }).unwrap();
        meta.step = None;
        let shaped = dir.path().join("shape.safetensors");
        save_tensors(&shaped, &varmap_tensors(m.varmap()), &meta, None).unwrap();
        let e = format!("{:#}", Tiny::load(&shaped, &Device::Cpu).err().unwrap());
        assert!(e.contains("tensor 'fc.bias'") && e.contains("[4]") && e.contains("[5]"), "{e}");
        // Missing tensor.
        let partial: Vec<(String, Tensor)> =
            varmap_tensors(m.varmap()).into_iter().filter(|(n, _)| n != "fc.bias").collect();
        let missing = dir.path().join("missing.safetensors");
        save_tensors(&missing, &partial, &CheckpointMeta::new("tiny", &TinyConfig { hidden: 4 }).unwrap(), None)
            .unwrap();
        let e = format!("{:#}", Tiny::load(&missing, &Device::Cpu).err().unwrap());
        assert!(e.contains("lacks tensor 'fc.bias'"), "{e}");
        // Unexpected tensor.
        let mut extra = varmap_tensors(m.varmap());
        extra.push(("fc.extra".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()));
        let ex = dir.path().join("extra.safetensors");
        save_tensors(&ex, &extra, &CheckpointMeta::new("tiny", &TinyConfig { hidden: 4 }).unwrap(), None).unwrap();
        let e = format!("{:#}", Tiny::load(&ex, &Device::Cpu).err().unwrap());
        assert!(e.contains("fc.extra"), "{e}");
        // No zoo metadata at all.
        let plain = dir.path().join("plain.safetensors");
        candle_core::safetensors::save(
            &HashMap::from([("w".to_string(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())]),
            &plain,
        )
        .unwrap();
        let e = format!("{:#}", Tiny::load(&plain, &Device::Cpu).err().unwrap());
        assert!(e.contains("not a candle-zoo checkpoint"), "{e}");
    }

    #[test]
    fn a_save_killed_midway_leaves_the_previous_file_loadable() {
        // A child process starts a save of a large checkpoint over an existing good one and is
        // killed while writing; the previous file must still load.
        if let Ok(target) = std::env::var("ZOO_TEST_KILLED_SAVE_TARGET") {
            // Child: write a big checkpoint to `target` forever (the parent kills us).
            let big = Tiny::new(&TinyConfig { hidden: 4 }, &Device::Cpu).unwrap();
            let huge = vec![("fc.weight".to_string(), Tensor::zeros((4096, 4096), DType::F32, &Device::Cpu).unwrap())];
            loop {
                let _ =
                    save_tensors(Path::new(&target), &huge, &CheckpointMeta::new("tiny", big.config()).unwrap(), None);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let m = Tiny::new(&TinyConfig { hidden: 4 }, &Device::Cpu).unwrap();
        m.save(&p).unwrap();
        let before = out(&m);
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "checkpoint::tests::a_save_killed_midway_leaves_the_previous_file_loadable",
                "--nocapture",
            ])
            .env("ZOO_TEST_KILLED_SAVE_TARGET", &p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child is mid-write (its temporary file exists), then kill it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let observed = loop {
            // Mid-write: a temporary file that already holds some data but not all 64 MiB.
            let mid_write = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).any(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                e.file_name().to_string_lossy().ends_with(".tmp") && len > 0 && len < 64 << 20
            });
            if mid_write || std::time::Instant::now() > deadline {
                break mid_write;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(observed, "the child process never got to the middle of a save");
        // Whatever moment the kill hit, the target is a complete checkpoint: the old one, or a
        // complete new one (which has a different shape, so strict loading would name it).
        match Tiny::load(&p, &Device::Cpu) {
            Ok(back) => assert_eq!(out(&back), before),
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("has shape [4096, 4096]"), "the file was damaged: {e}");
                Checkpoint::read(&p, &Device::Cpu).expect("a complete file");
            }
        }
    }
}
