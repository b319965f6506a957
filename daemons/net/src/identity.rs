//! Ethereum-key identities bound to TLS certificates.
//!
//! A peer is an Ethereum key. Its TLS key is a separate, short-lived key (ECDSA P-256) so the
//! Ethereum key never touches TLS; the self-signed certificate carries a [`Binding`]: the
//! Ethereum key's signature over the certificate's SubjectPublicKeyInfo and a validity period.
//! See the crate README for the exact bytes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256, Signature, eip191_hash_message};
use der::asn1::{ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode};
use k256::ecdsa::SigningKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use x509_cert::Certificate;

/// OID of the X.509 extension that carries the [`Binding`].
///
/// Under IANA's documentation enterprise number 32473 (RFC 5612) because the project has no
/// Private Enterprise Number of its own: it collides with no real organisation's arc. Replace it
/// with a registered arc before anything is deployed (a one-constant change).
pub const BINDING_OID: &str = "1.3.6.1.4.1.32473.7666.1";
const BINDING_OID_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7666, 1];
const BINDING_OID_PARSED: ObjectIdentifier = ObjectIdentifier::new_unwrap(BINDING_OID);

/// Domain-separation tag that starts every signed binding message; the trailing NUL keeps a
/// longer tag from ever being a prefix-extension of this one.
pub const BINDING_DOMAIN: &[u8] = b"sonm-net tls identity v1\0";

/// The only binding version this code writes and accepts.
pub const BINDING_VERSION: u8 = 1;

/// How far back a generated identity's validity starts, so that a peer whose clock is a little
/// behind ours still accepts it.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a certificate does not prove an Ethereum identity (or is not the one we want).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid Ethereum secret key")]
    InvalidEthKey,
    #[error("invalid TLS key: {0}")]
    InvalidTlsKey(String),
    #[error("cannot build certificate: {0}")]
    CertificateBuild(String),
    #[error("certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error("peer sent a certificate chain; only one self-signed certificate is accepted")]
    UnexpectedChain,
    #[error("certificate carries no identity extension ({BINDING_OID})")]
    MissingBinding,
    #[error("certificate carries more than one identity extension")]
    DuplicateBinding,
    #[error("identity extension is malformed: {0}")]
    MalformedBinding(String),
    #[error("unsupported identity binding version {0}")]
    UnsupportedVersion(u8),
    #[error("Ethereum signature does not verify: {0}")]
    BadSignature(String),
    #[error("certificate claims {claimed} but its binding is signed by {recovered}")]
    SignerMismatch {
        claimed: Address,
        recovered: Address,
    },
    #[error("identity validity is empty: not_before {not_before} >= not_after {not_after}")]
    EmptyValidity { not_before: u64, not_after: u64 },
    #[error("identity not valid yet: valid from {not_before}, now {now}")]
    NotYetValid { not_before: u64, now: u64 },
    #[error("identity expired at {not_after}, now {now}")]
    Expired { not_after: u64, now: u64 },
    #[error("peer is {actual}, expected {expected}")]
    UnexpectedPeer { expected: Address, actual: Address },
}

/// An Ethereum (secp256k1) secret key and its address.
#[derive(Clone)]
pub struct EthKey {
    key: SigningKey,
    address: Address,
}

// Never print the secret.
impl fmt::Debug for EthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EthKey {
    /// A fresh key from the operating system's CSPRNG (through ring, already linked for TLS).
    pub fn random() -> Self {
        let rng = rustls::crypto::ring::default_provider().secure_random;
        loop {
            let mut secret = [0u8; 32];
            // ring's SystemRandom fails only if the OS has no randomness: nothing to recover.
            rng.fill(&mut secret).expect("OS random source failed");
            // Out of range (zero or >= n) with probability ~2^-128: draw again.
            if let Ok(key) = Self::from_bytes(&secret) {
                return key;
            }
        }
    }

    /// A key from its 32-byte big-endian secret scalar.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, IdentityError> {
        let key =
            SigningKey::from_bytes(secret.into()).map_err(|_| IdentityError::InvalidEthKey)?;
        let address = Address::from_private_key(&key);
        Ok(Self { key, address })
    }

    /// The 32-byte secret scalar, for persisting the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes().into()
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// A seed for the QUIC stateless-reset key (`EndpointConfig::reset_seed`), stable across
    /// restarts because it comes from this key; a one-way, domain-separated hash, so it
    /// reveals nothing of the key and is no signature of anything.
    pub fn stateless_reset_seed(&self) -> [u8; 32] {
        let mut material = b"sonm-net quic stateless reset v1\0".to_vec();
        material.extend_from_slice(&self.to_bytes());
        alloy_primitives::keccak256(&material).0
    }

    /// Signs `message` as an EIP-191 personal message (what `personal_sign` does), so that
    /// `Signature::recover_address_from_msg(message)` gives this key's address. Callers put a
    /// domain tag of their own at the start of `message`.
    pub fn sign_message(&self, message: &[u8]) -> Signature {
        self.sign_prehash(&eip191_hash_message(message))
    }

    fn sign_prehash(&self, hash: &B256) -> Signature {
        // k256 signs deterministically (RFC 6979) with low s; it fails only for a zero hash.
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .expect("keccak output is never a rejected prehash");
        Signature::from_signature_and_parity(sig, recid.is_y_odd())
    }
}

/// The Ethereum key's statement "this TLS key speaks for me between these times".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address the certificate claims; must equal the signature's signer.
    pub address: Address,
    /// Unix seconds, inclusive.
    pub not_before: u64,
    /// Unix seconds, exclusive.
    pub not_after: u64,
    /// EIP-191 signature over [`Binding::message`].
    pub signature: Signature,
}

/// The extension's DER value: `SEQUENCE { version INTEGER, address OCTET STRING (20),
/// notBefore INTEGER, notAfter INTEGER, signature OCTET STRING (65: r || s || v) }`.
#[derive(der::Sequence)]
struct BindingAsn1<'a> {
    version: u8,
    address: OctetStringRef<'a>,
    not_before: u64,
    not_after: u64,
    signature: OctetStringRef<'a>,
}

impl Binding {
    /// Signs a binding of `spki_der` (the TLS key's SubjectPublicKeyInfo) to `key`.
    pub fn sign(key: &EthKey, spki_der: &[u8], not_before: u64, not_after: u64) -> Self {
        let message = Self::message(key.address, not_before, not_after, spki_der);
        Self {
            address: key.address,
            not_before,
            not_after,
            signature: key.sign_prehash(&eip191_hash_message(&message)),
        }
    }

    /// The signed bytes: `BINDING_DOMAIN || address (20) || not_before (u64 BE) ||
    /// not_after (u64 BE) || spki_der`. They are signed as an EIP-191 personal message, so a
    /// wallet can produce the signature and it can never be a transaction's.
    pub fn message(address: Address, not_before: u64, not_after: u64, spki_der: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(BINDING_DOMAIN.len() + 20 + 16 + spki_der.len());
        m.extend_from_slice(BINDING_DOMAIN);
        m.extend_from_slice(address.as_slice());
        m.extend_from_slice(&not_before.to_be_bytes());
        m.extend_from_slice(&not_after.to_be_bytes());
        // Last and self-delimiting (DER), so no length prefix is needed.
        m.extend_from_slice(spki_der);
        m
    }

    pub fn to_der(&self) -> Vec<u8> {
        let sig = self.signature.as_bytes();
        let asn1 = BindingAsn1 {
            version: BINDING_VERSION,
            address: OctetStringRef::new(self.address.as_slice()).expect("20 bytes fit"),
            not_before: self.not_before,
            not_after: self.not_after,
            signature: OctetStringRef::new(&sig).expect("65 bytes fit"),
        };
        asn1.to_der()
            .expect("a fixed-shape sequence always encodes")
    }

    pub fn from_der(bytes: &[u8]) -> Result<Self, IdentityError> {
        let asn1 = BindingAsn1::from_der(bytes)
            .map_err(|e| IdentityError::MalformedBinding(e.to_string()))?;
        if asn1.version != BINDING_VERSION {
            return Err(IdentityError::UnsupportedVersion(asn1.version));
        }
        let address = <[u8; 20]>::try_from(asn1.address.as_bytes())
            .map_err(|_| IdentityError::MalformedBinding("address is not 20 bytes".into()))?;
        let signature = <[u8; 65]>::try_from(asn1.signature.as_bytes())
            .map_err(|_| IdentityError::MalformedBinding("signature is not 65 bytes".into()))?;
        let signature = Signature::from_raw_array(&signature)
            .map_err(|e| IdentityError::BadSignature(e.to_string()))?;
        Ok(Self {
            address: Address::from(address),
            not_before: asn1.not_before,
            not_after: asn1.not_after,
            signature,
        })
    }

    /// Checks that the claimed address signed this binding for `spki_der`, and that `now`
    /// (Unix seconds) is inside the validity period.
    pub fn verify(&self, spki_der: &[u8], now: u64) -> Result<(), IdentityError> {
        let message = Self::message(self.address, self.not_before, self.not_after, spki_der);
        let recovered = self
            .signature
            .recover_address_from_msg(&message)
            .map_err(|e| IdentityError::BadSignature(e.to_string()))?;
        if recovered != self.address {
            return Err(IdentityError::SignerMismatch {
                claimed: self.address,
                recovered,
            });
        }
        if self.not_before >= self.not_after {
            return Err(IdentityError::EmptyValidity {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        if now < self.not_before {
            return Err(IdentityError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now >= self.not_after {
            return Err(IdentityError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }
}

/// What a verified certificate proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedPeer {
    pub address: Address,
    /// Unix seconds; the peer must present a fresh certificate after this.
    pub not_after: u64,
}

/// Verifies that `cert_der` proves an Ethereum identity at `now` (Unix seconds).
///
/// The certificate's own dates and self-signature are not checked: they are asserted by the TLS
/// key alone, while the binding is what the Ethereum key signed, and the TLS handshake signature
/// (checked separately by the verifiers) proves possession of the TLS key.
pub fn verify_certificate(cert_der: &[u8], now: u64) -> Result<VerifiedPeer, IdentityError> {
    let cert = Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    // DER is canonical, so re-encoding the parsed SPKI gives the bytes in the certificate.
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let mut found = None;
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id == BINDING_OID_PARSED {
            if found.is_some() {
                return Err(IdentityError::DuplicateBinding);
            }
            found = Some(ext.extn_value.as_bytes());
        }
    }
    let binding = Binding::from_der(found.ok_or(IdentityError::MissingBinding)?)?;
    binding.verify(&spki, now)?;
    Ok(VerifiedPeer {
        address: binding.address,
        not_after: binding.not_after,
    })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh TLS key (ECDSA P-256), PKCS#8 DER, for callers that persist it.
pub fn generate_tls_key() -> Result<Vec<u8>, IdentityError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_der())
        .map_err(|e| IdentityError::InvalidTlsKey(e.to_string()))
}

/// A TLS key's SubjectPublicKeyInfo (DER), the bytes a [`Binding`] signs.
pub fn tls_key_spki(tls_key_pkcs8: &[u8]) -> Result<Vec<u8>, IdentityError> {
    use rcgen::PublicKeyData;
    let kp = rcgen::KeyPair::try_from(tls_key_pkcs8)
        .map_err(|e| IdentityError::InvalidTlsKey(e.to_string()))?;
    Ok(kp.subject_public_key_info())
}

/// A local identity: the certificate with its binding, and the TLS key that goes with it.
#[derive(Clone)]
pub struct Identity {
    binding: Binding,
    cert: CertificateDer<'static>,
    tls_key: Arc<[u8]>,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh TLS key bound to `eth` from now (less [`CLOCK_SKEW`]) for `validity`.
    pub fn generate(eth: &EthKey, validity: Duration) -> Result<Self, IdentityError> {
        let now = unix_now();
        let tls_key = generate_tls_key()?;
        Self::with_tls_key(
            eth,
            &tls_key,
            now.saturating_sub(CLOCK_SKEW.as_secs()),
            now.saturating_add(validity.as_secs()),
        )
    }

    /// Binds a given (persisted) TLS key to `eth` for `[not_before, not_after)` (Unix seconds).
    pub fn with_tls_key(
        eth: &EthKey,
        tls_key_pkcs8: &[u8],
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, IdentityError> {
        let spki = tls_key_spki(tls_key_pkcs8)?;
        let binding = Binding::sign(eth, &spki, not_before, not_after);
        Self::from_binding(tls_key_pkcs8, binding)
    }

    /// Builds the certificate for a TLS key and a binding as given, without checking that they
    /// belong together: peers check that. Meant for re-assembling a stored identity (and for
    /// tests that forge one).
    pub fn from_binding(tls_key_pkcs8: &[u8], binding: Binding) -> Result<Self, IdentityError> {
        let key_pair = rcgen::KeyPair::try_from(tls_key_pkcs8)
            .map_err(|e| IdentityError::InvalidTlsKey(e.to_string()))?;
        let build = |e: rcgen::Error| IdentityError::CertificateBuild(e.to_string());
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(build)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, binding.address.to_checksum(None));
        // Mirror the binding's period so standard tools show it; the binding is authoritative.
        params.not_before = to_datetime(binding.not_before)?;
        params.not_after = to_datetime(binding.not_after)?;
        // Not critical: webpki (inside rustls' handshake-signature check) refuses to parse a
        // certificate with a critical extension it does not know. Nothing is lost: no generic
        // verifier would accept this self-signed certificate anyway.
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                BINDING_OID_ARCS,
                binding.to_der(),
            ));
        let cert = params.self_signed(&key_pair).map_err(build)?;
        let cert = cert.der().clone();

        // The same provider the endpoints use, whatever the process default is.
        let provider = rustls::crypto::ring::default_provider();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls_key_pkcs8.to_vec()));
        let certified = CertifiedKey::from_der(vec![cert.clone()], key_der, &provider)
            .map_err(|e| IdentityError::InvalidTlsKey(e.to_string()))?;
        Ok(Self {
            binding,
            cert,
            tls_key: Arc::from(tls_key_pkcs8),
            certified: Arc::new(certified),
        })
    }

    pub fn address(&self) -> Address {
        self.binding.address
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The TLS key (PKCS#8 DER), for persisting it next to the Ethereum key.
    pub fn tls_key_pkcs8_der(&self) -> &[u8] {
        &self.tls_key
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// A thief's identity: `victim`'s public certificate presented with a TLS key that is not the
/// certified one. Only a handshake-signature check tells it apart.
#[cfg(test)]
pub(crate) fn stolen_certificate(victim: &Identity, thief_tls_key: &[u8]) -> Identity {
    let provider = rustls::crypto::ring::default_provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(thief_tls_key.to_vec()));
    let signer = provider.key_provider.load_private_key(key).unwrap();
    Identity {
        binding: victim.binding.clone(),
        cert: victim.cert.clone(),
        tls_key: Arc::from(thief_tls_key),
        // CertifiedKey::new skips the key/certificate match that from_der would catch.
        certified: Arc::new(CertifiedKey::new(vec![victim.cert.clone()], signer)),
    }
}

fn to_datetime(unix: u64) -> Result<time::OffsetDateTime, IdentityError> {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| IdentityError::CertificateBuild(format!("time {unix} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_verifies_to_its_address() {
        let eth = EthKey::random();
        let id = Identity::generate(&eth, Duration::from_secs(3600)).unwrap();
        let peer = verify_certificate(id.certificate_der(), unix_now()).unwrap();
        assert_eq!(peer.address, eth.address());
        assert_eq!(peer.not_after, id.binding().not_after);
    }

    #[test]
    fn eth_key_round_trips_through_bytes() {
        let eth = EthKey::random();
        let again = EthKey::from_bytes(&eth.to_bytes()).unwrap();
        assert_eq!(again.address(), eth.address());
        assert_eq!(
            EthKey::from_bytes(&[0; 32]).unwrap_err(),
            IdentityError::InvalidEthKey
        );
    }

    #[test]
    fn known_key_has_known_address() {
        // Anvil's first dev account: checks the address derivation against a public vector.
        let secret: [u8; 32] = alloy_primitives::hex!(
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
        );
        let eth = EthKey::from_bytes(&secret).unwrap();
        assert_eq!(
            eth.address(),
            alloy_primitives::address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
    }

    #[test]
    fn binding_der_round_trips() {
        let eth = EthKey::random();
        let b = Binding::sign(&eth, b"spki", 10, 20);
        assert_eq!(Binding::from_der(&b.to_der()).unwrap(), b);
    }

    #[test]
    fn binding_checks_each_field() {
        let eth = EthKey::random();
        let other = EthKey::random();
        let b = Binding::sign(&eth, b"spki", 100, 200);
        b.verify(b"spki", 150).unwrap();
        assert!(matches!(
            b.verify(b"other", 150),
            Err(IdentityError::SignerMismatch { .. })
        ));
        assert_eq!(
            b.verify(b"spki", 99),
            Err(IdentityError::NotYetValid {
                not_before: 100,
                now: 99
            })
        );
        assert_eq!(
            b.verify(b"spki", 200),
            Err(IdentityError::Expired {
                not_after: 200,
                now: 200
            })
        );
        let mut stretched = b.clone();
        stretched.not_after = 10_000;
        assert!(matches!(
            stretched.verify(b"spki", 150),
            Err(IdentityError::SignerMismatch { .. })
        ));
        let mut earlier = b.clone();
        earlier.not_before = 0;
        assert!(matches!(
            earlier.verify(b"spki", 150),
            Err(IdentityError::SignerMismatch { .. })
        ));
        let mut claimed = b.clone();
        claimed.address = other.address();
        assert!(matches!(
            claimed.verify(b"spki", 150),
            Err(IdentityError::SignerMismatch { .. })
        ));
        let empty = Binding::sign(&eth, b"spki", 200, 200);
        assert!(matches!(
            empty.verify(b"spki", 200),
            Err(IdentityError::EmptyValidity { .. })
        ));
    }

    #[test]
    fn certificate_without_binding_is_rejected() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        assert_eq!(
            verify_certificate(cert.der(), unix_now()),
            Err(IdentityError::MissingBinding)
        );
        assert!(matches!(
            verify_certificate(b"not a certificate", unix_now()),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
