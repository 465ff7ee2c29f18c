//! A tiny built-in 5x7 bitmap font, so pictures can carry titles, axis numbers and labels without
//! any system font.
//!
//! It covers digits, upper- and lower-case ASCII letters, the space and
//! `. , : ; - _ + = / ( ) [ ] % # * ! ? ' < > |`. Any other character is drawn as a hollow box.
//! Each glyph is 5 pixels wide and 7 high above the baseline; `g j p q y , ;` add up to 2 rows of
//! descender below it, so a line of text is 9 pixels high. Characters advance by 6 pixels (one
//! blank column), and everything is multiplied by an integer `scale`.

use image::{Rgb, RgbImage};

/// Width of a glyph in font pixels.
pub const GLYPH_WIDTH: u32 = 5;
/// Height of a glyph above the baseline (the height of capitals and digits) in font pixels.
pub const GLYPH_HEIGHT: u32 = 7;
/// Rows below the baseline used by descenders, in font pixels.
pub const DESCENT: u32 = 2;
/// Height of a line of text (glyph plus descender rows) in font pixels.
pub const LINE_HEIGHT: u32 = GLYPH_HEIGHT + DESCENT;
/// Horizontal advance from one character to the next, in font pixels.
pub const ADVANCE: u32 = GLYPH_WIDTH + 1;

/// The 7 rows of a glyph, `#` for ink, space for background, each exactly 5 characters wide.
pub type Glyph = [&'static str; 7];

const UNKNOWN: Glyph = ["#####", "#   #", "#   #", "#   #", "#   #", "#   #", "#####"];

/// The rows of `c` below the baseline (blank for characters without a descender).
pub fn descender(c: char) -> [&'static str; 2] {
    match c {
        'g' | 'y' => ["    #", " ### "],
        'j' => ["#  # ", " ##  "],
        'p' => ["#    ", "#    "],
        'q' => ["    #", "    #"],
        ',' | ';' => ["  #  ", " #   "],
        _ => ["     "; 2],
    }
}

/// The bitmap of `c` above the baseline; characters without a glyph get a hollow box.
pub fn glyph(c: char) -> Glyph {
    match c {
        ' ' => ["     "; 7],
        '0' => [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
        '1' => ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        '2' => [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
        '3' => ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
        '4' => ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
        '5' => ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
        '6' => ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
        '7' => ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
        '8' => [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
        '9' => [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
        'A' => [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
        'B' => ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
        'C' => [" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "],
        'D' => ["###  ", "#  # ", "#   #", "#   #", "#   #", "#  # ", "###  "],
        'E' => ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
        'F' => ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "],
        'G' => [" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"],
        'H' => ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
        'I' => [" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        'J' => ["  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "],
        'K' => ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"],
        'L' => ["#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"],
        'M' => ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
        'N' => ["#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"],
        'O' => [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
        'P' => ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
        'Q' => [" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"],
        'R' => ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
        'S' => [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
        'T' => ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
        'U' => ["#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
        'V' => ["#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "],
        'W' => ["#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "],
        'X' => ["#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"],
        'Y' => ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "],
        'Z' => ["#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"],
        'a' => ["     ", "     ", " ### ", "    #", " ####", "#   #", " ####"],
        'b' => ["#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#### "],
        'c' => ["     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### "],
        'd' => ["    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####"],
        'e' => ["     ", "     ", " ### ", "#   #", "#####", "#    ", " ### "],
        'f' => ["  ## ", " #  #", " #   ", "###  ", " #   ", " #   ", " #   "],
        'g' => ["     ", "     ", " ####", "#   #", "#   #", "#   #", " ####"],
        'h' => ["#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #"],
        'i' => ["  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### "],
        'j' => ["   # ", "     ", "  ## ", "   # ", "   # ", "   # ", "   # "],
        'k' => ["#    ", "#    ", "#  # ", "# #  ", "##   ", "# #  ", "#  # "],
        'l' => [" ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        'm' => ["     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #"],
        'n' => ["     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #"],
        'o' => ["     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### "],
        'p' => ["     ", "     ", "#### ", "#   #", "#   #", "#   #", "#### "],
        'q' => ["     ", "     ", " ####", "#   #", "#   #", "#   #", " ####"],
        'r' => ["     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    "],
        's' => ["     ", "     ", " ### ", "#    ", " ### ", "    #", "#### "],
        't' => [" #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## "],
        'u' => ["     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #"],
        'v' => ["     ", "     ", "#   #", "#   #", "#   #", " # # ", "  #  "],
        'w' => ["     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # "],
        'x' => ["     ", "     ", "#   #", " # # ", "  #  ", " # # ", "#   #"],
        'y' => ["     ", "     ", "#   #", "#   #", "#   #", "#   #", " ####"],
        'z' => ["     ", "     ", "#####", "   # ", "  #  ", " #   ", "#####"],
        '.' => ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
        ',' => ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
        ':' => ["     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "],
        ';' => ["     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "],
        '-' => ["     ", "     ", "     ", "#####", "     ", "     ", "     "],
        '_' => ["     ", "     ", "     ", "     ", "     ", "     ", "#####"],
        '+' => ["     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "],
        '=' => ["     ", "     ", "#####", "     ", "#####", "     ", "     "],
        '/' => ["     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "],
        '(' => ["   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "],
        ')' => [" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "],
        '[' => [" ### ", " #   ", " #   ", " #   ", " #   ", " #   ", " ### "],
        ']' => [" ### ", "   # ", "   # ", "   # ", "   # ", "   # ", " ### "],
        '%' => ["##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"],
        '#' => [" # # ", " # # ", "#####", " # # ", "#####", " # # ", " # # "],
        '*' => ["     ", "  #  ", "# # #", " ### ", "# # #", "  #  ", "     "],
        '!' => ["  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "     ", "  #  "],
        '?' => [" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "],
        '\'' => ["  #  ", "  #  ", " #   ", "     ", "     ", "     ", "     "],
        '<' => ["   # ", "  #  ", " #   ", "#    ", " #   ", "  #  ", "   # "],
        '>' => [" #   ", "  #  ", "   # ", "    #", "   # ", "  #  ", " #   "],
        '|' => ["  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
        _ => UNKNOWN,
    }
}

/// Width in image pixels of `text` drawn at `scale` (no trailing blank column).
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale
    }
}

/// Height in image pixels of one line of text at `scale`, descenders included.
pub fn text_height(scale: u32) -> u32 {
    LINE_HEIGHT * scale
}

/// Height in image pixels of capitals and digits at `scale` (what to centre numbers on).
pub fn cap_height(scale: u32) -> u32 {
    GLYPH_HEIGHT * scale
}

/// Draws `text` with its top-left corner at `(x, y)`; pixels falling outside the image are
/// skipped, so text may be partly off the picture.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: [u8; 3], scale: u32) {
    let scale = scale.max(1) as i64;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for (k, c) in text.chars().enumerate() {
        let gx = x + k as i64 * ADVANCE as i64 * scale;
        for (row, bits) in glyph(c).iter().chain(descender(c).iter()).enumerate() {
            for (col, b) in bits.bytes().enumerate() {
                if b != b'#' {
                    continue;
                }
                let px = gx + col as i64 * scale;
                let py = y + row as i64 * scale;
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (xx, yy) = (px + dx, py + dy);
                        if (0..w).contains(&xx) && (0..h).contains(&yy) {
                            img.put_pixel(xx as u32, yy as u32, Rgb(colour));
                        }
                    }
                }
            }
        }
    }
}

/// Draws `text` horizontally centred on `cx`, with its top at `y`.
pub fn draw_text_centred(img: &mut RgbImage, cx: i64, y: i64, text: &str, colour: [u8; 3], scale: u32) {
    let w = text_width(text, scale.max(1)) as i64;
    draw_text(img, cx - w / 2, y, text, colour, scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_five_by_seven() {
        let chars = ('0'..='9').chain('A'..='Z').chain('a'..='z').chain(" .,:;-_+=/()[]%#*!?'<>|".chars());
        for c in chars {
            let g = glyph(c);
            for row in g.iter().chain(descender(c).iter()) {
                assert_eq!(row.len(), 5, "glyph {c:?} row {row:?}");
                assert!(row.bytes().all(|b| b == b'#' || b == b' '), "glyph {c:?}");
            }
            if c != ' ' {
                assert_ne!(g, UNKNOWN, "glyph {c:?} missing");
                assert!(g.iter().any(|r| r.contains('#')), "glyph {c:?} blank");
            }
        }
        assert_eq!(glyph('\u{e9}'), UNKNOWN);
    }

    #[test]
    fn draws_within_bounds_and_measures() {
        assert_eq!(text_width("", 2), 0);
        assert_eq!(text_width("ab", 1), 11);
        assert_eq!(text_width("ab", 3), 33);
        let mut img = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        draw_text(&mut img, 1, 1, "1", [0, 0, 0], 1);
        // The stem of "1" is column 2 of the glyph, rows 0..7.
        for row in 1..8 {
            assert_eq!(img.get_pixel(3, row).0, [0, 0, 0]);
        }
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        // Text running off the edges does not panic.
        draw_text(&mut img, -7, -3, "Wide text", [1, 2, 3], 2);
        draw_text(&mut img, 18, 8, "8", [1, 2, 3], 4);
    }
}
