//! Flag values: parsing each kind of flag into the JSON value of its configuration field, and
//! placing it in the patch with pflag's repeat rules.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::table::FlagKind;
use crate::duration::Duration;
use crate::eviction::parse_threshold_flag;
use crate::flags::{parse_bool_flag, parse_map_flag, parse_taints_flag};
use crate::quantity::Quantity;

/// A boolean as Go's `strconv.ParseBool` reads it.
pub(super) fn bool_value(value: &str) -> Result<bool, String> {
    parse_bool_flag(value)
        .map_err(|_| format!("strconv.ParseBool: parsing {value:?}: invalid syntax"))
}

fn int_value(value: &str, min: i64, max: i64, bits: u8) -> Result<Value, String> {
    let n: i64 = value
        .parse()
        .map_err(|_| format!("strconv.ParseInt: parsing {value:?}: invalid syntax"))?;
    if n < min || n > max {
        return Err(format!(
            "strconv.ParseInt: parsing {value:?}: value out of range for a {bits}-bit integer"
        ));
    }
    Ok(Value::from(n))
}

/// Comma-separated items as pflag's string slices read them (no CSV quoting needed here:
/// no kubelet list value contains a comma).
fn items(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value.split(',').map(|s| s.trim().to_string()).collect()
}

fn string_map(map: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// The JSON value of a configuration field set by a flag of `kind`.
pub(super) fn config_value(kind: FlagKind, value: &str) -> Result<Value, String> {
    Ok(match kind {
        FlagKind::Bool | FlagKind::Help | FlagKind::Version => Value::Bool(bool_value(value)?),
        FlagKind::String => Value::String(value.to_string()),
        FlagKind::Int32 => int_value(value, i32::MIN.into(), i32::MAX.into(), 32)?,
        FlagKind::Int64 => int_value(value, i64::MIN, i64::MAX, 64)?,
        FlagKind::Uint32 => int_value(value, 0, u32::MAX.into(), 32)?,
        FlagKind::Float => {
            let f: f64 = value
                .parse()
                .map_err(|_| format!("strconv.ParseFloat: parsing {value:?}: invalid syntax"))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| format!("{value:?} is not a finite number"))?
        }
        FlagKind::Duration => {
            let d: Duration = value
                .parse()
                .map_err(|e: crate::ConfigError| e.to_string())?;
            Value::String(d.to_string())
        }
        FlagKind::Quantity => {
            let q: Quantity = value
                .parse()
                .map_err(|e: crate::ConfigError| e.to_string())?;
            Value::String(q.to_string())
        }
        FlagKind::Ip => {
            let ip: IpAddr = value
                .trim()
                .parse()
                .map_err(|_| format!("failed to parse IP: {value:?}"))?;
            Value::String(ip.to_string())
        }
        FlagKind::StringSlice => Value::Array(items(value).into_iter().map(Value::String).collect()),
        FlagKind::IpSlice => Value::Array(
            items(value)
                .into_iter()
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map(|ip| Value::String(ip.to_string()))
                        .map_err(|_| format!("invalid IP address {s:?}"))
                })
                .collect::<Result<_, _>>()?,
        ),
        FlagKind::StringMap => string_map(parse_map_flag(value).map_err(|e| e.to_string())?),
        FlagKind::QuantityMap => {
            let map = parse_map_flag(value).map_err(|e| e.to_string())?;
            for (k, v) in &map {
                v.parse::<Quantity>()
                    .map_err(|e| format!("{k}: {e}"))?;
            }
            string_map(map)
        }
        FlagKind::BoolMap => Value::Object(
            parse_map_flag(value)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(k, v)| {
                    parse_bool_flag(&v)
                        .map(|b| (k.clone(), Value::Bool(b)))
                        .map_err(|_| format!("invalid value of {k}: {v}, err: strconv.ParseBool: parsing {v:?}: invalid syntax"))
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
        FlagKind::Thresholds => string_map(parse_threshold_flag(value).map_err(|e| e.to_string())?),
        FlagKind::Taints => Value::Array(
            parse_taints_flag(value)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|t| {
                    serde_json::to_value(crate::resolve::wire_taint(t)).unwrap_or(Value::Null)
                })
                .collect(),
        ),
        FlagKind::HeaderMap => {
            // `key:value,key:value2`, values of a repeated key gathered in order.
            let mut map = Map::new();
            for item in value.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = item
                    .split_once(':')
                    .ok_or_else(|| format!("malformed pair {item:?}, expected key:value"))?;
                let list = map
                    .entry(k.trim().to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(Value::String(v.trim().to_string()));
                }
            }
            Value::Object(map)
        }
        FlagKind::StringPair => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| format!("malformed pair {value:?}, expect string=string"))?;
            string_map([(k.trim().to_string(), v.trim().to_string())])
        }
        FlagKind::ReservedMemory => Value::Array(
            value
                .split(';')
                .filter(|s| !s.trim().is_empty())
                .map(reserved_memory_node)
                .collect::<Result<_, _>>()?,
        ),
        FlagKind::Enum(allowed) => {
            if !allowed.contains(&value) {
                return Err(format!("must be one of: {}", allowed.join(", ")));
            }
            Value::String(value.to_string())
        }
    })
}

/// One NUMA node of `--reserved-memory`: `0:memory=1Gi,hugepages-1Gi=2Gi`.
fn reserved_memory_node(item: &str) -> Result<Value, String> {
    let (numa, limits) = item
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("the reserved memory has incorrect format, expected numaNodeID:type=quantity[,type=quantity...], got {item}"))?;
    let numa: i32 = numa
        .trim()
        .parse()
        .map_err(|_| format!("failed to parse the NUMA node ID {numa:?}"))?;
    let limits = parse_map_flag(limits).map_err(|e| e.to_string())?;
    if limits.is_empty() {
        return Err(format!("no memory types given for NUMA node {numa}"));
    }
    for (k, v) in &limits {
        if k != "memory" && !k.starts_with("hugepages-") {
            return Err(format!("memory type {k:?} is not supported"));
        }
        v.parse::<Quantity>().map_err(|e| format!("{k}: {e}"))?;
    }
    Ok(serde_json::json!({"numaNode": numa, "limits": string_map(limits)}))
}

/// Sets the dotted `path` of the patch to `value`. A flag given again appends (lists) or
/// merges (maps) as pflag's slice and map values do; scalars take the last value.
pub(super) fn set_path(
    patch: &mut Value,
    path: &str,
    value: Value,
    kind: FlagKind,
    repeated: bool,
) {
    let mut node = patch;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            let slot = map.entry(part.to_string()).or_insert(Value::Null);
            match (slot, value, repeated && kind.accumulates()) {
                (Value::Array(old), Value::Array(new), true) => old.extend(new),
                (Value::Object(old), Value::Object(new), true) => old.extend(new),
                (slot, value, _) => *slot = value,
            }
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert(Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_by_kind() {
        assert_eq!(config_value(FlagKind::Int32, "50").unwrap(), json!(50));
        assert!(
            config_value(FlagKind::Int32, "5000000000")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            config_value(FlagKind::Int32, "x")
                .unwrap_err()
                .contains("invalid syntax")
        );
        assert_eq!(
            config_value(FlagKind::Duration, "1m30s").unwrap(),
            json!("1m30s")
        );
        assert!(config_value(FlagKind::Duration, "5 minutes").is_err());
        assert_eq!(
            config_value(
                FlagKind::Thresholds,
                "memory.available<100Mi,nodefs.available<10%"
            )
            .unwrap(),
            json!({"memory.available": "100Mi", "nodefs.available": "10%"})
        );
        assert_eq!(
            config_value(FlagKind::BoolMap, "A=true,B=false").unwrap(),
            json!({"A": true, "B": false})
        );
        assert!(config_value(FlagKind::QuantityMap, "cpu=lots").is_err());
        assert_eq!(
            config_value(FlagKind::IpSlice, "10.96.0.10,fd00::a").unwrap(),
            json!(["10.96.0.10", "fd00::a"])
        );
        assert_eq!(
            config_value(FlagKind::HeaderMap, "a:1,a:2,b:3").unwrap(),
            json!({"a": ["1", "2"], "b": ["3"]})
        );
        assert!(config_value(FlagKind::Enum(&["a", "b"]), "c").is_err());
        assert_eq!(
            config_value(FlagKind::StringPair, "full-pcpus-only=true,x").unwrap(),
            json!({"full-pcpus-only": "true,x"})
        );
        assert_eq!(
            config_value(
                FlagKind::ReservedMemory,
                "0:memory=1Gi,hugepages-1Gi=2Gi;1:memory=2Gi"
            )
            .unwrap(),
            json!([
                {"numaNode": 0, "limits": {"memory": "1Gi", "hugepages-1Gi": "2Gi"}},
                {"numaNode": 1, "limits": {"memory": "2Gi"}}
            ])
        );
        assert!(config_value(FlagKind::ReservedMemory, "0:cpu=1").is_err());
        assert!(config_value(FlagKind::ReservedMemory, "memory=1Gi").is_err());
    }

    #[test]
    fn repeats_append_merge_or_replace() {
        let mut patch = json!({});
        set_path(
            &mut patch,
            "a.b",
            json!(["x"]),
            FlagKind::StringSlice,
            false,
        );
        set_path(&mut patch, "a.b", json!(["y"]), FlagKind::StringSlice, true);
        set_path(
            &mut patch,
            "m",
            json!({"k": "1"}),
            FlagKind::StringMap,
            false,
        );
        set_path(
            &mut patch,
            "m",
            json!({"l": "2"}),
            FlagKind::StringMap,
            true,
        );
        set_path(&mut patch, "n", json!(1), FlagKind::Int32, false);
        set_path(&mut patch, "n", json!(2), FlagKind::Int32, true);
        assert_eq!(
            patch,
            json!({"a": {"b": ["x", "y"]}, "m": {"k": "1", "l": "2"}, "n": 2})
        );
    }
}
