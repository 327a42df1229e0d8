//! Microsoft's clouds: the Management Activity API host of each (`resource`) and where its tenants
//! sign in (`authority`).

use crate::core::settings::Section;

/// Documented defaults (product documentation and DESIGN §4).
pub const DEFAULT_RESOURCE: &str = "https://manage.office.com";
const CLOUDS: &str = "Enterprise https://manage.office.com, GCC https://manage-gcc.office.com, \
GCC High https://manage.office365.us, DoD https://manage.protection.apps.mil, \
China https://manage.chinacloudapi.cn";

/// The login authority for a normalised resource origin. Microsoft's clouds log in at their own hosts;
/// anything else is taken to be the emulator (or a test double), which serves the token endpoint on
/// the same address as the API — so the authority is the resource itself.
pub fn derive_authority(resource: &str) -> String {
    match host_of(resource) {
        "manage.office.com" | "manage-gcc.office.com" => "https://login.microsoftonline.com".into(),
        "manage.office365.us" | "manage.protection.apps.mil" => {
            "https://login.microsoftonline.us".into()
        }
        "manage.chinacloudapi.cn" => "https://login.chinacloudapi.cn".into(),
        _ => resource.to_owned(),
    }
}

/// Whether a resource origin is one of Microsoft's clouds (as opposed to an emulator).
pub fn is_microsoft_cloud(resource: &str) -> bool {
    derive_authority(resource) != resource
}

/// The host of a normalised origin (`https://host[:port]`), without the port.
fn host_of(origin: &str) -> &str {
    let rest = origin.strip_prefix("https://").unwrap_or(origin);
    let host_port = rest.split('/').next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty() =>
        {
            host
        }
        _ => host_port,
    }
}

/// `resource`: an HTTPS origin, normalised to `https://host[:port]`.
pub fn check_resource(s: &mut Section, value: &str) -> String {
    let fix =
        format!("use the scheme and host only: {CLOUDS}, or the emulator's https://host:port");
    s.https_origin("resource", value, &fix).unwrap_or_default()
}

/// `authority`: the login host, normalised like `resource`.
pub fn check_authority(s: &mut Section, value: &str) -> String {
    let fix = "use the login host only, e.g. https://login.microsoftonline.com (GCC High / DoD: https://login.microsoftonline.us), or remove authority to derive it from resource";
    s.https_origin("authority", value, fix).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            derive_authority("https://manage.office.com"),
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            derive_authority("https://manage.protection.apps.mil"),
            "https://login.microsoftonline.us"
        );
        assert_eq!(
            derive_authority("https://127.0.0.1:8444"),
            "https://127.0.0.1:8444"
        );
        assert_eq!(derive_authority("https://[::1]:8444"), "https://[::1]:8444");
        assert_eq!(
            derive_authority("https://manage.office365.us:443"),
            "https://login.microsoftonline.us"
        );
        assert!(!is_microsoft_cloud(
            "https://manage.office.com.evil.example"
        ));
    }
}
