//! Database URLs as they may be shown: [`redact`] takes the passwords out
//! of one before it goes into a log line or an error message.

use url::form_urlencoded;

/// The names of the query parameters that carry a secret, as sqlx reads
/// them (percent-decoded): the password (`?password=`, which sqlx reads
/// as it reads the userinfo's) and the client key's (`sslpassword`, as
/// libpq names it).
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A database URL without its password, for logs and error messages: the
/// userinfo's (`postgres://user:***@host/db`) and any given as a query
/// parameter (`?password=***`, `&sslpassword=***`).
///
/// The rest of the text is kept byte for byte, not parsed and written
/// again: `dev::dev_key_file` names its file by a hash of this output, so
/// a URL without a query password must give what it always gave. The
/// ranges hidden are found in the text as written, without deciding where
/// its query begins (a password with an unencoded `?`, `@` or `#` would
/// move it), so a secret is hidden however the URL is read:
/// - the userinfo's password: after the first `:` of what lies between
///   `://` and the last `@`;
/// - the value of every parameter named in `SECRET_PARAMETERS` that
///   follows a `?` or a `&`, up to the next `&`.
///
/// Ranges that overlap are hidden as one.
pub fn redact(url: &str) -> String {
    let mut hidden: Vec<(usize, usize)> = userinfo_password(url)
        .into_iter()
        .chain(query_secrets(url))
        .collect();
    if hidden.is_empty() {
        return url.to_owned();
    }
    hidden.sort_unstable();
    let mut shown = String::with_capacity(url.len());
    let mut end_of_last = 0;
    let mut ranges = hidden.into_iter().peekable();
    while let Some((start, mut end)) = ranges.next() {
        while let Some(&(next_start, next_end)) = ranges.peek()
            && next_start <= end
        {
            end = end.max(next_end);
            ranges.next();
        }
        shown.push_str(&url[end_of_last..start]);
        shown.push_str("***");
        end_of_last = end;
    }
    shown.push_str(&url[end_of_last..]);
    shown
}

/// `text` (an error message) with every secret of `url` in it hidden: a
/// driver's error may quote the URL, or the password alone.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut shown = text.replace(url, &redact(url));
    let secrets = userinfo_password(url).into_iter().chain(query_secrets(url));
    for (start, end) in secrets {
        let secret = &url[start..end];
        if secret.len() >= 3 {
            shown = shown.replace(secret, "***");
        }
    }
    shown
}

/// The byte range of the userinfo's password: `secret` in
/// `postgres://user:secret@host`.
fn userinfo_password(url: &str) -> Option<(usize, usize)> {
    let after_scheme = url.find("://")? + 3;
    let at = url.rfind('@').filter(|&at| at >= after_scheme)?;
    let colon = url[after_scheme..at].find(':')?;
    Some((after_scheme + colon + 1, at))
}

/// The byte ranges of the values of the secret query parameters: `secret`
/// in `?password=secret&sslmode=require`. An empty value hides nothing.
fn query_secrets(url: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    url.match_indices(['?', '&']).filter_map(|(at, _)| {
        let start = at + 1;
        let end = url[start..].find('&').map_or(url.len(), |n| start + n);
        let parameter = &url[start..end];
        let equals = parameter.find('=')?;
        // Decoded as sqlx decodes the query (`Url::query_pairs`).
        let (name, _) = form_urlencoded::parse(parameter.as_bytes()).next()?;
        let value = (start + equals + 1, end);
        (SECRET_PARAMETERS.contains(&name.as_ref()) && value.0 < value.1).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_in_the_userinfo_is_hidden() {
        for (url, shown) in [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgresql://user:secret@host:5432/db",
                "postgresql://user:***@host:5432/db",
            ),
            // Special characters, percent-encoded as they should be, or not.
            (
                "postgres://user:s%40c%3Aret%2F@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgres://user:se@c:r/et?#@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgres://us%40er:secret@host/db?sslmode=require",
                "postgres://us%40er:***@host/db?sslmode=require",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_password_in_the_query_is_hidden() {
        for (url, shown) in [
            (
                "postgres://host/db?password=secret",
                "postgres://host/db?password=***",
            ),
            (
                "postgresql://user@host/db?sslmode=require&password=secret&application_name=busbar",
                "postgresql://user@host/db?sslmode=require&password=***&application_name=busbar",
            ),
            (
                "postgres://host/db?sslpassword=secret",
                "postgres://host/db?sslpassword=***",
            ),
            // The name as sqlx reads it: percent-decoded.
            (
                "postgres://host/db?pass%77ord=secret",
                "postgres://host/db?pass%77ord=***",
            ),
            // The whole value, whatever it holds.
            (
                "postgres://host/db?password=se%26cr:et@x#y",
                "postgres://host/db?password=***",
            ),
            // Both places.
            (
                "postgres://user:secret@host/db?password=secret",
                "postgres://user:***@host/db?password=***",
            ),
            // An unencoded `@` in the query's password is not taken for
            // the userinfo's end, nor a `?` in the userinfo's password for
            // the query's start: all of both is hidden.
            (
                "postgres://user:secret@host/db?sslmode=require&password=sec@ret",
                "postgres://user:***",
            ),
            (
                "postgres://user:se?cret@host/db?password=secret",
                "postgres://user:***@host/db?password=***",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://host/db?sslmode=require&application_name=busbar",
            "postgres://host/db?password",
            "postgres:///db?host=/var/run/postgresql",
            "sqlite://data/busbar.db",
            "sqlite://data/busbar.db?mode=rwc",
            "sqlite:data/busbar.db",
            "sqlite::memory:",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    /// `redact` as it was before it hid query passwords.
    fn redact_as_before(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let credentials = &url[scheme + 3..at];
                match credentials.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                    None => url.to_owned(),
                }
            }
            _ => url.to_owned(),
        }
    }

    /// `dev::dev_key_file` names its file by a hash of `redact`'s output:
    /// without a query password, it is what it was, quirks included.
    #[test]
    fn urls_without_a_query_password_are_shown_as_before() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://busbar:secret@localhost:5432/busbar",
            "postgresql://busbar:s%40cr%3At@db.internal/busbar?sslmode=require",
            "postgres://user:@host/db",
            "postgres://user:p@ss@host/db",
            "postgres://host/db?application_name=a:b@c",
            "postgres://host/db?passwords=x&my_password=y&password",
            "postgres:///db?host=/var/run/postgresql",
            "sqlite://data/busbar.db?mode=rwc",
            "sqlite::memory:",
            "",
        ] {
            assert_eq!(redact(url), redact_as_before(url), "{url}");
        }
    }
}
