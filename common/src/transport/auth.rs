//! Shared-token authentication: `authorization: Bearer <token>` on every call.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

use super::TransportError;

const HEADER: &str = "authorization";

/// Server-side check, applied as a layer to every service (reflection and health included).
/// Holds the token's SHA-256 so comparisons take the same time whatever the presented length.
#[derive(Clone)]
pub struct AuthCheck {
    expected: Option<Arc<[u8; 32]>>,
}

impl AuthCheck {
    /// `None` accepts every call (loopback without a token, or `--insecure-no-auth`).
    pub fn new(token: Option<&str>) -> Self {
        Self { expected: token.map(|t| Arc::new(digest(t.as_bytes()))) }
    }

    pub fn check(&self, request: &Request<()>) -> Result<(), Status> {
        let Some(expected) = &self.expected else { return Ok(()) };
        let presented = request
            .metadata()
            .get(HEADER)
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
        let presented = presented
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("`authorization` metadata must be `Bearer <token>`"))?;
        if constant_time_eq(&digest(presented), expected) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong auth token"))
        }
    }
}

impl tonic::service::Interceptor for AuthCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// Client-side injection of the token into every call.
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl AuthInterceptor {
    pub fn new(token: Option<&str>) -> Result<Self, TransportError> {
        let header = match token {
            None => None,
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| TransportError::Config("auth token must be printable ASCII".into()))?,
            ),
        };
        Ok(Self { header })
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert(HEADER, h.clone());
        }
        Ok(request)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert(HEADER, h.parse().unwrap());
        }
        r
    }

    #[test]
    fn checks_bearer_token() {
        let check = AuthCheck::new(Some("s3cret"));
        assert!(check.check(&req(Some("Bearer s3cret"))).is_ok());
        for bad in [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("s3cret"), Some("Basic s3cret")] {
            let err = check.check(&req(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert!(AuthCheck::new(None).check(&req(None)).is_ok());
    }

    #[test]
    fn constant_time_eq_compares() {
        let a = digest(b"x");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
