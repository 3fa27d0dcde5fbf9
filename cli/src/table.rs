//! Aligned columns for `-o table` (and the list commands' text output).
//! Columns are separated by at least two spaces; the last is not padded.

fn width(cell: &str) -> usize {
    cell.chars().count()
}

fn line(widths: &[usize], cells: &[String]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        out.push_str(cell);
        if i + 1 < cells.len() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(width(cell))
                + 2;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out
}

/// A whole table, aligned to its widest cells.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Header and rows, one line each, with a trailing newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let mut out = line(&widths, &self.headers);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(&widths, row));
            out.push('\n');
        }
        out
    }
}

/// A table printed row by row as rows arrive (`--follow`): columns start
/// at given widths and grow when a wider cell comes.
pub struct StreamingTable {
    widths: Vec<usize>,
}

impl StreamingTable {
    pub fn new(widths: &[usize]) -> Self {
        StreamingTable {
            widths: widths.to_vec(),
        }
    }

    /// The header line (once, first).
    pub fn header(&mut self, headers: &[&str]) -> String {
        let cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        self.line(&cells)
    }

    pub fn line(&mut self, cells: &[String]) -> String {
        for (i, cell) in cells.iter().enumerate() {
            if let Some(w) = self.widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
        line(&self.widths, cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aligns_to_the_widest_cell() {
        let mut t = Table::new(&["ID", "POD", "IP"]);
        t.row(cells(&["1", "x/a", "10.0.0.1"]));
        t.row(cells(&["1234", "namespace/pod", "10.0.0.22"]));
        assert_eq!(
            t.render(),
            "ID    POD            IP\n\
             1     x/a            10.0.0.1\n\
             1234  namespace/pod  10.0.0.22\n"
        );
    }

    #[test]
    fn streaming_columns_grow() {
        let mut t = StreamingTable::new(&[3, 3]);
        assert_eq!(t.header(&["A", "B", "C"]), "A    B    C");
        assert_eq!(t.line(&cells(&["wide", "b", "c"])), "wide  b    c");
        assert_eq!(t.line(&cells(&["a", "b", "c"])), "a     b    c");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(cells(&["é", "x"]));
        assert_eq!(t.render(), "A  B\né  x\n");
    }
}
