//! Choosing the compute device from a short string.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Parses a device spec: `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` or `auto`.
///
/// `auto` picks CUDA device 0 if the `cuda` feature is compiled in and a GPU answers, then Metal,
/// else the CPU. Asking for CUDA or Metal in a build without that cargo feature is an error that
/// names the feature to enable.
pub fn device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => {
            let idx: usize = i
                .parse()
                .with_context(|| format!("bad device index '{i}' in device '{spec}' (expected e.g. cuda:0)"))?;
            (k.to_string(), Some(idx))
        }
        None => (spec.clone(), None),
    };
    match kind.as_str() {
        "cpu" if index.is_none() => Ok(Device::Cpu),
        "cuda" | "gpu" => {
            if !cfg!(feature = "cuda") {
                bail!("device '{spec}' needs CUDA support: rebuild with `--features cuda`");
            }
            Device::new_cuda(index.unwrap_or(0))
                .with_context(|| format!("cannot open CUDA device {}", index.unwrap_or(0)))
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                bail!("device '{spec}' needs Metal support: rebuild with `--features metal`");
            }
            Device::new_metal(index.unwrap_or(0))
                .with_context(|| format!("cannot open Metal device {}", index.unwrap_or(0)))
        }
        "auto" if index.is_none() => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if cfg!(feature = "metal") {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        _ => bail!("unknown device '{spec}': expected one of cpu, cuda, cuda:N, metal, metal:N, auto"),
    }
}

/// A short human name for a device (`cpu`, `cuda`, `metal`).
pub fn device_name(dev: &Device) -> &'static str {
    match dev {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_work_and_bad_specs_are_explained() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device(" CPU ").unwrap().is_cpu());
        let _ = device("auto").unwrap();
        let e = device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device 'tpu'"), "{e}");
        let e = device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("bad device index"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            let e = device("metal").unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
        }
    }
}
