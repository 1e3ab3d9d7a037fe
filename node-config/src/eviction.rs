//! Eviction signals and thresholds: the typed form of `evictionHard`, `evictionSoft`,
//! `evictionSoftGracePeriod`, `evictionMinimumReclaim` and of the `--eviction-hard` flag syntax.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::duration::Duration;
use crate::error::{ConfigError, FieldError};
use crate::quantity::Quantity;

/// A signal that can trigger pod eviction (upstream `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// `memory.available`: node memory capacity minus working set.
    MemoryAvailable,
    /// `nodefs.available`: free bytes on the kubelet's filesystem.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: free inodes on the kubelet's filesystem.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes on the runtime's image filesystem.
    ImageFsAvailable,
    /// `imagefs.inodesFree`: free inodes on the runtime's image filesystem.
    ImageFsInodesFree,
    /// `containerfs.available`: free bytes on the filesystem of container writable layers.
    ContainerFsAvailable,
    /// `containerfs.inodesFree`: free inodes on the filesystem of container writable layers.
    ContainerFsInodesFree,
    /// `pid.available`: process IDs still available for pods.
    PidAvailable,
    /// `allocatableMemory.available`: pod-allocatable memory minus the pods' working set.
    AllocatableMemoryAvailable,
}

impl Signal {
    /// Every signal, in the order of this enum.
    pub const ALL: [Signal; 9] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
        Signal::PidAvailable,
        Signal::AllocatableMemoryAvailable,
    ];

    /// The upstream name, e.g. `memory.available`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Signal {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.as_str() == s)
            .ok_or_else(|| ConfigError::InvalidThreshold {
                input: s.to_string(),
                reason: "unsupported eviction signal".to_string(),
            })
    }
}

/// How a threshold's observed value is compared; upstream only has `LessThan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThresholdOperator {
    /// The threshold is met when the observed value drops below it.
    LessThan,
}

/// A threshold value: an absolute quantity or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// An absolute amount, e.g. `100Mi`.
    Quantity(Quantity),
    /// Percentage points of capacity, e.g. `10.0` for `10%`.
    Percentage(f64),
}

impl ThresholdValue {
    /// The share of capacity as a fraction in `0..=1` (`10%` → `0.1`), `None` for quantities.
    pub fn fraction(&self) -> Option<f64> {
        match self {
            ThresholdValue::Percentage(p) => Some(p / 100.0),
            ThresholdValue::Quantity(_) => None,
        }
    }

    /// The absolute amount for a resource of the given capacity (upstream
    /// `GetThresholdQuantity`): the quantity itself, or the percentage of `capacity`.
    pub fn quantity_for_capacity(&self, capacity: &Quantity) -> Quantity {
        match self {
            ThresholdValue::Quantity(q) => *q,
            ThresholdValue::Percentage(p) => {
                let value = capacity.value() as f64 * p / 100.0;
                Quantity::from_value(value as i64, crate::QuantityFormat::BinarySI)
            }
        }
    }

    /// Whether this value disables the threshold: upstream ignores `0%` and `100%`.
    pub fn is_disabled(&self) -> bool {
        matches!(self, ThresholdValue::Percentage(p) if *p == 0.0 || *p == 100.0)
    }
}

impl fmt::Display for ThresholdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdValue::Quantity(q) => write!(f, "{q}"),
            ThresholdValue::Percentage(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for ThresholdValue {
    type Err = ConfigError;

    /// Parses `10%` (a percentage) or a quantity such as `100Mi`. Range checks (positive,
    /// at most 100%) are part of validation, not parsing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.ends_with('%') {
            let number = s.trim_end_matches('%');
            let p: f64 = number.parse().map_err(|_| ConfigError::InvalidThreshold {
                input: s.to_string(),
                reason: "invalid percentage".to_string(),
            })?;
            if !p.is_finite() {
                return Err(ConfigError::InvalidThreshold {
                    input: s.to_string(),
                    reason: "invalid percentage".to_string(),
                });
            }
            return Ok(ThresholdValue::Percentage(p));
        }
        s.parse().map(ThresholdValue::Quantity)
    }
}

/// One eviction threshold, as the eviction manager consumes it (upstream `evictionapi.Threshold`).
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionThreshold {
    /// What is measured.
    pub signal: Signal,
    /// How the measurement is compared with `value`.
    pub operator: ThresholdOperator,
    /// The threshold.
    pub value: ThresholdValue,
    /// How long the threshold must be met before evicting; zero for hard thresholds.
    pub grace_period: std::time::Duration,
    /// The minimum amount to reclaim once evicting, if configured.
    pub min_reclaim: Option<ThresholdValue>,
}

impl EvictionThreshold {
    /// Whether this is a hard threshold (no grace period).
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// Parses the `--eviction-hard` / `--eviction-soft` flag syntax, `signal<value` pairs separated
/// by commas (`memory.available<100Mi,nodefs.available<10%`), into the map form of the config
/// file. Keys and values are trimmed; empty items are skipped; later keys win.
pub fn parse_threshold_flag(flag: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in flag.split(',') {
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('<') else {
            return Err(ConfigError::InvalidThreshold {
                input: item.to_string(),
                reason: "malformed pair, expected signal<value".to_string(),
            });
        };
        out.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(out)
}

/// Checks a hard or soft threshold value the way upstream's `parseThresholdStatement` does.
pub(crate) fn check_threshold_value(value: &ThresholdValue) -> Result<(), String> {
    match value {
        ThresholdValue::Percentage(p) if *p < 0.0 => {
            Err(format!("percentage {value} must be >= 0%"))
        }
        ThresholdValue::Percentage(p) if *p > 100.0 => {
            Err(format!("percentage {value} must be <= 100%"))
        }
        ThresholdValue::Percentage(_) => Ok(()),
        ThresholdValue::Quantity(q) if q.is_negative() || q.is_zero() => {
            Err(format!("threshold {q} must be positive"))
        }
        ThresholdValue::Quantity(_) => Ok(()),
    }
}

/// Checks a minimum-reclaim value the way upstream's `parseMinimumReclaims` does.
pub(crate) fn check_min_reclaim_value(value: &ThresholdValue) -> Result<(), String> {
    match value {
        ThresholdValue::Percentage(p) if *p <= 0.0 => {
            Err(format!("percentage {value} must be positive"))
        }
        ThresholdValue::Quantity(q) if q.is_negative() => {
            Err(format!("minimum reclaim {q} must not be negative"))
        }
        _ => Ok(()),
    }
}

/// Parses one map of signal → value, collecting an error per bad entry.
pub(crate) fn parse_value_map(
    field: &str,
    map: &BTreeMap<String, String>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<Signal, ThresholdValue> {
    let mut out = BTreeMap::new();
    for (key, text) in map {
        let path = format!("{field}[{key}]");
        let Ok(signal) = key.parse::<Signal>() else {
            errors.push(FieldError::new(path, "unsupported eviction signal"));
            continue;
        };
        match text.parse::<ThresholdValue>() {
            Ok(value) => {
                out.insert(signal, value);
            }
            Err(e) => errors.push(FieldError::new(path, e.to_string())),
        }
    }
    out
}

/// Parses the grace period map, collecting an error per bad entry.
pub(crate) fn parse_grace_map(
    field: &str,
    map: &BTreeMap<String, String>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<Signal, std::time::Duration> {
    let mut out = BTreeMap::new();
    for (key, text) in map {
        let path = format!("{field}[{key}]");
        let Ok(signal) = key.parse::<Signal>() else {
            errors.push(FieldError::new(path, "unsupported eviction signal"));
            continue;
        };
        match text.parse::<Duration>() {
            Ok(d) if d.is_negative() => errors.push(FieldError::new(
                path,
                format!("grace period {d} must not be negative"),
            )),
            Ok(d) => {
                out.insert(signal, d.as_std());
            }
            Err(e) => errors.push(FieldError::new(path, e.to_string())),
        }
    }
    out
}

/// Builds the threshold list from typed maps (upstream `ParseThresholdConfig`, without the
/// allocatable thresholds the eviction manager adds): hard thresholds, then soft ones with
/// their grace periods, each with its minimum reclaim. `0%` and `100%` entries are skipped.
pub(crate) fn build_thresholds(
    hard: &BTreeMap<Signal, ThresholdValue>,
    soft: &BTreeMap<Signal, ThresholdValue>,
    grace: &BTreeMap<Signal, std::time::Duration>,
    min_reclaim: &BTreeMap<Signal, ThresholdValue>,
) -> Result<Vec<EvictionThreshold>, ConfigError> {
    let mut errors = Vec::new();
    check_maps(hard, soft, grace, min_reclaim, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid { errors });
    }
    let mut out = Vec::new();
    for (signal, value) in hard.iter().filter(|(_, v)| !v.is_disabled()) {
        out.push(EvictionThreshold {
            signal: *signal,
            operator: ThresholdOperator::LessThan,
            value: *value,
            grace_period: std::time::Duration::ZERO,
            min_reclaim: min_reclaim.get(signal).copied(),
        });
    }
    for (signal, value) in soft.iter().filter(|(_, v)| !v.is_disabled()) {
        out.push(EvictionThreshold {
            signal: *signal,
            operator: ThresholdOperator::LessThan,
            value: *value,
            grace_period: grace.get(signal).copied().unwrap_or_default(),
            min_reclaim: min_reclaim.get(signal).copied(),
        });
    }
    Ok(out)
}

/// The validation rules for the four eviction maps.
pub(crate) fn check_maps(
    hard: &BTreeMap<Signal, ThresholdValue>,
    soft: &BTreeMap<Signal, ThresholdValue>,
    grace: &BTreeMap<Signal, std::time::Duration>,
    min_reclaim: &BTreeMap<Signal, ThresholdValue>,
    errors: &mut Vec<FieldError>,
) {
    for (field, map) in [("evictionHard", hard), ("evictionSoft", soft)] {
        for (signal, value) in map {
            if let Err(message) = check_threshold_value(value) {
                errors.push(FieldError::new(format!("{field}[{signal}]"), message));
            }
        }
    }
    for signal in soft.keys() {
        if !grace.contains_key(signal) {
            errors.push(FieldError::new(
                format!("evictionSoftGracePeriod[{signal}]"),
                format!("grace period must be specified for the soft eviction threshold {signal}"),
            ));
        }
    }
    for (signal, value) in min_reclaim {
        if let Err(message) = check_min_reclaim_value(value) {
            errors.push(FieldError::new(
                format!("evictionMinimumReclaim[{signal}]"),
                message,
            ));
        }
    }
}

/// Parses and checks the four eviction maps in their file (string) form, like upstream's
/// `ParseThresholdConfig`. Every bad entry is reported, each naming its field, e.g.
/// `evictionHard[memory.available]`.
///
/// ```
/// use std::collections::BTreeMap;
/// use node_config::eviction::{parse_threshold_flag, parse_thresholds, Signal};
/// let hard = parse_threshold_flag("memory.available<100Mi,nodefs.available<10%").unwrap();
/// let none = BTreeMap::new();
/// let thresholds = parse_thresholds(&hard, &none, &none, &none).unwrap();
/// assert_eq!(thresholds.len(), 2);
/// assert_eq!(thresholds[0].signal, Signal::MemoryAvailable);
/// ```
pub fn parse_thresholds(
    hard: &BTreeMap<String, String>,
    soft: &BTreeMap<String, String>,
    soft_grace_period: &BTreeMap<String, String>,
    minimum_reclaim: &BTreeMap<String, String>,
) -> Result<Vec<EvictionThreshold>, ConfigError> {
    let mut errors = Vec::new();
    let hard = parse_value_map("evictionHard", hard, &mut errors);
    let soft = parse_value_map("evictionSoft", soft, &mut errors);
    let grace = parse_grace_map("evictionSoftGracePeriod", soft_grace_period, &mut errors);
    let min_reclaim = parse_value_map("evictionMinimumReclaim", minimum_reclaim, &mut errors);
    check_maps(&hard, &soft, &grace, &min_reclaim, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid { errors });
    }
    build_thresholds(&hard, &soft, &grace, &min_reclaim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn signals_round_trip() {
        for signal in Signal::ALL {
            assert_eq!(signal.as_str().parse::<Signal>().unwrap(), signal);
        }
        assert!("swap.available".parse::<Signal>().is_err());
        assert!("memory.Available".parse::<Signal>().is_err());
    }

    #[test]
    fn flag_syntax() {
        let m = parse_threshold_flag("memory.available<100Mi, nodefs.available < 10%,,").unwrap();
        assert_eq!(
            m,
            map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")])
        );
        assert!(parse_threshold_flag("memory.available=100Mi").is_err());
        assert!(parse_threshold_flag("").unwrap().is_empty());
    }

    #[test]
    fn values() {
        assert_eq!(
            "10%".parse::<ThresholdValue>().unwrap(),
            ThresholdValue::Percentage(10.0)
        );
        assert_eq!(
            "7.5%".parse::<ThresholdValue>().unwrap().to_string(),
            "7.5%"
        );
        assert_eq!(
            "10%".parse::<ThresholdValue>().unwrap().fraction(),
            Some(0.1)
        );
        assert_eq!("1Gi".parse::<ThresholdValue>().unwrap().to_string(), "1Gi");
        assert!("abc%".parse::<ThresholdValue>().is_err());
        assert!("NaN%".parse::<ThresholdValue>().is_err());
        assert!("ten".parse::<ThresholdValue>().is_err());
        let capacity: Quantity = "10Gi".parse().unwrap();
        assert_eq!(
            ThresholdValue::Percentage(10.0)
                .quantity_for_capacity(&capacity)
                .as_bytes(),
            1_073_741_824
        );
    }

    #[test]
    fn parses_full_set() {
        let hard = map(&[
            ("memory.available", "100Mi"),
            ("nodefs.available", "10%"),
            ("imagefs.available", "0%"),
        ]);
        let soft = map(&[("memory.available", "300Mi")]);
        let grace = map(&[("memory.available", "1m30s")]);
        let reclaim = map(&[("memory.available", "50Mi")]);
        let t = parse_thresholds(&hard, &soft, &grace, &reclaim).unwrap();
        assert_eq!(t.len(), 3, "0% disables imagefs.available");
        assert!(t[0].is_hard());
        assert_eq!(t[0].min_reclaim.unwrap().to_string(), "50Mi");
        let soft_t = t.iter().find(|t| !t.is_hard()).unwrap();
        assert_eq!(soft_t.grace_period, std::time::Duration::from_secs(90));
    }

    #[test]
    fn errors_name_fields() {
        let none = BTreeMap::new();
        type Case<'a> = (BTreeMap<String, String>, BTreeMap<String, String>, &'a str);
        let cases: Vec<Case> = vec![
            (
                map(&[("bogus.signal", "1Gi")]),
                none.clone(),
                "evictionHard[bogus.signal]",
            ),
            (
                map(&[("memory.available", "1Q")]),
                none.clone(),
                "evictionHard[memory.available]",
            ),
            (
                map(&[("nodefs.available", "120%")]),
                none.clone(),
                "evictionHard[nodefs.available]",
            ),
            (
                map(&[("nodefs.available", "-1%")]),
                none.clone(),
                "evictionHard[nodefs.available]",
            ),
            (
                map(&[("memory.available", "0")]),
                none.clone(),
                "evictionHard[memory.available]",
            ),
            (
                none.clone(),
                map(&[("memory.available", "1Gi")]),
                "evictionSoftGracePeriod[memory.available]",
            ),
        ];
        for (hard, soft, field) in cases {
            let err = parse_thresholds(&hard, &soft, &none, &none).unwrap_err();
            assert!(err.names_field(field), "{err} should name {field}");
        }
        let err = parse_thresholds(
            &none,
            &none,
            &map(&[("memory.available", "-1s")]),
            &map(&[("memory.available", "-1Mi"), ("nodefs.available", "0%")]),
        )
        .unwrap_err();
        assert!(err.names_field("evictionSoftGracePeriod[memory.available]"));
        assert!(err.names_field("evictionMinimumReclaim[memory.available]"));
        assert!(err.names_field("evictionMinimumReclaim[nodefs.available]"));
    }
}
