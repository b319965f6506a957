//! The node's key: a standard Ethereum keystore (Web3 Secret Storage JSON, scrypt + AES-128-CTR)
//! through the `eth-keystore` crate — the one alloy's own `keystore` feature wraps — with the
//! password read from a file, or asked on the terminal when no file is given (`rpassword`, which
//! turns the echo off). No cryptography is written here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("cannot read the password file {path}: {source}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keystore {path}: {message}")]
    Keystore { path: PathBuf, message: String },
    #[error("{0} already exists: refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("{0}: a keystore path needs a file name")]
    BadPath(PathBuf),
    #[error("the key to import is not a hex secp256k1 private key")]
    BadKey,
    /// Without a password file the password is asked on the terminal; there is none (a
    /// service, a pipe).
    #[error("no password file given and stdin is not a terminal to ask for the password")]
    NoTerminal,
    #[error("reading the password from the terminal: {0}")]
    Prompt(#[source] std::io::Error),
    #[error("the two passwords differ")]
    Mismatch,
}

/// The password: the file's first line (a trailing newline is not part of it).
pub fn read_password(path: &Path) -> Result<String, KeystoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeystoreError::Password {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Asks for a password on the terminal (`again`: twice, for a new keystore).
fn prompt(again: bool) -> Result<String, KeystoreError> {
    // Only a person at a terminal can answer; a service would wait forever.
    if !std::io::stdin().is_terminal() {
        return Err(KeystoreError::NoTerminal);
    }
    let password =
        rpassword::prompt_password("Keystore password: ").map_err(KeystoreError::Prompt)?;
    if again && rpassword::prompt_password("Again: ").map_err(KeystoreError::Prompt)? != password {
        return Err(KeystoreError::Mismatch);
    }
    Ok(password)
}

/// The password from `file`, or asked on the terminal without one.
fn password(file: Option<&Path>, new: bool) -> Result<String, KeystoreError> {
    match file {
        Some(f) => read_password(f),
        None => prompt(new),
    }
}

/// Decrypts the keystore at `path` with the password in `password_file` (asked on the terminal
/// without one).
pub fn load(path: &Path, password_file: Option<&Path>) -> Result<PrivateKeySigner, KeystoreError> {
    let password = password(password_file, false)?;
    let err = |message: String| KeystoreError::Keystore {
        path: path.to_owned(),
        message,
    };
    let secret = eth_keystore::decrypt_key(path, password).map_err(|e| err(e.to_string()))?;
    PrivateKeySigner::from_slice(&secret).map_err(|e| err(e.to_string()))
}

/// Writes a new keystore at `path` (refusing to overwrite one) encrypted with the password in
/// `password_file` (asked twice on the terminal without one): a fresh random key, or `import`
/// (hex, `0x` optional). Returns the signer.
pub fn create(
    path: &Path,
    password_file: Option<&Path>,
    import: Option<&str>,
) -> Result<PrivateKeySigner, KeystoreError> {
    if path.exists() {
        return Err(KeystoreError::Exists(path.to_owned()));
    }
    let password = password(password_file, true)?;
    let signer = match import {
        Some(hex) => hex
            .trim()
            .parse::<PrivateKeySigner>()
            .map_err(|_| KeystoreError::BadKey)?,
        None => PrivateKeySigner::random(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| KeystoreError::BadPath(path.to_owned()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    eth_keystore::encrypt_key(
        dir,
        &mut rand08::thread_rng(),
        signer.to_bytes(),
        password,
        Some(name),
    )
    .map_err(|e| KeystoreError::Keystore {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_keystore_decrypts_only_with_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "correct horse\n").unwrap();
        let path = dir.path().join("key.json");
        let signer = create(&path, Some(&pw), None).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(load(&path, Some(&pw)).unwrap().address(), signer.address());
        assert!(matches!(
            create(&path, Some(&pw), None),
            Err(KeystoreError::Exists(_))
        ));
        std::fs::write(&pw, "wrong\n").unwrap();
        assert!(matches!(
            load(&path, Some(&pw)),
            Err(KeystoreError::Keystore { .. })
        ));

        let imported = dir.path().join("imported.json");
        let key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        let s = create(&imported, Some(&pw), Some(key)).unwrap();
        assert_eq!(load(&imported, Some(&pw)).unwrap().address(), s.address());
        assert!(matches!(
            create(&dir.path().join("x.json"), Some(&pw), Some("nope")),
            Err(KeystoreError::BadKey)
        ));
    }
}
