//! `Accept` header values as RFC 9110 §12 reads them: media ranges, their specificity for a
//! media type and their q-values. Values that are no media range are ignored, never fatal.

/// How the client's `Accept` values match `media_type`: the specificity (2 named, 1
/// `type/*`, 0 `*/*`) and q-value (thousandths) of the most specific range that matches, as
/// [`ManifestFormat::negotiate`] weighs them; `None` when no range matches.
pub(crate) fn acceptance<'a>(accepted: impl IntoIterator<Item = &'a str>, media_type: &str) -> Option<(u8, u16)> {
    let mut best: Option<Match> = None;
    for range in accepted.into_iter().filter_map(MediaRange::parse) {
        let Some(specificity) = range.specificity_for(media_type) else { continue };
        if best.is_none_or(|b| (specificity, range.q) > (b.specificity, b.q)) {
            best = Some(Match { specificity, q: range.q });
        }
    }
    best.map(|m| (m.specificity, m.q))
}

/// How a media range matched a format: its specificity (2 exact, 1 `type/*`, 0 `*/*`) and
/// q-value in thousandths.
#[derive(Clone, Copy, Debug)]
pub(super) struct Match {
    pub(super) specificity: u8,
    pub(super) q: u16,
}

/// One element of an `Accept` header: `type/subtype` (either may be `*`, the type only if
/// the subtype is too), its q-value in thousandths (1000 without `q`). Other parameters are
/// ignored.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MediaRange<'a> {
    ty: &'a str,
    subtype: &'a str,
    pub(super) q: u16,
}

impl<'a> MediaRange<'a> {
    /// `None` for anything that is no media range.
    pub(super) fn parse(value: &'a str) -> Option<Self> {
        let mut params = value.split(';');
        let (ty, subtype) = params.next()?.trim().split_once('/')?;
        let token =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token(ty) || !token(subtype) || (ty == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1000;
        for param in params {
            let (name, value) = param.split_once('=')?;
            if name.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim())?;
            }
        }
        Some(MediaRange { ty, subtype, q })
    }

    /// How specifically this range matches `media_type`, if it does (case-insensitively).
    pub(super) fn specificity_for(&self, media_type: &str) -> Option<u8> {
        let (ty, subtype) = media_type.split_once('/')?;
        match (self.ty, self.subtype) {
            ("*", _) => Some(0),
            (t, "*") if t.eq_ignore_ascii_case(ty) => Some(1),
            (t, s) if t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(subtype) => Some(2),
            _ => None,
        }
    }
}

/// RFC 9110 §12.4.2: `0`, `0.` and up to three digits, `1`, `1.` and up to three zeros; in
/// thousandths.
pub(super) fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}
