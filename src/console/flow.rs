//! The overview's flow graph, drawn on the server as inline SVG: products
//! as boxes in columns (a product that only publishes on the left), each
//! integration as an arrow from its source to its target, and each emit
//! chain (an integration whose `emit` feeds another) as a dashed arrow
//! between the two integrations' labels. Colours come from CSS classes;
//! the SVG carries no styles or scripts. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::highlight::escape;

/// One integration, as the graph draws it.
#[derive(Debug, Clone)]
pub struct Edge {
    pub id: String,
    pub source: String,
    pub target: String,
    /// `enabled`, `paused` or `disabled`: the arrow's class.
    pub state: &'static str,
    /// A short line under the label (`12/h · 3 dead`).
    pub note: String,
    /// Whether it has dead deliveries (drawn as a warning).
    pub failing: bool,
}

/// An emit chain: `from`'s `emit: event` is routed to `to`.
#[derive(Debug, Clone)]
pub struct Chain {
    pub from: String,
    pub event: String,
    pub to: String,
}

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 46.0;
const COLUMN: f64 = 330.0;
const ROW: f64 = 130.0;
const MARGIN: f64 = 30.0;
/// Room above the first row for arrows that jump over a column.
const TOP: f64 = 90.0;

/// The graph as an `<svg>` element, with a title and a description that
/// lists every flow in words for screen readers.
pub fn svg(edges: &[Edge], chains: &[Chain]) -> String {
    // Columns: the longest path of integrations leading to each product
    // (bounded, so a cycle between products cannot loop).
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for edge in edges {
        depth.entry(edge.source.as_str()).or_insert(0);
        depth.entry(edge.target.as_str()).or_insert(0);
    }
    let products = depth.len();
    for _ in 0..products {
        let mut changed = false;
        for edge in edges {
            let next = (depth[edge.source.as_str()] + 1).min(products.saturating_sub(1));
            if edge.source != edge.target && depth[edge.target.as_str()] < next {
                depth.insert(edge.target.as_str(), next);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut place: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (product, column) in &depth {
        let row = rows.entry(*column).or_insert(0);
        let x = MARGIN + *column as f64 * COLUMN;
        let y = TOP + *row as f64 * ROW;
        place.insert(product, (x, y));
        *row += 1;
    }
    let width = MARGIN * 2.0 + (rows.len().max(1) - 1) as f64 * COLUMN + NODE_W;
    let height = TOP + (rows.values().copied().max().unwrap_or(1) - 1) as f64 * ROW + NODE_H + 70.0;

    let mut description = Vec::new();
    for edge in edges {
        description.push(format!(
            "{} from {} to {} ({})",
            edge.id, edge.source, edge.target, edge.state
        ));
    }
    for chain in chains {
        description.push(format!(
            "{} emits {} to {}",
            chain.from, chain.event, chain.to
        ));
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"flows\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-labelledby=\"flow-title flow-desc\">\
         <title id=\"flow-title\">Integration flows</title><desc id=\"flow-desc\">{}</desc>\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path class=\"arrowhead\" d=\"M 0 0 L 10 5 L 0 10 z\"/></marker>\
         <marker id=\"chain-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto-start-reverse\">\
         <path class=\"chain-head\" d=\"M 0 0 L 10 5 L 0 10 z\"/></marker></defs>",
        escape(&description.join("; "))
    );

    // Arrows first, labels last: no arrow is drawn over a label. Each
    // label is placed where it meets no label placed before it (moved
    // down, then up, in steps), so none overlaps another.
    let mut labels: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut texts = String::new();
    let mut placed: Vec<Box_> = Vec::new();
    for edge in edges {
        let (sx, sy) = place[edge.source.as_str()];
        let (tx, ty) = place[edge.target.as_str()];
        let nth = pairs
            .entry((edge.source.as_str(), edge.target.as_str()))
            .or_insert(0);
        let spread = *nth as f64 * 34.0;
        *nth += 1;
        let (x1, y1) = (sx + NODE_W, sy + NODE_H / 2.0);
        let (x2, y2) = (tx, ty + NODE_H / 2.0);
        let bend = ((x2 - x1).abs() / 2.0).max(60.0);
        // An arrow that jumps over a column arcs above the boxes between.
        let lift = if x2 - x1 > COLUMN { 110.0 } else { 0.0 };
        let (c1, c2) = (
            (x1 + bend, y1 + spread - lift),
            (x2 - bend, y2 + spread - lift),
        );
        let mx = (x1 + 3.0 * c1.0 + 3.0 * c2.0 + x2) / 8.0;
        let my = (y1 + 3.0 * c1.1 + 3.0 * c2.1 + y2) / 8.0;
        let failing = if edge.failing { " failing" } else { "" };
        let id = escape(&edge.id);
        let note = format!("{} · {}", edge.state, edge.note);
        let _ = write!(
            out,
            "<a href=\"/console/integrations/{id}\" class=\"edge {state}{failing}\">\
             <path d=\"M {x1:.1} {y1:.1} C {:.1} {:.1}, {:.1} {:.1}, {x2:.1} {y2:.1}\" marker-end=\"url(#arrow)\"/></a>",
            c1.0,
            c1.1,
            c2.0,
            c2.1,
            state = edge.state,
        );
        // The label sits above its arrow: a straight arrow passes under
        // it, a curved one at its middle point.
        let width =
            (edge.id.chars().count() as f64 * 7.6).max(note.chars().count() as f64 * 6.0) + 10.0;
        let wanted = Box_ {
            x: mx - width / 2.0,
            y: my - 34.0,
            w: width,
            h: 30.0,
        };
        let spot = free_spot(&placed, wanted);
        placed.push(spot);
        let cy = spot.y + 12.0;
        labels.insert(edge.id.as_str(), (mx, spot.y + 22.0));
        let _ = write!(
            texts,
            "<a href=\"/console/integrations/{id}\" class=\"edge-text\">\
             <rect class=\"label-bg\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>\
             <text x=\"{mx:.1}\" y=\"{cy:.1}\" text-anchor=\"middle\" class=\"edge-label\">{id}</text>\
             <text x=\"{mx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"edge-note\">{}</text></a>",
            spot.x,
            spot.y,
            spot.w,
            spot.h,
            cy + 14.0,
            escape(&note),
        );
    }
    for chain in chains {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (
            labels.get(chain.from.as_str()),
            labels.get(chain.to.as_str()),
        ) else {
            continue;
        };
        let (y1, y2) = (y1 + 10.0, y2 - 30.0);
        let lift = 50.0;
        let _ = write!(
            out,
            "<g class=\"chain\"><path d=\"M {x1:.1} {y1:.1} C {x1:.1} {:.1}, {x2:.1} {:.1}, {x2:.1} {y2:.1}\" marker-end=\"url(#chain-arrow)\"/></g>",
            y1 + lift,
            y2 - lift,
        );
        let text = format!("emit {}", chain.event);
        let width = text.chars().count() as f64 * 6.2 + 10.0;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0 + lift / 2.0);
        let spot = free_spot(
            &placed,
            Box_ {
                x: cx - width / 2.0,
                y: cy - 8.0,
                w: width,
                h: 16.0,
            },
        );
        placed.push(spot);
        let _ = write!(
            texts,
            "<g class=\"chain-text\"><rect class=\"label-bg\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>\
             <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"chain-label\">{}</text></g>",
            spot.x,
            spot.y,
            spot.w,
            spot.h,
            spot.y + 12.0,
            escape(&text)
        );
    }
    for (product, (x, y)) in &place {
        let _ = write!(
            out,
            "<g class=\"product\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
            x + NODE_W / 2.0,
            y + NODE_H / 2.0 + 5.0,
            escape(product)
        );
    }
    out.push_str(&texts);
    out.push_str("</svg>");
    out
}

/// A label's box in the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Box_ {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Box_ {
    fn overlaps(&self, other: &Box_) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }
}

/// `wanted`, or the nearest box below or above it that overlaps none of
/// `placed`.
fn free_spot(placed: &[Box_], wanted: Box_) -> Box_ {
    for step in 0..40 {
        for sign in [1.0, -1.0] {
            let candidate = Box_ {
                y: wanted.y + sign * f64::from(step) * 6.0,
                ..wanted
            };
            if !placed.iter().any(|p| p.overlaps(&candidate)) {
                return candidate;
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, source: &str, target: &str) -> Edge {
        Edge {
            id: id.into(),
            source: source.into(),
            target: target.into(),
            state: "enabled",
            note: "0/h".into(),
            failing: false,
        }
    }

    #[test]
    fn products_are_laid_out_by_how_far_down_the_chain_they_are() {
        let edges = [
            edge("recruitiq-to-nexus", "recruitiq", "nexus"),
            edge("nexus-to-paylinq", "nexus", "paylinq"),
            edge("recruitiq-to-paylinq", "recruitiq", "paylinq"),
        ];
        let chains = [Chain {
            from: "recruitiq-to-nexus".into(),
            event: "employee.created".into(),
            to: "nexus-to-paylinq".into(),
        }];
        let svg = svg(&edges, &chains);
        // recruitiq in column 0, nexus in 1, paylinq in 2.
        assert!(svg.contains("<rect x=\"30.0\""), "{svg}");
        assert!(svg.contains("<rect x=\"360.0\""), "{svg}");
        assert!(svg.contains("<rect x=\"690.0\""), "{svg}");
        assert!(svg.contains("emit employee.created"));
        assert!(svg.contains("href=\"/console/integrations/nexus-to-paylinq\""));
        assert!(!svg.contains("style="));
    }

    #[test]
    fn labels_never_overlap_and_come_after_every_arrow() {
        let edges = [
            edge("recruitiq-to-nexus", "recruitiq", "nexus"),
            edge("nexus-to-paylinq", "nexus", "paylinq"),
            edge("recruitiq-to-paylinq", "recruitiq", "paylinq"),
            edge("recruitiq-to-directory", "recruitiq", "directory"),
            edge("recruitiq-to-directory-2", "recruitiq", "directory"),
        ];
        let chains = [Chain {
            from: "recruitiq-to-nexus".into(),
            event: "employee.created".into(),
            to: "nexus-to-paylinq".into(),
        }];
        let svg = svg(&edges, &chains);
        let boxes: Vec<Box_> = regex_boxes(&svg);
        assert_eq!(boxes.len(), 6, "{svg}");
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        let last_path = svg.rfind("<path").unwrap();
        let first_label = svg.find("class=\"label-bg\"").unwrap();
        assert!(
            last_path < first_label,
            "every label is drawn after every arrow"
        );
    }

    fn regex_boxes(svg: &str) -> Vec<Box_> {
        svg.split("<rect class=\"label-bg\" ")
            .skip(1)
            .map(|rest| {
                let number = |name: &str| -> f64 {
                    let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    let end = start + rest[start..].find('"').unwrap();
                    rest[start..end].parse().unwrap()
                };
                Box_ {
                    x: number("x"),
                    y: number("y"),
                    w: number("width"),
                    h: number("height"),
                }
            })
            .collect()
    }

    #[test]
    fn a_cycle_between_products_still_draws() {
        let svg = svg(&[edge("a", "x", "y"), edge("b", "y", "x")], &[]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
