//! The outline of a [`TissueMask`] as polygons, for viewers that draw regions (QuPath).

use std::collections::HashMap;

use crate::TissueMask;

/// One connected piece of tissue: its outer ring and the rings of the holes in it, as
/// `[x, y]` corners in mask pixels (y down). Rings are closed (the last corner repeats the
/// first); outer rings run counterclockwise by the numbers (a positive shoelace area), holes
/// clockwise, as RFC 7946 asks of GeoJSON polygons.
#[derive(Debug, Clone, PartialEq)]
pub struct TissuePolygon {
    /// The outer ring.
    pub exterior: Vec<[i64; 2]>,
    /// Holes, each a ring inside the exterior.
    pub holes: Vec<Vec<[i64; 2]>>,
}

/// Twice the signed area of a closed ring (shoelace): positive for outer rings.
pub fn ring_area2(ring: &[[i64; 2]]) -> i64 {
    ring.windows(2)
        .map(|w| w[0][0] * w[1][1] - w[1][0] * w[0][1])
        .sum()
}

/// Steps along pixel edges: right, down, left, up (screen directions, y down).
const STEPS: [[i64; 2]; 4] = [[1, 0], [0, 1], [-1, 0], [0, -1]];

impl TissueMask {
    /// The tissue's outline: one polygon per 4-connected piece, holes included. Pixels that
    /// touch only at a corner belong to separate pieces, so that no ring touches itself.
    pub fn contours(&self) -> Vec<TissuePolygon> {
        let [h, w] = self.size;
        let tissue = |y: i64, x: i64| {
            y >= 0
                && x >= 0
                && (y as usize) < h
                && (x as usize) < w
                && self.is_tissue([y as usize, x as usize])
        };
        // Directed boundary edges with tissue on their right (screen clockwise around each
        // piece), keyed by start corner; a corner where two pieces or a piece and a hole
        // touch diagonally starts two edges.
        let mut edges: HashMap<[i64; 2], Vec<usize>> = HashMap::new();
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                if !tissue(y, x) {
                    continue;
                }
                // Top, right, bottom, left sides: start corner, direction, the neighbour across.
                let sides = [
                    ([x, y], 0, (y - 1, x)),
                    ([x + 1, y], 1, (y, x + 1)),
                    ([x + 1, y + 1], 2, (y + 1, x)),
                    ([x, y + 1], 3, (y, x - 1)),
                ];
                for (start, dir, (ny, nx)) in sides {
                    if !tissue(ny, nx) {
                        edges.entry(start).or_default().push(dir);
                    }
                }
            }
        }
        let mut rings = Vec::new();
        let mut starts: Vec<[i64; 2]> = edges.keys().copied().collect();
        starts.sort_unstable_by_key(|&[x, y]| (y, x));
        for start in starts {
            while let Some(first) = edges.get_mut(&start).and_then(Vec::pop) {
                let mut ring = vec![start];
                let (mut at, mut dir) = (start, first);
                loop {
                    let [dx, dy] = STEPS[dir];
                    at = [at[0] + dx, at[1] + dy];
                    if at == start {
                        break;
                    }
                    // At a corner shared diagonally, the right turn keeps to this piece. Every
                    // corner an edge reaches starts one (each tissue pixel's sides close), so
                    // the walk always continues; a missing edge would only end the ring early.
                    let Some(next) = edges.get_mut(&at).and_then(|out| {
                        [(dir + 1) % 4, dir, (dir + 3) % 4]
                            .into_iter()
                            .find_map(|d| out.iter().position(|&e| e == d))
                            .map(|pick| out.swap_remove(pick))
                    }) else {
                        break;
                    };
                    if next != dir {
                        ring.push(at);
                    }
                    dir = next;
                }
                ring.push(start);
                rings.extend(simple_rings(ring));
            }
        }
        let (outer, holes): (Vec<_>, Vec<_>) = rings.into_iter().partition(|r| ring_area2(r) > 0);
        let mut polygons: Vec<TissuePolygon> = outer
            .into_iter()
            .map(|exterior| TissuePolygon {
                exterior,
                holes: Vec::new(),
            })
            .collect();
        for hole in holes {
            // A tissue pixel's centre beside the hole's first edge: strictly inside exactly
            // the outer rings around the hole.
            let [a, b] = [hole[0], hole[1]];
            let (dx, dy) = ((b[0] - a[0]).signum(), (b[1] - a[1]).signum());
            let probe = [2 * a[0] + dx - dy, 2 * a[1] + dy + dx];
            if let Some(owner) = polygons
                .iter_mut()
                .filter(|p| contains_doubled(&p.exterior, probe))
                .min_by_key(|p| ring_area2(&p.exterior))
            {
                owner.holes.push(hole);
            }
        }
        polygons
    }
}

/// A closed ring cut at the corners it visits twice into rings that visit each corner once
/// (a piece touching itself diagonally round a notch gives its outline and the notch's ring,
/// which the area sign then files as a hole).
fn simple_rings(ring: Vec<[i64; 2]>) -> Vec<Vec<[i64; 2]>> {
    let mut out = Vec::new();
    let mut path: Vec<[i64; 2]> = Vec::with_capacity(ring.len());
    let mut at: HashMap<[i64; 2], usize> = HashMap::new();
    for corner in ring {
        if let Some(&i) = at.get(&corner) {
            let mut loop_ring: Vec<[i64; 2]> = path.drain(i..).collect();
            for c in &loop_ring[1..] {
                at.remove(c);
            }
            loop_ring.push(corner);
            if loop_ring.len() > 2 {
                out.push(loop_ring);
            }
        }
        at.insert(corner, path.len());
        path.push(corner);
    }
    out
}

/// Whether the point `probe / 2` (half-integer coordinates, never on a ring) lies inside
/// `ring` (even-odd rule).
fn contains_doubled(ring: &[[i64; 2]], [px, py]: [i64; 2]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let ([x0, y0], [x1, y1]) = (w[0].map(|v| 2 * v), w[1].map(|v| 2 * v));
        if (y0 > py) != (y1 > py) {
            // x of the edge at height py, compared without division.
            let lhs = (px - x0) * (y1 - y0);
            let rhs = (x1 - x0) * (py - y0);
            if (y1 > y0 && lhs < rhs) || (y1 < y0 && lhs > rhs) {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> TissueMask {
        let size = [rows.len(), rows[0].len()];
        let flags: Vec<bool> = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b == b'#'))
            .collect();
        TissueMask::from_flags(size, &flags, 0)
    }

    #[test]
    fn a_square_with_a_hole_and_a_diagonal_neighbour() {
        let m = mask(&["###.", "#.#.", "###.", "...#"]);
        let polygons = m.contours();
        assert_eq!(polygons.len(), 2, "{polygons:?}");
        let big = polygons.iter().find(|p| p.exterior.len() == 5).unwrap();
        assert_eq!(big.exterior, vec![[0, 0], [3, 0], [3, 3], [0, 3], [0, 0]]);
        assert_eq!(big.holes.len(), 1);
        assert_eq!(ring_area2(&big.holes[0]), -2);
        let small = polygons
            .iter()
            .find(|p| p.exterior.len() != 5 || p.holes.is_empty())
            .unwrap();
        assert_eq!(ring_area2(&small.exterior), 2);
    }

    proptest::proptest! {
        /// The outline encloses exactly the tissue: outer areas minus hole areas is the count
        /// of tissue pixels, every ring is closed, and no ring visits a corner twice.
        #[test]
        fn outlines_enclose_exactly_the_tissue(
            h in 1usize..12,
            w in 1usize..12,
            bits in proptest::collection::vec(proptest::bool::ANY, 144),
        ) {
            let m = TissueMask::from_flags([h, w], &bits[..h * w], 0);
            let polygons = m.contours();
            let mut area2 = 0;
            for p in &polygons {
                for ring in std::iter::once(&p.exterior).chain(&p.holes) {
                    proptest::prop_assert_eq!(ring.first(), ring.last());
                    let mut seen = std::collections::HashSet::new();
                    for corner in &ring[..ring.len() - 1] {
                        proptest::prop_assert!(seen.insert(*corner), "{:?} repeats in {:?}", corner, ring);
                    }
                }
                area2 += ring_area2(&p.exterior);
                area2 += p.holes.iter().map(|r| ring_area2(r)).sum::<i64>();
            }
            proptest::prop_assert_eq!(area2, 2 * m.tissue_pixels() as i64);
        }
    }
}
