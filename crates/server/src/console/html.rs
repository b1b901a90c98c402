//! HTML building blocks: escaping, the page layout with its navigation and
//! sign-out (whole, or its start and end around a streamed body), the
//! sign-in page, forms that carry the CSRF token, pagers and times.
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
    ("flows", "/console/flows", "Flows"),
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
    let mut s = layout_start(page, session, flash);
    s.push_str(&page.body);
    s.push_str(LAYOUT_END);
    s
}

/// What closes a page that [`layout_start`] opened.
pub const LAYOUT_END: &str = "</main></body></html>\n";

/// A page up to its content: the head, the header with navigation and
/// sign-out, the `<h1>` and the flash message (a streamed page sends this
/// first, then its body as it is made, then [`LAYOUT_END`]).
pub fn layout_start(page: &Page, session: &Session, flash: Option<&str>) -> String {
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

/// A table's pager: "Page N of M (T in all)", links to the first,
/// previous, next and last pages, and a labelled "Go to page" form, all
/// plain links and a GET form (the keyboard reaches each in order). Page
/// numbers in URLs count from 1.
pub struct Pager<'a> {
    /// The page's path (`/console/groups`).
    pub path: &'a str,
    /// The query parameters every link keeps (filters, other tables'
    /// pages), empty ones too.
    pub keep: &'a [(&'a str, String)],
    /// The query parameter of this table's page number.
    pub param: &'a str,
    /// What the table lists, for the labels ("security groups").
    pub what: &'a str,
    /// The page shown, from 0.
    pub page: usize,
    /// Rows per page.
    pub per: usize,
    /// Rows in all.
    pub total: usize,
}

impl Pager<'_> {
    /// How many pages (at least 1).
    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.per.max(1)).max(1)
    }

    fn href(&self, page: usize) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.keep {
            query.append_pair(k, v);
        }
        query.append_pair(self.param, &(page + 1).to_string());
        esc(&format!("{}?{}", self.path, query.finish()))
    }

    /// The pager's HTML.
    pub fn html(&self) -> String {
        let pages = self.pages();
        let what = esc(self.what);
        let mut s = format!(
            "<nav class=\"pager\" aria-label=\"Pages of {what}\"><span id=\"{}-at\">Page {} of {pages} ({} in all)</span>",
            esc(self.param),
            self.page + 1,
            self.total
        );
        let mut link = |page: usize, label: &str, rel: &str| {
            let _ = write!(
                s,
                " <a href=\"{}\"{rel} aria-label=\"{label} page of {what}\">{label}</a>",
                self.href(page)
            );
        };
        if self.page > 0 {
            link(0, "First", "");
            link(self.page.min(pages) - 1, "Previous", " rel=\"prev\"");
        }
        if self.page + 1 < pages {
            link(self.page + 1, "Next", " rel=\"next\"");
            link(pages - 1, "Last", "");
        }
        if pages > 1 {
            let id = format!("{}-goto", esc(self.param));
            let _ = write!(
                s,
                " <form method=\"get\" action=\"{}\" class=\"inline\">",
                esc(self.path)
            );
            for (k, v) in self.keep {
                s.push_str(&hidden(k, v));
            }
            let _ = write!(
                s,
                "<label for=\"{id}\" class=\"short\">Go to page</label> <input id=\"{id}\" name=\"{}\" \
                 type=\"number\" min=\"1\" max=\"{pages}\" value=\"{}\" class=\"page-number\"> \
                 <button type=\"submit\" aria-label=\"Go to that page of {what}\">Go</button></form>",
                esc(self.param),
                self.page + 1
            );
        }
        s.push_str("</nav>");
        s
    }
}

/// A Unix time as `2026-12-03 19:26:40 UTC`.
pub fn unix_time(secs: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&fmt).ok())
        .map_or_else(|| format!("{secs} (Unix time)"), |t| format!("{t} UTC"))
}
