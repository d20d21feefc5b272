//! `index.html`: the nine pictures, each with its one-line caption.

use super::canvas::Picture;

/// Escapes `&`, `<`, `>` and `"` for HTML text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// The page: a heading, a line about the model and data (`about`), then every picture
/// with its number and caption. Self-contained; the pictures sit beside it.
pub fn index_html(about: &str, pictures: &[Picture]) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>trainer report</title>\n<style>\n\
         body { font-family: sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em; color: #222; }\n\
         figure { margin: 2.5em 0; }\n\
         img { max-width: 100%; height: auto; border: 1px solid #ddd; }\n\
         figcaption { margin-top: .4em; }\n\
         </style>\n</head>\n<body>\n<h1>What the model learnt</h1>\n",
    );
    html.push_str(&format!("<p>{}</p>\n", escape(about)));
    for (n, p) in (1..).zip(pictures) {
        html.push_str(&format!(
            "<figure id=\"picture-{n}\">\n<img src=\"{file}\" width=\"{w}\" height=\"{h}\" alt=\"{alt}\">\n\
             <figcaption>{n}. {caption}</figcaption>\n</figure>\n",
            file = escape(p.file),
            w = p.width,
            h = p.height,
            alt = escape(&p.caption),
            caption = escape(&p.caption),
        ));
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
