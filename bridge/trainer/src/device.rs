//! Where training runs: the CPU (the default) or a CUDA GPU (builds with the `cuda` feature).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// The environment variable that picks the device when a request names none.
pub const DEVICE_ENV: &str = "RLCLAW_DEVICE";

/// A device to train on, as written in a request, a config file or [`DEVICE_ENV`]: `cpu`,
/// `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// [`DEVICE_ENV`] when set and not empty, else the CPU. A value that is not a device is an
    /// error rather than a silent fallback.
    pub fn from_env() -> Result<Self> {
        match std::env::var(DEVICE_ENV) {
            Ok(v) if !v.trim().is_empty() => v
                .parse()
                .map_err(|e: TrainerError| TrainerError::Device(format!("{DEVICE_ENV}: {e}"))),
            _ => Ok(Self::Cpu),
        }
    }

    /// Whether this build can train on CUDA GPUs.
    pub fn cuda_compiled() -> bool {
        candle_core::utils::cuda_is_available()
    }

    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !Self::cuda_compiled() => Err(TrainerError::Device(format!(
                "{self} was asked for, but this build has no CUDA support (build with `--features cuda`)"
            ))),
            Self::Cuda(n) => Device::new_cuda(n)
                .map_err(|e| TrainerError::Device(format!("cannot open {self}: {e}"))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = TrainerError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || {
            TrainerError::Device(format!(
                "unknown device {s:?} (expected cpu, cuda or cuda:N)"
            ))
        };
        match s.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => {
                let n = s
                    .strip_prefix("cuda:")
                    .or_else(|| s.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                n.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = TrainerError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, d) in [
            ("cpu", DeviceChoice::Cpu),
            (" CUDA ", DeviceChoice::Cuda(0)),
            ("gpu", DeviceChoice::Cuda(0)),
            ("cuda:1", DeviceChoice::Cuda(1)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), d, "{text}");
            assert_eq!(d.to_string().parse::<DeviceChoice>().unwrap(), d);
        }
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{bad}: {e}");
        }
        let json = serde_json::to_string(&DeviceChoice::Cuda(2)).unwrap();
        assert_eq!(json, "\"cuda:2\"");
        assert_eq!(
            serde_json::from_str::<DeviceChoice>(&json).unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert!(serde_json::from_str::<DeviceChoice>("\"metal\"").is_err());
    }

    #[test]
    fn the_cpu_always_opens_and_cuda_without_the_feature_says_how_to_get_it() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !DeviceChoice::cuda_compiled() {
            let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
