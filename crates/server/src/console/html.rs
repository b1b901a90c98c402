//! HTML building blocks: escaping, the page layout with its navigation and
//! sign-out, the sign-in page, forms that carry the CSRF token, and pagers.
//! Every text that comes from a request or the store goes through [`esc`].

use super::session::Session;
use std::fmt::Write;

/// A page's title and main content (already HTML).
pub struct Page {
    /// The `<title>` and `<h1>`.
    pub title: String,
    /// The navigation entry to mark as current.
    pub nav: &'static str,
    /// The content.
    pub body: String,
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const NAV: &[(&str, &str, &str)] = &[
    ("groups", "/console/groups", "Security groups"),
    ("templates", "/console/templates", "Templates"),
    ("instances", "/console/instances", "Instances"),
    ("findings", "/console/findings", "Findings"),
    ("reach", "/console/reach", "Reachability"),
];

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} - Palisade console</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\"></head>",
        esc(title)
    )
}

/// A whole page: header with navigation and sign-out, the flash message,
/// the content.
pub fn layout(page: &Page, session: &Session, flash: Option<&str>) -> String {
    let mut s = head(&page.title);
    s.push_str("<body><a class=\"skip\" href=\"#main\">Skip to content</a><header><nav aria-label=\"Main\"><span class=\"brand\">Palisade</span><ul>");
    for (key, href, label) in NAV {
        let current = if *key == page.nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(s, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    let _ = write!(
        s,
        "</ul></nav><div class=\"who\">Account <strong id=\"account\">{}</strong>\
         <form method=\"post\" action=\"/console/signout\" class=\"inline\">{}\
         <button type=\"submit\" id=\"signout\">Sign out</button></form></div></header>\
         <main id=\"main\"><h1>{}</h1>",
        esc(&session.account_name),
        csrf(session),
        esc(&page.title)
    );
    if let Some(f) = flash {
        let _ = write!(
            s,
            "<p class=\"flash\" role=\"status\" id=\"flash\">{}</p>",
            esc(f)
        );
    }
    s.push_str(&page.body);
    s.push_str("</main></body></html>\n");
    s
}

/// The hidden CSRF field of a session's forms.
pub fn csrf(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// A hidden field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// A page outside a session (refusals).
pub fn bare(title: &str, text: &str) -> String {
    format!(
        "{}<body><main id=\"main\"><h1>{}</h1><p class=\"error\" role=\"alert\" id=\"error\">{}</p>\
         <p><a href=\"/console/signin\">Sign in</a></p></main></body></html>\n",
        head(title),
        esc(title),
        esc(text)
    )
}

/// The sign-in page; `token` is the form's token (also set as a cookie).
pub fn signin_page(token: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    format!(
        "{}<body><main id=\"main\" class=\"signin\"><h1>Palisade console</h1>{error}\
         <form method=\"post\" action=\"/console/signin\">{}\
         <p><label for=\"secret_id\">SecretId</label>\
         <input id=\"secret_id\" name=\"secret_id\" autocomplete=\"username\" required autofocus></p>\
         <p><label for=\"secret_key\">SecretKey</label>\
         <input id=\"secret_key\" name=\"secret_key\" type=\"password\" autocomplete=\"current-password\" required></p>\
         <p><button type=\"submit\" id=\"signin\">Sign in</button></p></form>\
         <p class=\"hint\">The credentials of an account, as <code>palisade account create</code> \
         printed them (the first account's are in <code>admin-credentials.json</code>).</p>\
         </main></body></html>\n",
        head("Sign in"),
        hidden("csrf", token)
    )
}

/// An error box.
pub fn error(text: &str) -> String {
    format!(
        "<div class=\"error\" role=\"alert\" id=\"error\">{}</div>",
        esc(text)
    )
}

/// "Page N of M" with previous/next links to `base` plus `&page=`.
pub fn pager(base: &str, page: usize, per: usize, total: usize) -> String {
    let pages = total.div_ceil(per).max(1);
    let mut s = format!(
        "<nav class=\"pager\" aria-label=\"Pages\"><span>Page {} of {pages} ({total} in all)</span>",
        page + 1
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    if page > 0 {
        let _ = write!(
            s,
            " <a href=\"{}{sep}page={}\" rel=\"prev\">Previous</a>",
            esc(base),
            page - 1
        );
    }
    if page + 1 < pages {
        let _ = write!(
            s,
            " <a href=\"{}{sep}page={}\" rel=\"next\">Next</a>",
            esc(base),
            page + 1
        );
    }
    s.push_str("</nav>");
    s
}
