//! `source.geo.*` and `source.as.*` from MaxMind-format databases (GeoIP2/GeoLite2 City and ASN,
//! or any database with their layout), with the fields and names Elastic's `geoip` processor
//! gives them.
//!
//! A database file is read whole into memory and swapped for a new copy when the file changes
//! ([`GeoDb::reload_if_changed`]): lookups in flight keep the copy they started with, and a new
//! file that cannot be read leaves the old copy in use.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Value, json};

/// A database file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a MaxMind database: {error}")]
    Format { path: String, error: String },
}

/// Which of the two layouts a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    City,
    Asn,
}

/// What identifies one version of a file: modification time, length and inode (a file replaced by
/// a rename is a new inode even within the file system's time resolution).
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Ok((m.modified().ok(), m.len(), inode))
}

/// One database file and the copy of it in use.
pub struct GeoDb {
    kind: Kind,
    path: PathBuf,
    current: RwLock<Arc<maxminddb::Reader<Vec<u8>>>>,
    /// The stamp of the copy in use, or of the last version that failed (so it is reported once).
    seen: Mutex<Stamp>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Reads and checks a database file.
pub fn load(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, GeoError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| GeoError::Read {
        path: shown.clone(),
        error,
    })?;
    let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Format {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    // A torn copy (a file replaced without rename) can parse and still point outside itself.
    reader.verify().map_err(|e| GeoError::Format {
        path: shown,
        error: e.to_string(),
    })?;
    Ok(reader)
}

impl GeoDb {
    pub fn open(kind: Kind, path: &Path) -> Result<Self, GeoError> {
        let before = stamp(path).map_err(|error| GeoError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let reader = load(path)?;
        Ok(GeoDb {
            kind,
            path: path.to_owned(),
            current: RwLock::new(Arc::new(reader)),
            seen: Mutex::new(before),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file again if it changed since it was last looked at. `Ok(true)`: a new copy is
    /// in use. An error is returned once per changed file; the copy in use stays.
    pub fn reload_if_changed(&self) -> Result<bool, GeoError> {
        let now = match stamp(&self.path) {
            Ok(s) => s,
            // Between an unlink and a rename: look again next time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => {
                return Err(GeoError::Read {
                    path: self.path.display().to_string(),
                    error,
                });
            }
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        *seen = now;
        let reader = load(&self.path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reader);
        Ok(true)
    }

    fn reader(&self) -> Arc<maxminddb::Reader<Vec<u8>>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `source.geo.*` / `source.as.*` keys for `ip` (none when the database has no record).
    pub fn lookup(&self, ip: IpAddr, out: &mut Vec<(&'static str, Value)>) {
        let reader = self.reader();
        let Ok(found) = reader.lookup(ip) else {
            return;
        };
        match self.kind {
            Kind::City => {
                if let Ok(Some(c)) = found.decode::<CityRecord<'_>>() {
                    city_fields(&c, out);
                }
            }
            Kind::Asn => {
                if let Ok(Some(a)) = found.decode::<AsnRecord<'_>>() {
                    if let Some(n) = a.autonomous_system_number {
                        out.push(("source.as.number", Value::from(n)));
                    }
                    if let Some(o) = a.autonomous_system_organization {
                        out.push(("source.as.organization.name", Value::from(o)));
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Place<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

impl Place<'_> {
    fn name(&self) -> Option<&str> {
        self.names.as_ref()?.en
    }
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    city: Option<Place<'a>>,
    #[serde(borrow, default)]
    continent: Option<Place<'a>>,
    #[serde(borrow, default)]
    country: Option<Place<'a>>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(borrow, default)]
    subdivisions: Option<Vec<Place<'a>>>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

/// Elastic's default City properties: continent and country names (English), country ISO code,
/// region (the most specific subdivision: `<country>-<subdivision>` ISO code and name), city
/// name, and location as `{lat, lon}`.
fn city_fields(c: &CityRecord<'_>, out: &mut Vec<(&'static str, Value)>) {
    let mut put = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            out.push((k, Value::from(v)));
        }
    };
    let country = c.country.as_ref();
    put(
        "source.geo.continent_name",
        c.continent.as_ref().and_then(Place::name),
    );
    put("source.geo.country_name", country.and_then(Place::name));
    put(
        "source.geo.country_iso_code",
        country.and_then(|p| p.iso_code),
    );
    let region = c.subdivisions.as_ref().and_then(|s| s.last());
    if let (Some(country_iso), Some(region_iso)) = (
        country.and_then(|p| p.iso_code),
        region.and_then(|r| r.iso_code),
    ) {
        out.push((
            "source.geo.region_iso_code",
            Value::from(format!("{country_iso}-{region_iso}")),
        ));
    }
    let region_name = region.and_then(Place::name);
    let city_name = c.city.as_ref().and_then(Place::name);
    if let Some(v) = region_name {
        out.push(("source.geo.region_name", Value::from(v)));
    }
    if let Some(v) = city_name {
        out.push(("source.geo.city_name", Value::from(v)));
    }
    if let Some(Location {
        latitude: Some(lat),
        longitude: Some(lon),
    }) = c.location
    {
        out.push(("source.geo.location", json!({"lat": lat, "lon": lon})));
    }
}
