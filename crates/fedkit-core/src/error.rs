//! The one error type of fedkit. Every fallible library function returns [`Result`].

/// Everything that can go wrong in fedkit, by kind. Messages are written for the user: they name
/// the file, the key and the allowed values where those are known.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad configuration value: `key` is the dotted config path (e.g. `algorithm.mu`).
    #[error("{}", config_message(.file, .key, .msg))]
    Config { file: Option<String>, key: String, msg: String },
    /// Tensor or parameter shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A dataset that is missing, truncated or malformed.
    #[error("{0}")]
    Data(String),
    /// An I/O failure, with the path it concerned.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A failure to reach or talk to a client.
    #[error("transport: {0}")]
    Transport(String),
    /// A method that cannot proceed (bad state, numerical failure, ...).
    #[error("{0}")]
    Method(String),
}

fn config_message(file: &Option<String>, key: &str, msg: &str) -> String {
    // serde adds "in `key`" lines that repeat the key we already name.
    let msg: Vec<&str> = msg.lines().filter(|l| !l.starts_with("in `")).collect();
    let parts: Vec<&str> = [file.as_deref().unwrap_or(""), key].into_iter().filter(|p| !p.is_empty()).collect();
    if parts.is_empty() { msg.join("\n") } else { format!("{}: {}", parts.join(": "), msg.join("\n")) }
}

/// fedkit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A configuration error at `key` (no file known yet; see [`Error::in_file`]).
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { file: None, key: key.into(), msg: msg.into() }
    }
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), error: source }
    }
    /// Put a configuration error's bare key (one without a dot, a method's own parameter)
    /// under `section`, e.g. `pipeline.0`; dotted keys (`sampling.rate`) stay as they are.
    pub fn under(self, section: &str) -> Self {
        match self {
            Error::Config { file, key, msg } if !key.contains('.') => {
                Error::Config { file, key: format!("{section}.{key}"), msg }
            }
            other => other,
        }
    }
    /// Attach the config file name to a configuration error that lacks one.
    pub fn in_file(self, file: &str) -> Self {
        match self {
            Error::Config { file: None, key, msg } => Error::Config { file: Some(file.to_string()), key, msg },
            other => other,
        }
    }
}

/// Return early with an [`Error::Method`] (or any error expression) unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !$cond {
            return Err($err.into());
        }
    };
}

/// Return early with an error.
#[macro_export]
macro_rules! bail {
    ($err:expr) => {
        return Err($err.into())
    };
}
