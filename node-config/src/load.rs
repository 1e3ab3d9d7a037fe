//! Loading: config file, drop-in directory and flags, with upstream precedence.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::defaults::{apply_legacy_flag_defaults, set_defaults};
use crate::error::{ConfigError, FieldError};
use crate::flags::FlagOverrides;
use crate::types::KubeletConfiguration;
use crate::v1beta1::{self, API_VERSION, KIND, UNINTERPRETED_FIELDS, strip_nulls};
use crate::validation::clean_path;

/// Builds a [`KubeletConfiguration`] from a config file, a drop-in directory and flag
/// overrides, with upstream precedence: file < drop-ins (in lexical order, later wins) <
/// flags.
///
/// The steps mirror `cmd/kubelet/app/server.go`:
/// 1. the config file (`--config`, YAML or JSON, detected by content) is decoded strictly,
///    its relative paths are resolved against its directory, and it is defaulted (including
///    the `evictionHard` default). Without a file the defaults are the starting point.
/// 2. each `*.conf` file under the drop-in directory (`--config-dir`), walked recursively in
///    lexical order like Go's `filepath.WalkDir`, is checked the same way (its relative paths
///    resolve against its own directory) and applied as a JSON merge patch: objects and maps
///    merge key by key, lists and scalars replace, `null` removes. Because the base was
///    defaulted first, a drop-in `evictionHard` entry changes that signal and keeps the
///    other default signals, as upstream.
/// 3. flags ([`FlagOverrides`]) replace the fields they set; map-valued flags replace the
///    whole map, `featureGates` merge.
/// 4. fields left unset or zero by the merge (a `null` in a drop-in) take their defaults
///    again, and the result is validated, reporting every problem at once.
///
/// ```no_run
/// use node_config::{ConfigLoader, FlagOverrides};
/// # fn main() -> Result<(), node_config::ConfigError> {
/// let config = ConfigLoader::new()
///     .file("/var/lib/kubelet/config.yaml")
///     .drop_in_dir("/etc/kubernetes/kubelet.conf.d")
///     .flags(FlagOverrides { max_pods: Some(50), ..Default::default() })
///     .load()?;
/// println!("{}", config.to_yaml()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    drop_in_dir: Option<PathBuf>,
    flags: FlagOverrides,
    command_line: Option<serde_json::Value>,
    legacy_flag_defaults: bool,
}

impl ConfigLoader {
    /// A loader with no file, no drop-ins and no flags: `load` then gives the defaults.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// The config file (`--config`), YAML or JSON.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// The drop-in directory (`--config-dir`); `*.conf` files in it are merged over the file.
    pub fn drop_in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.drop_in_dir = Some(dir.into());
        self
    }

    /// Command-line flag values, applied last.
    pub fn flags(mut self, flags: FlagOverrides) -> Self {
        self.flags = flags;
        self
    }

    /// The configuration fields set on a parsed command line ([`CommandLine`]), applied last
    /// (after [`flags`](Self::flags)), with the same rules: a flag replaces the field, map
    /// flags replace the whole map, `--feature-gates` merge over the file's gates.
    ///
    /// [`CommandLine`]: crate::cli::CommandLine
    pub fn command_line(mut self, command_line: &crate::cli::CommandLine) -> Self {
        self.command_line = Some(command_line.config_patch().clone());
        self
    }

    /// When no config file is given, start from upstream's legacy flag defaults (anonymous
    /// authentication, no token webhook, `AlwaysAllow`, read-only port 10255) like the
    /// upstream kubelet does without `--config`. Off by default: without a file this loader
    /// starts from the secure v1beta1 defaults.
    pub fn legacy_flag_defaults(mut self, enabled: bool) -> Self {
        self.legacy_flag_defaults = enabled;
        self
    }

    /// Reads, merges, defaults and validates. All validation problems are reported together.
    pub fn load(&self) -> Result<KubeletConfiguration, ConfigError> {
        let mut base = match &self.file {
            Some(path) => {
                let (path, value) = read_document(path)?;
                decode(value, &path)?
            }
            None => v1beta1::KubeletConfiguration::default(),
        };
        if self.file.is_none() && self.legacy_flag_defaults {
            apply_legacy_flag_defaults(&mut base);
        }
        set_defaults(&mut base);
        let mut merged = base.to_value();

        if let Some(dir) = &self.drop_in_dir {
            for file in drop_in_files(dir)? {
                let (path, patch) = read_document(&file)?;
                tracing::debug!(path = %path.display(), "merging kubelet drop-in config");
                merge_patch(&mut merged, &patch);
            }
        }
        self.flags.apply(&mut merged);
        if let Some(patch) = &self.command_line {
            crate::flags::apply_flag_patch(&mut merged, patch.clone());
        }

        let mut wire = decode(merged, Path::new("<merged>"))?;
        set_defaults(&mut wire);
        KubeletConfiguration::from_wire(&wire)
    }
}

impl ConfigLoader {
    /// Whether the file, a drop-in or a flag sets the top-level field `field` (its camelCase
    /// name), rather than leaving it to its default. Lets a caller treat "not configured" on
    /// its own terms: the example kubelet runs a containerd of its own when no
    /// `containerRuntimeEndpoint` is given.
    pub fn sets_field(&self, field: &str) -> Result<bool, ConfigError> {
        let mut merged = match &self.file {
            Some(path) => read_document(path)?.1,
            None => Value::Object(Default::default()),
        };
        if let Some(dir) = &self.drop_in_dir {
            for file in drop_in_files(dir)? {
                merge_patch(&mut merged, &read_document(&file)?.1);
            }
        }
        self.flags.apply(&mut merged);
        if let Some(patch) = &self.command_line {
            crate::flags::apply_flag_patch(&mut merged, patch.clone());
        }
        Ok(merged.get(field).is_some_and(|v| !v.is_null()))
    }
}

/// Loads and validates a config file (YAML or JSON); shorthand for
/// `ConfigLoader::new().file(path).load()`.
pub fn load(path: impl AsRef<Path>) -> Result<KubeletConfiguration, ConfigError> {
    ConfigLoader::new().file(path.as_ref()).load()
}

impl KubeletConfiguration {
    /// Resolves a wire document: applies defaults, converts and validates, reporting every
    /// problem at once.
    pub fn from_wire(wire: &v1beta1::KubeletConfiguration) -> Result<Self, ConfigError> {
        let mut wire = wire.clone();
        set_defaults(&mut wire);
        let mut errors: Vec<FieldError> = Vec::new();
        let config = crate::resolve::from_wire(&wire, &mut errors);
        config.collect_errors(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { errors })
        }
    }
}

impl std::str::FromStr for KubeletConfiguration {
    type Err = ConfigError;

    /// Parses a YAML or JSON document, then defaults and validates it. Relative paths are
    /// kept as written; use [`ConfigLoader`] to resolve them against a file's directory.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let path = Path::new("<inline>");
        let value = parse_document(text, path)?;
        let wire = decode(value, path)?;
        KubeletConfiguration::from_wire(&wire)
    }
}

/// Reads a file, parses it, checks `apiVersion`/`kind` and the fields, and resolves its
/// relative paths. Returns the absolute path and the document.
fn read_document(path: &Path) -> Result<(PathBuf, Value), ConfigError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut value = parse_document(&text, &path)?;
    decode(value.clone(), &path)?;
    if let Some(dir) = path.parent() {
        resolve_relative_paths(&mut value, dir);
    }
    Ok((path, value))
}

/// Parses YAML or JSON (JSON first when the document starts with `{`) into a JSON object
/// and checks `apiVersion` and `kind`.
fn parse_document(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ConfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    let syntax = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::Syntax {
        path: path.to_path_buf(),
        source,
    };
    let value: Value = if text.trim_start().starts_with('{') {
        // JSON, or a YAML flow mapping; report the JSON error if neither parses.
        match serde_json::from_str(text) {
            Ok(value) => value,
            Err(json_error) => {
                serde_saphyr::from_str(text).map_err(|_| syntax(Box::new(json_error)))?
            }
        }
    } else {
        serde_saphyr::from_str(text).map_err(|e| syntax(Box::new(e)))?
    };
    if !value.is_object() {
        return Err(ConfigError::Decode {
            path: path.to_path_buf(),
            field: "<root>".to_string(),
            message: "the document must be a mapping".to_string(),
        });
    }
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let found = value.get(field);
        if found.and_then(Value::as_str) != Some(expected) {
            return Err(ConfigError::TypeMeta {
                path: path.to_path_buf(),
                field,
                expected,
                found: found.map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            });
        }
    }
    Ok(value)
}

/// Strictly decodes a document into the wire type, naming the field of any error. `null`
/// members (which in a drop-in mean "remove") count as unset.
pub(crate) fn decode(
    mut value: Value,
    path: &Path,
) -> Result<v1beta1::KubeletConfiguration, ConfigError> {
    strip_nulls(&mut value);
    let mut uninterpreted = std::collections::BTreeMap::new();
    if let Value::Object(map) = &mut value {
        for name in UNINTERPRETED_FIELDS {
            if let Some(v) = map.remove(*name) {
                tracing::debug!(
                    field = name,
                    "kubelet config field accepted but not interpreted"
                );
                uninterpreted.insert((*name).to_string(), v);
            }
        }
    }
    let mut wire: v1beta1::KubeletConfiguration =
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let mut message = e.inner().to_string();
            // serde lists every known field after an unknown one; the path already names it.
            if message.starts_with("unknown field")
                && let Some(cut) = message.find(", expected")
            {
                message.truncate(cut);
            }
            ConfigError::Decode {
                path: path.to_path_buf(),
                field,
                message,
            }
        })?;
    wire.uninterpreted = uninterpreted;
    Ok(wire)
}

/// The fields holding file paths (upstream `KubeletConfigurationPathRefs`).
const PATH_FIELDS: &[&[&str]] = &[
    &["staticPodPath"],
    &["authentication", "x509", "clientCAFile"],
    &["tlsCertFile"],
    &["tlsPrivateKeyFile"],
    &["resolvConf"],
    &["volumePluginDir"],
    &["podLogsDir"],
];

/// Makes relative paths absolute against `dir` (upstream `resolveRelativePaths`); empty and
/// absolute paths are left alone.
fn resolve_relative_paths(value: &mut Value, dir: &Path) {
    for field in PATH_FIELDS {
        let mut cursor = Some(&mut *value);
        for key in *field {
            cursor = cursor.and_then(|v| v.get_mut(*key));
        }
        if let Some(Value::String(s)) = cursor
            && !s.is_empty()
            && !Path::new(s.as_str()).is_absolute()
        {
            let joined = dir.join(s.as_str());
            *s = clean_path(&joined.to_string_lossy());
        }
    }
}

/// The drop-in files of `dir`: `*.conf` files, walked recursively in lexical order (as Go's
/// `filepath.WalkDir`).
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
    let read_dir = |source| ConfigError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let is_dir = entry.file_type().map_err(read_dir)?.is_dir();
        entries.push((entry.file_name(), entry.path(), is_dir));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, path, is_dir) in entries {
        if is_dir {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "conf") {
            out.push(path);
        }
    }
    Ok(())
}

/// Applies an RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key,
/// anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "l": [3]}),
        );
        assert_eq!(target, json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [3]}));
        let mut scalar = json!("x");
        merge_patch(&mut scalar, &json!({"k": 1}));
        assert_eq!(scalar, json!({"k": 1}));
    }

    #[test]
    fn resolves_paths() {
        let mut v = json!({
            "staticPodPath": "manifests",
            "tlsCertFile": "/abs/cert.pem",
            "resolvConf": "",
            "authentication": {"x509": {"clientCAFile": "../pki/ca.crt"}},
        });
        resolve_relative_paths(&mut v, Path::new("/etc/kubernetes/kubelet"));
        assert_eq!(v["staticPodPath"], "/etc/kubernetes/kubelet/manifests");
        assert_eq!(v["tlsCertFile"], "/abs/cert.pem");
        assert_eq!(v["resolvConf"], "");
        assert_eq!(
            v["authentication"]["x509"]["clientCAFile"],
            "/etc/kubernetes/pki/ca.crt"
        );
    }
}
