//! The PKI's non-certificate secrets: the kubelets' bootstrap token (a
//! `bootstrap.kubernetes.io/token` Secret) and the key kube-apiserver
//! encrypts Secrets with in etcd (an `EncryptionConfiguration`). Both are
//! written as JSON, which is YAML and what the API and kube-apiserver read.

use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{PkiError, BOOTSTRAP_GROUP};
use crate::shared::secrets::Secret;

/// aescbc takes a 32-byte key (AES-256).
pub const ENCRYPTION_KEY_BYTES: usize = 32;

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The kernel's CSPRNG (nodeboot runs on Linux only).
fn random(n: usize) -> Result<Vec<u8>, PkiError> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| PkiError::Random(format!("/dev/urandom: {e}")))?;
    Ok(bytes)
}

/// `n` characters of `[a-z0-9]`, uniformly (bytes >= 252 are redrawn).
fn token_chars(n: usize) -> Result<String, PkiError> {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random(n * 2)? {
            if b < 252 && out.len() < n {
                out.push(TOKEN_ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// A bootstrap token as the API documents it: `[a-z0-9]{6}.[a-z0-9]{16}`;
/// the id is public (it names the Secret), the secret part authenticates.
pub struct BootstrapToken {
    pub id: String,
    secret: Secret,
    pub expiration: OffsetDateTime,
}

impl BootstrapToken {
    pub fn generate(expiration: OffsetDateTime) -> Result<BootstrapToken, PkiError> {
        Ok(BootstrapToken {
            id: token_chars(6)?,
            secret: Secret::new(token_chars(16)?.into_bytes()),
            expiration,
        })
    }

    /// The user the API authenticates the token as.
    pub fn user(&self) -> String {
        format!("system:bootstrap:{}", self.id)
    }

    /// `<id>.<secret>`, what the kubelet sends as its bearer token.
    pub fn bearer(&self) -> Secret {
        let mut text = format!("{}.", self.id).into_bytes();
        text.extend_from_slice(self.secret.expose());
        Secret::new(text)
    }

    /// The Secret in kube-system that makes the token valid (kubeadm's form:
    /// authentication and signing usages, nodeboot's extra group, an
    /// expiration after which the token cleaner deletes it).
    pub fn secret_manifest(&self) -> String {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{}", self.id), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "description": "nodeboot: kubelet TLS bootstrap (nodeboot pki)",
                "token-id": self.id,
                "token-secret": String::from_utf8_lossy(self.secret.expose()),
                "expiration": rfc3339(self.expiration),
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": BOOTSTRAP_GROUP,
            },
        });
        serde_json::to_string_pretty(&value).expect("secret serialises") + "\n"
    }

    pub fn read(path: &Path) -> Result<BootstrapToken, PkiError> {
        let (value, bad) = read_json(path, "the bootstrap-token Secret")?;
        let field = |name: &str| {
            value["stringData"][name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("stringData.{name} missing")))
        };
        let id = field("token-id")?;
        let secret = field("token-secret")?;
        let valid = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b));
        if !valid(&id, 6) || !valid(&secret, 16) {
            return Err(bad("token-id must be [a-z0-9]{6} and token-secret [a-z0-9]{16}"));
        }
        let expiration = parse_rfc3339(&field("expiration")?)
            .ok_or_else(|| bad("stringData.expiration is not YYYY-MM-DDTHH:MM:SSZ"))?;
        Ok(BootstrapToken {
            id,
            secret: Secret::new(secret.into_bytes()),
            expiration,
        })
    }
}

/// kube-apiserver's `--encryption-provider-config`: Secrets written with the
/// first aescbc key, read with any; `identity` last so what was stored
/// before encryption was turned on stays readable.
pub struct EncryptionConfig {
    /// `(name, key)`, the writing key first.
    keys: Vec<(String, Secret)>,
}

impl EncryptionConfig {
    pub fn generate(now: OffsetDateTime) -> Result<EncryptionConfig, PkiError> {
        Ok(EncryptionConfig {
            keys: vec![Self::new_key(now)?],
        })
    }

    fn new_key(now: OffsetDateTime) -> Result<(String, Secret), PkiError> {
        Ok((
            super::rotation::new_key_name(&[], now.unix_timestamp()),
            Secret::new(random(ENCRYPTION_KEY_BYTES)?),
        ))
    }

    /// The next step of the staged rotation (`rotation`): a new key added
    /// second, then made first, then (only once every Secret was rewritten)
    /// the old one dropped. `path` names the file in a refusal.
    #[cfg(test)]
    pub fn rotated(self, now: OffsetDateTime, secrets_rewritten: bool) -> Result<EncryptionConfig, PkiError> {
        self.rotated_at(now, secrets_rewritten, Path::new(""))
    }

    pub fn rotated_at(
        mut self,
        now: OffsetDateTime,
        secrets_rewritten: bool,
        path: &Path,
    ) -> Result<EncryptionConfig, PkiError> {
        let names: Vec<String> = self.keys.iter().map(|(n, _)| n.clone()).collect();
        let new_name = super::rotation::new_key_name(&names, now.unix_timestamp());
        let order =
            super::rotation::advance(&names, &new_name, secrets_rewritten).map_err(|refusal| PkiError::Refused {
                path: path.into(),
                detail: refusal.to_string(),
            })?;
        if order.contains(&new_name) {
            self.keys.push((new_name, Secret::new(random(ENCRYPTION_KEY_BYTES)?)));
        }
        let mut keys = Vec::with_capacity(order.len());
        for name in order {
            let at = self
                .keys
                .iter()
                .position(|(n, _)| *n == name)
                .expect("advance names only known keys");
            keys.push(self.keys.swap_remove(at));
        }
        Ok(EncryptionConfig { keys })
    }

    #[cfg(test)]
    fn key_names(&self) -> Vec<&str> {
        self.keys.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Where the key rotation stands (`rotation::step`).
    pub fn step(&self) -> Result<super::rotation::Step, super::rotation::Refusal> {
        let names: Vec<String> = self.keys.iter().map(|(n, _)| n.clone()).collect();
        super::rotation::step(&names)
    }

    pub fn render(&self) -> String {
        let b64 = |s: &Secret| base64::engine::general_purpose::STANDARD.encode(s.expose());
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(name, key)| json!({"name": name, "secret": b64(key)}))
            .collect();
        let value = json!({
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"], "providers": [{"aescbc": {"keys": keys}}, {"identity": {}}]}],
        });
        serde_json::to_string_pretty(&value).expect("encryption config serialises") + "\n"
    }

    pub fn read(path: &Path) -> Result<EncryptionConfig, PkiError> {
        let (value, bad) = read_json(path, "the EncryptionConfiguration")?;
        let keys = value["resources"][0]["providers"][0]["aescbc"]["keys"]
            .as_array()
            .ok_or_else(|| bad("no aescbc keys"))?;
        let mut out = Vec::new();
        for key in keys {
            let name = key["name"].as_str().ok_or_else(|| bad("a key without a name"))?;
            let secret = key["secret"]
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            match secret {
                Some(bytes) if bytes.len() == ENCRYPTION_KEY_BYTES => out.push((name.to_string(), Secret::new(bytes))),
                _ => return Err(bad(&format!("key {name}: not {ENCRYPTION_KEY_BYTES} bytes of base64"))),
            }
        }
        if out.is_empty() {
            return Err(bad("no aescbc keys"));
        }
        Ok(EncryptionConfig { keys: out })
    }
}

/// Where the Secrets encryption key's rotation stands in the tree's
/// `EncryptionConfiguration` at `path` (`None` before `pki` made one).
pub fn encryption_step(path: &Path) -> Result<Option<super::rotation::Step>, PkiError> {
    if !path.exists() {
        return Ok(None);
    }
    EncryptionConfig::read(path)?
        .step()
        .map(Some)
        .map_err(|refusal| PkiError::Bad {
            path: path.into(),
            detail: refusal.to_string(),
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), the form the API's timestamps take.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(num(5..7)? as u8).ok()?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(8..10)? as u8).ok()?;
    let clock = time::Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

/// A JSON file nodeboot wrote (`what` names it in the error), and the error
/// maker for what is wrong inside it.
fn read_json<'a>(path: &'a Path, what: &str) -> Result<(Value, impl Fn(&str) -> PkiError + 'a), PkiError> {
    let bad = move |detail: &str| PkiError::Bad {
        path: path.into(),
        detail: detail.into(),
    };
    let text = std::fs::read(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })?;
    let value = serde_json::from_slice(&text).map_err(|_| bad(&format!("not {what} nodeboot writes (JSON)")))?;
    Ok((value, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_form_and_differ() {
        let end = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (a, b) = (
            BootstrapToken::generate(end).unwrap(),
            BootstrapToken::generate(end).unwrap(),
        );
        assert_ne!(a.bearer().expose(), b.bearer().expose());
        let bearer = String::from_utf8(a.bearer().expose().to_vec()).unwrap();
        let (id, secret) = bearer.split_once('.').unwrap();
        assert!(
            id.len() == 6 && secret.len() == 16 && bearer.bytes().all(|c| c == b'.' || TOKEN_ALPHABET.contains(&c)),
            "{id}"
        );
        assert_eq!(a.user(), format!("system:bootstrap:{id}"));
    }

    #[test]
    fn a_token_reads_back_from_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let end = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token = BootstrapToken::generate(end).unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, token.secret_manifest()).unwrap();
        let back = BootstrapToken::read(&path).unwrap();
        assert_eq!(
            (back.id.as_str(), back.bearer().expose(), back.expiration),
            (token.id.as_str(), token.bearer().expose(), end)
        );
        std::fs::write(&path, token.secret_manifest().replace(&token.id, "UPPER!")).unwrap();
        assert!(BootstrapToken::read(&path).is_err());
    }

    #[test]
    fn rfc3339_round_trips_and_refuses_other_forms() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(rfc3339(t), "2027-01-15T08:00:00Z");
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00Z"), Some(t));
        for bad in [
            "2027-01-15 08:00:00Z",
            "2027-13-15T08:00:00Z",
            "2027-01-15T08:00:00+01:00",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_adds_the_new_key_second_then_first_then_drops_the_old_one() {
        let t = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yaml");
        let round_trip = |config: &EncryptionConfig| {
            std::fs::write(&path, config.render()).unwrap();
            EncryptionConfig::read(&path).unwrap()
        };
        let config = round_trip(&EncryptionConfig::generate(t(100)).unwrap());
        let first_key = config.keys[0].1.expose().to_vec();
        let config = round_trip(&config.rotated(t(200), false).unwrap());
        assert_eq!(config.key_names(), ["key-100", "key-200"], "step 1: the new key second");
        let new_key = config.keys[1].1.expose().to_vec();
        let config = round_trip(&config.rotated(t(300), false).unwrap());
        assert_eq!(config.key_names(), ["key-200", "key-100"], "step 2: the new key first");
        assert_eq!(
            (config.keys[0].1.expose(), config.keys[1].1.expose()),
            (&new_key[..], &first_key[..]),
            "the keys keep their bytes"
        );
        assert!(matches!(
            config.step(),
            Ok(super::super::rotation::Step::Promoted { .. })
        ));
        let Err(PkiError::Refused { detail, .. }) = EncryptionConfig::read(&path).unwrap().rotated(t(400), false)
        else {
            panic!("step 3 without --secrets-rewritten");
        };
        assert!(detail.contains("rewrite every Secret"), "{detail}");
        let config = round_trip(&config.rotated(t(400), true).unwrap());
        assert_eq!(config.key_names(), ["key-200"], "step 3: the old key dropped");
        let rendered = config.render();
        assert!(rendered.contains("\"identity\""), "identity stays last: {rendered}");
    }
}
