//! Terminal drawings: a 28×28 digit in shade characters and the class probabilities as bars.

/// Shades from black to white, Unicode and plain ASCII.
const SHADES: [[&str; 5]; 2] = [[" ", "░", "▒", "▓", "█"], [" ", ".", "+", "#", "@"]];
/// Width of a 100 % bar, in characters.
pub const BAR_WIDTH: usize = 40;
/// Partial cells of a Unicode bar, in eighths.
const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// Draws `pixels` (0 = black) in a frame, two characters per pixel so it keeps its aspect.
pub fn digit<const W: usize>(pixels: &[[u8; W]], ascii: bool) -> String {
    let shades = &SHADES[usize::from(ascii)];
    let (h, v, corners) = if ascii {
        ("-", "|", ["+", "+", "+", "+"])
    } else {
        ("─", "│", ["┌", "┐", "└", "┘"])
    };
    let rule = h.repeat(2 * W);
    let mut out = format!("{}{rule}{}\n", corners[0], corners[1]);
    for row in pixels {
        out.push_str(v);
        for &p in row {
            let shade = shades[usize::from(p) * shades.len() / 256];
            out.push_str(shade);
            out.push_str(shade);
        }
        out.push_str(v);
        out.push('\n');
    }
    out.push_str(&format!("{}{rule}{}\n", corners[2], corners[3]));
    out
}

/// One line per class: the class, a bar as long as its probability, the percentage, and
/// markers for the predicted class and (if known) the label.
pub fn bars(probabilities: &[f32], predicted: usize, label: Option<usize>, ascii: bool) -> String {
    let mut out = String::new();
    for (class, &p) in probabilities.iter().enumerate() {
        let bar = bar(p, ascii);
        let pad = BAR_WIDTH - bar.chars().count();
        let mut marks = Vec::new();
        if class == predicted {
            marks.push("predicted");
        }
        if Some(class) == label {
            marks.push("label");
        }
        let arrow = if ascii { "<-" } else { "◀" };
        let marks = if marks.is_empty() {
            String::new()
        } else {
            format!("  {arrow} {}", marks.join(", "))
        };
        let edge = if ascii { "|" } else { "│" };
        out.push_str(&format!(
            "{class} {edge}{bar}{:pad$}{edge} {:6.2}%{marks}\n",
            "",
            100.0 * p
        ));
    }
    out
}

/// A bar of `p · BAR_WIDTH` cells (eighths of a cell in Unicode, whole `#` in ASCII).
fn bar(p: f32, ascii: bool) -> String {
    let p = if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if ascii {
        return "#".repeat((p * BAR_WIDTH as f32).round() as usize);
    }
    let eighths = (p * (8 * BAR_WIDTH) as f32).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    s.push_str(EIGHTHS[eighths % 8]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_uses_two_shade_characters_per_pixel_inside_a_frame() {
        let pixels = [[0u8, 255, 128], [64, 0, 200]];
        assert_eq!(
            digit(&pixels, true),
            "+------+\n|  @@++|\n|..  ##|\n+------+\n"
        );
        let art = digit(&pixels, false);
        assert_eq!(art.lines().nth(1), Some("│  ██▒▒│"));
        assert_eq!(art.lines().count(), 4);
    }

    #[test]
    fn bars_are_proportional_and_marked() {
        let mut p = [0.0f32; 10];
        p[3] = 0.75;
        p[5] = 0.25;
        let text = bars(&p, 3, Some(5), true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(
            lines[3],
            format!(
                "3 |{}{}|  75.00%  <- predicted",
                "#".repeat(30),
                " ".repeat(10)
            )
        );
        assert!(lines[5].ends_with(" 25.00%  <- label"), "{}", lines[5]);
        assert!(lines[0].starts_with(&format!("0 |{}|   0.00%", " ".repeat(40))));
        // Unicode bars resolve eighths of a cell: 1/320 is one eighth
        assert_eq!(bar(1.0 / 320.0, false), "▏");
        assert_eq!(bar(1.0, false), "█".repeat(40));
        assert_eq!(bar(f32::NAN, false), "");
        let both = bars(&p, 3, Some(3), false);
        assert!(both
            .lines()
            .nth(3)
            .is_some_and(|l| l.ends_with("◀ predicted, label")));
    }
}
