use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh ECDSA P-256 certificate and its PKCS#8 key, written to `dir` as `NAME.crt`/`NAME.key`.
fn generated(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

fn message(r: Result<CertifiedKey, TlsError>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn pkcs8_key_loads_and_makes_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generated(dir.path(), "a");
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let loaded = load_pem(&cert, &key).unwrap();
    assert_eq!(loaded.cert.len(), 1);
    let config = server_config(&cert, &key, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn pkcs1_rsa_key_loads() {
    load_pem(&fixture("rsa-pkcs1.crt"), &fixture("rsa-pkcs1.key")).unwrap();
}

#[test]
fn sec1_ec_key_loads() {
    load_pem(&fixture("ec-sec1.crt"), &fixture("ec-sec1.key")).unwrap();
}

#[test]
fn a_chain_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generated(dir.path(), "leaf");
    let other = std::fs::read_to_string(fixture("ec-sec1.crt")).unwrap();
    let leaf = std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&cert, format!("{leaf}{other}")).unwrap();
    assert_eq!(load_pem(&cert, &key).unwrap().cert.len(), 2);
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = generated(dir.path(), "a");
    let cert = dir.path().join("absent.pem");
    assert_eq!(
        message(load_pem(&cert, &key)),
        format!("cannot load {}: no such file", cert.display())
    );
    let (cert, _) = generated(dir.path(), "b");
    let key = dir.path().join("absent.key");
    assert_eq!(
        message(load_pem(&cert, &key)),
        format!("cannot load {}: no such file", key.display())
    );
}

#[test]
fn not_pem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generated(dir.path(), "a");
    std::fs::write(&key, b"\x30\x82\x01\x00 this is DER or junk, not PEM\n").unwrap();
    assert_eq!(
        message(load_pem(&cert, &key)),
        format!("cannot load {}: not PEM", key.display())
    );
    // A section that begins and never ends.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let m = message(load_pem(&cert, &key));
    assert!(
        m.starts_with(&format!("cannot load {}: not PEM (", cert.display())),
        "{m}"
    );
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generated(dir.path(), "a");
    // The usual slip: the certificate given twice.
    std::fs::copy(&cert, &key).unwrap();
    assert_eq!(
        message(load_pem(&cert, &key)),
        format!("cannot load {}: no private key found", key.display())
    );
}

#[test]
fn a_cert_file_without_a_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generated(dir.path(), "a");
    std::fs::copy(&key, &cert).unwrap();
    assert_eq!(
        message(load_pem(&cert, &key)),
        format!("cannot load {}: no certificate found", cert.display())
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = generated(dir.path(), "a");
    let (_, other_key) = generated(dir.path(), "b");
    assert_eq!(
        message(load_pem(&cert, &other_key)),
        format!(
            "cannot load {}: the key does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );
    // Across algorithms too (RSA key, ECDSA certificate).
    let rsa = fixture("rsa-pkcs1.key");
    assert!(matches!(
        load_pem(&cert, &rsa),
        Err(TlsError::KeyMismatch { .. })
    ));
}
