//! A small document model for reports (headings, paragraphs, tables, images,
//! code) and its two renderings: Markdown and a self-contained HTML page.
//!
//! Reports build a [`Document`] once; each renderer escapes text for its own
//! format, so no rendering is ever parsed back.

/// A report: blocks in reading order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    pub blocks: Vec<Block>,
}

/// One block of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1 to 6.
    Heading {
        level: u8,
        text: Vec<Inline>,
    },
    Paragraph(Vec<Inline>),
    Table(Table),
    Image(Image),
    /// Preformatted text, shown as is.
    Code(String),
}

/// A run of text in a heading, paragraph or table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    Text(String),
    Bold(String),
}

/// Column alignment in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table column: its title and how its cells align.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub title: String,
    pub align: Align,
}

/// A table: columns, then rows of cells (one per column).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Vec<Inline>>>,
}

/// An image: a file to link, or SVG markup to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub alt: String,
    pub source: ImageSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A path or URL, linked (`![alt](path)`, `<img>`).
    Link(String),
    /// SVG markup, embedded in the page.
    Svg(String),
}

impl Inline {
    pub fn text(s: impl Into<String>) -> Inline {
        Inline::Text(s.into())
    }
}

impl Block {
    pub fn heading(level: u8, text: impl Into<String>) -> Block {
        Block::Heading {
            level,
            text: vec![Inline::text(text)],
        }
    }

    pub fn paragraph(text: impl Into<String>) -> Block {
        Block::Paragraph(vec![Inline::text(text)])
    }
}

impl Table {
    /// A table with these `(title, alignment)` columns and no rows.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|&(title, align)| Column {
                    title: title.to_string(),
                    align,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row of plain-text cells.
    pub fn push_text_row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows
            .push(cells.into_iter().map(|c| vec![Inline::Text(c)]).collect());
    }
}

impl Document {
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// Markdown: each block, then a blank line. Text is escaped so that it
    /// reads back as written (`\`, `*` and `` ` ``; in table cells also `|`);
    /// a line break inside a run shows as `⏎`.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading { level, text } => {
                    s += &"#".repeat(usize::from((*level).clamp(1, 6)));
                    s.push(' ');
                    s += &md_inlines(text, false);
                    s.push('\n');
                }
                Block::Paragraph(text) => {
                    s += &md_inlines(text, false);
                    s.push('\n');
                }
                Block::Table(t) => {
                    let titles: Vec<String> =
                        t.columns.iter().map(|c| md_text(&c.title, true)).collect();
                    s += &md_row(&titles);
                    s.push('|');
                    for c in &t.columns {
                        s += match c.align {
                            Align::Left => "---|",
                            Align::Right => "---:|",
                        };
                    }
                    s.push('\n');
                    for row in &t.rows {
                        let cells: Vec<String> = row.iter().map(|c| md_inlines(c, true)).collect();
                        s += &md_row(&cells);
                    }
                }
                Block::Image(img) => match &img.source {
                    ImageSource::Link(path) => {
                        s += &format!("![{}]({path})\n", md_text(&img.alt, false));
                    }
                    // Markdown passes HTML through
                    ImageSource::Svg(svg) => {
                        s += svg.trim_end();
                        s.push('\n');
                    }
                },
                Block::Code(code) => {
                    let longest = longest_run(code, '`');
                    let fence = "`".repeat(longest.max(2) + 1);
                    s += &fence;
                    s.push('\n');
                    s += code;
                    if !code.ends_with('\n') {
                        s.push('\n');
                    }
                    s += &fence;
                    s.push('\n');
                }
            }
            s.push('\n');
        }
        s
    }

    /// A self-contained HTML page titled `title`; text is escaped (`&`, `<`,
    /// `>`, `"`), SVG images are embedded as they are.
    pub fn to_html(&self, title: &str) -> String {
        let mut body = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading { level, text } => {
                    let l = (*level).clamp(1, 6);
                    body += &format!("<h{l}>{}</h{l}>\n", html_inlines(text));
                }
                Block::Paragraph(text) => {
                    body += &format!("<p>{}</p>\n", html_inlines(text));
                }
                Block::Table(t) => {
                    let class = |a: Align| match a {
                        Align::Left => "",
                        Align::Right => " class=\"r\"",
                    };
                    body += "<table>\n<tr>";
                    for c in &t.columns {
                        body += &format!("<th{}>{}</th>", class(c.align), html_escape(&c.title));
                    }
                    body += "</tr>\n";
                    for row in &t.rows {
                        body += "<tr>";
                        for (i, cell) in row.iter().enumerate() {
                            let align = t.columns.get(i).map_or(Align::Left, |c| c.align);
                            body += &format!("<td{}>{}</td>", class(align), html_inlines(cell));
                        }
                        body += "</tr>\n";
                    }
                    body += "</table>\n";
                }
                Block::Image(img) => match &img.source {
                    ImageSource::Link(path) => {
                        body += &format!(
                            "<p><img src=\"{}\" alt=\"{}\"></p>\n",
                            html_escape(path),
                            html_escape(&img.alt)
                        );
                    }
                    ImageSource::Svg(svg) => {
                        body += &format!("<div class=\"plot\">{svg}</div>\n");
                    }
                },
                Block::Code(code) => {
                    body += &format!("<pre><code>{}</code></pre>\n", html_escape(code));
                }
            }
        }
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n\
             <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.r{{text-align:right}}.plot svg{{max-width:100%;height:auto}}</style>\n\
             </head><body>\n{body}</body></html>\n",
            html_escape(title)
        )
    }
}

fn md_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn md_inlines(runs: &[Inline], in_cell: bool) -> String {
    runs.iter()
        .map(|r| match r {
            Inline::Text(t) => md_text(t, in_cell),
            Inline::Bold(t) => format!("**{}**", md_text(t, in_cell)),
        })
        .collect()
}

/// Text that Markdown shows as written (in a table cell, `|` too).
fn md_text(text: &str, in_cell: bool) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s += "\\\\",
            '*' => s += "\\*",
            '`' => s += "\\`",
            '|' if in_cell => s += "\\|",
            '\n' => s.push('⏎'),
            c => s.push(c),
        }
    }
    s
}

fn html_inlines(runs: &[Inline]) -> String {
    runs.iter()
        .map(|r| match r {
            Inline::Text(t) => html_escape(t),
            Inline::Bold(t) => format!("<b>{}</b>", html_escape(t)),
        })
        .collect()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in text.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        let mut table = Table::new(&[("name", Align::Left), ("n", Align::Right)]);
        table.rows.push(vec![
            vec![
                Inline::text("a|b "),
                Inline::Bold("[*]".to_string()),
                Inline::text("\\x`\n"),
            ],
            vec![Inline::text("3")],
        ]);
        table.push_text_row(["<&>".to_string(), "4".to_string()]);
        Document {
            blocks: vec![
                Block::heading(1, "Report <1>"),
                Block::Paragraph(vec![
                    Inline::Bold("set".to_string()),
                    Inline::text(", with |x| > 1 & y"),
                ]),
                Block::Table(table),
                Block::Image(Image {
                    alt: "plot".to_string(),
                    source: ImageSource::Link("d/p.svg".to_string()),
                }),
                Block::Image(Image {
                    alt: "inline".to_string(),
                    source: ImageSource::Svg("<svg><text>a &amp; b</text></svg>".to_string()),
                }),
                Block::Code("let x = `a`;\n```\n".to_string()),
            ],
        }
    }

    #[test]
    fn markdown_escapes_cells_and_keeps_paragraph_pipes() {
        let md = doc().to_markdown();
        assert_eq!(
            md,
            "# Report <1>\n\n\
             **set**, with |x| > 1 & y\n\n\
             | name | n |\n|---|---:|\n| a\\|b **[\\*]**\\\\x\\`⏎ | 3 |\n| <&> | 4 |\n\n\
             ![plot](d/p.svg)\n\n\
             <svg><text>a &amp; b</text></svg>\n\n\
             ````\nlet x = `a`;\n```\n````\n\n"
        );
    }

    #[test]
    fn html_escapes_text_and_embeds_svg() {
        let html = doc().to_html("a < b");
        assert!(html.starts_with("<!DOCTYPE html>\n"), "{html}");
        assert!(html.contains("<title>a &lt; b</title>"));
        assert!(html.contains("<h1>Report &lt;1&gt;</h1>\n"));
        assert!(html.contains("<p><b>set</b>, with |x| &gt; 1 &amp; y</p>\n"));
        assert!(html.contains(
            "<table>\n<tr><th>name</th><th class=\"r\">n</th></tr>\n\
             <tr><td>a|b <b>[*]</b>\\x`\n</td><td class=\"r\">3</td></tr>\n\
             <tr><td>&lt;&amp;&gt;</td><td class=\"r\">4</td></tr>\n</table>\n"
        ));
        assert!(html.contains("<p><img src=\"d/p.svg\" alt=\"plot\"></p>\n"));
        assert!(html.contains("<div class=\"plot\"><svg><text>a &amp; b</text></svg></div>\n"));
        assert!(html.contains("<pre><code>let x = `a`;\n```\n</code></pre>\n"));
        assert!(html.ends_with("</body></html>\n"));
        assert!(!html.contains("**"));
    }
}
