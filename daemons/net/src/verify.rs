//! rustls verifiers that accept a peer by its Ethereum binding instead of a CA chain.
//!
//! One verifier is built per connection so that the outcome (the peer's address, or the typed
//! reason it was refused) can be handed back to the code that asked for the connection: rustls
//! and quinn only carry errors onwards as strings.

use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::identity::{IdentityError, VerifiedPeer, verify_certificate};

/// Where a verifier leaves its outcome for the connection it verified.
pub(crate) type Outcome = Arc<Mutex<Option<Result<VerifiedPeer, IdentityError>>>>;

#[derive(Debug)]
pub(crate) struct PeerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    expected: Option<Address>,
    outcome: Outcome,
}

impl PeerVerifier {
    pub(crate) fn new(
        algorithms: WebPkiSupportedAlgorithms,
        expected: Option<Address>,
    ) -> (Arc<Self>, Outcome) {
        let outcome = Outcome::default();
        (
            Arc::new(Self {
                algorithms,
                expected,
                outcome: outcome.clone(),
            }),
            outcome,
        )
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let result = if intermediates.is_empty() {
            verify_certificate(end_entity, now.as_secs())
        } else {
            Err(IdentityError::UnexpectedChain)
        }
        .and_then(|peer| match self.expected {
            Some(expected) if expected != peer.address => Err(IdentityError::UnexpectedPeer {
                expected,
                actual: peer.address,
            }),
            _ => Ok(peer),
        });
        let mapped = match &result {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "rejected peer certificate");
                // The specific variants give the peer the matching TLS alert.
                Err(rustls::Error::InvalidCertificate(match e {
                    IdentityError::Expired { .. } => CertificateError::Expired,
                    IdentityError::NotYetValid { .. } => CertificateError::NotValidYet,
                    other => CertificateError::Other(OtherError(Arc::new(other.clone()))),
                }))
            }
        };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        mapped
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The proof that the peer holds the certified TLS key: never skip it.
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is meaningless here: the peer is named by its Ethereum address.
        self.check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
