//! `sts-plan`'s rules, pure: from the objects of a bucket (name order) to
//! prefixes balanced by bytes, each object covered by exactly one prefix and
//! no prefix a prefix of another.
//!
//! The names form a trie. A node covers every name that starts with `lo`
//! (its parent's common prefix plus one character); `lcp` is the longest
//! prefix its names share. A node too big is split by the next character
//! after `lcp`, so one `/` level that holds too much (a flat directory, or
//! hundreds of small ones) is cut by the next characters of the names, and
//! siblings never overlap. A node is written as the longest prefix between
//! `lo` and `lcp` that ends in `/` (the deepest folder that holds exactly
//! its objects), else `lo`: both cover exactly the same listed objects.
//!
//! Building the tree (from a listing, or from SQL over an inventory) is
//! separate from cutting it, so `--shards N` tries thresholds on the same
//! tree until the count is closest to N.

use crate::prefixes::prefix_problem;
pub use crate::records::{Group, PlannedPrefix};

impl Group {
    /// The longest prefix every name of the group shares.
    pub fn lcp(&self) -> &str {
        let common = self
            .first
            .bytes()
            .zip(self.last.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let mut end = common;
        while !self.first.is_char_boundary(end) {
            end -= 1;
        }
        &self.first[..end]
    }

    /// An object named exactly the common prefix: any prefix that covers it
    /// covers the whole group, so the group cannot be split.
    pub fn unsplittable(&self) -> bool {
        self.first == self.lcp()
    }

    pub fn weight(&self) -> u64 {
        // Empty objects still cost a request each.
        self.bytes.saturating_add(self.objects)
    }
}

/// A trie node: a group, and its children once it has been expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub group: Group,
    pub children: Vec<Node>,
}

/// How the plan was asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// About this many prefixes.
    Shards(u64),
    /// Prefixes of at most about this many bytes.
    ShardBytes(u64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("the source holds no objects under '{0}': nothing to plan")]
    Empty(String),
    #[error(
        "{count} objects have names starting with '/' (first: '{first}'); STS include \
         prefixes cannot start with '/', so no job could copy them"
    )]
    LeadingSlash { count: u64, first: String },
    #[error("the plan breaks a rule: {0}")]
    Broken(String),
}

/// Splits the groups of a sorted slice of (name, size) after `lcp`.
fn child_groups(objects: &[(&str, u64)], lcp: &str) -> Vec<(Group, std::ops::Range<usize>)> {
    let mut groups = Vec::new();
    let mut start = 0;
    // The object named exactly `lcp` (if any) comes first; it belongs to no child.
    while start < objects.len() && objects[start].0.len() == lcp.len() {
        start += 1;
    }
    while start < objects.len() {
        let next_char = objects[start].0[lcp.len()..]
            .chars()
            .next()
            .unwrap_or_default();
        let lo = format!("{lcp}{next_char}");
        let end = start + objects[start..].partition_point(|(name, _)| name.starts_with(&lo));
        let slice = &objects[start..end];
        groups.push((
            Group {
                lo,
                first: slice[0].0.to_string(),
                last: slice[slice.len() - 1].0.to_string(),
                objects: slice.len() as u64,
                bytes: slice.iter().map(|(_, s)| s).sum(),
            },
            start..end,
        ));
        start = end;
    }
    groups
}

/// The trie of sorted `(name, size)` pairs, expanded wherever a node weighs
/// more than `fine` (bytes plus one per object) and can be split. The root
/// (lo `""`) is always expanded when it can be, since an empty prefix would
/// copy the whole bucket.
pub fn build_tree(objects: &[(&str, u64)], prefix: &str, fine: u64) -> Option<Node> {
    let (first, last) = (objects.first()?, objects.last()?);
    let root = Group {
        lo: prefix.to_string(),
        first: first.0.to_string(),
        last: last.0.to_string(),
        objects: objects.len() as u64,
        bytes: objects.iter().map(|(_, s)| s).sum(),
    };
    Some(expand(root, objects, fine, true))
}

fn expand(group: Group, objects: &[(&str, u64)], fine: u64, force: bool) -> Node {
    if (!force && group.weight() <= fine) || group.unsplittable() {
        return Node {
            group,
            children: Vec::new(),
        };
    }
    let lcp = group.lcp().to_string();
    let children = child_groups(objects, &lcp)
        .into_iter()
        .map(|(child, range)| expand(child, &objects[range], fine, false))
        .collect();
    Node { group, children }
}

/// The same tree as [`build_tree`], built level by level from a source of
/// child groups: `children(parents)` answers, for each parent common prefix,
/// its objects grouped by the next character (`(parent, group)` pairs).
/// One call per tree level, so an inventory in BigQuery answers with one
/// query per level instead of listing objects.
pub async fn build_tree_by_levels<E, F, Fut>(
    root: Group,
    fine: u64,
    mut children: F,
) -> Result<Node, E>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, Group)>, E>>,
{
    // An arena: (group, children's indices).
    let mut nodes: Vec<(Group, Vec<usize>)> = vec![(root, Vec::new())];
    let mut frontier = vec![0usize];
    let mut first_level = true;
    while !frontier.is_empty() {
        let expand: Vec<usize> = frontier
            .into_iter()
            .filter(|&i| {
                let g = &nodes[i].0;
                !g.unsplittable() && (first_level || g.weight() > fine)
            })
            .collect();
        first_level = false;
        if expand.is_empty() {
            break;
        }
        let by_parent: std::collections::HashMap<String, usize> = expand
            .iter()
            .map(|&i| (nodes[i].0.lcp().to_string(), i))
            .collect();
        let mut answered = children(by_parent.keys().cloned().collect()).await?;
        answered.sort_by(|a, b| a.1.lo.cmp(&b.1.lo));
        let mut next = Vec::new();
        for (parent, group) in answered {
            let Some(&at) = by_parent.get(&parent) else {
                continue;
            };
            nodes.push((group, Vec::new()));
            let index = nodes.len() - 1;
            nodes[at].1.push(index);
            next.push(index);
        }
        frontier = next;
    }
    fn assemble(nodes: &mut Vec<Option<(Group, Vec<usize>)>>, at: usize) -> Node {
        let (group, children) = nodes[at].take().unwrap_or_default();
        Node {
            group,
            children: children.into_iter().map(|c| assemble(nodes, c)).collect(),
        }
    }
    let mut slots: Vec<Option<(Group, Vec<usize>)>> = nodes.into_iter().map(Some).collect();
    Ok(assemble(&mut slots, 0))
}

/// The prefix written for a node: the longest one between `lo` and the
/// common prefix that ends in `/`, else `lo` (else the common prefix, for
/// the root, which must never be empty).
pub fn written_prefix(group: &Group) -> String {
    let lcp = group.lcp();
    let folder = lcp[group.lo.len().min(lcp.len())..]
        .rfind('/')
        .map(|at| &lcp[..group.lo.len() + at + 1]);
    match folder {
        Some(folder) => folder.to_string(),
        None if group.lo.is_empty() => lcp.to_string(),
        None => group.lo.clone(),
    }
}

/// The nodes a threshold keeps: a node that weighs at most `threshold` (or
/// cannot be split further) is one prefix; a heavier one gives way to its
/// children. The root is never kept whole when it has children and no
/// common prefix (its prefix would be empty).
fn cut<'a>(node: &'a Node, threshold: u64, root: bool, out: &mut Vec<&'a Node>) {
    let must_split = root && written_prefix(&node.group).is_empty();
    if node.children.is_empty() || (node.group.weight() <= threshold && !must_split) {
        out.push(node);
        return;
    }
    for child in &node.children {
        cut(child, threshold, false, out);
    }
}

/// One threshold cuts a level whole: a flat folder of uniform names gives
/// 2, 20 or 200 prefixes and nothing between. When the cut misses the
/// promise (within half of `shards`), the heaviest nodes of the cut are
/// split one at a time while that brings the count closer (the heaviest
/// first keeps the balance). A cut within the promise is left as it is.
fn refine(mut nodes: Vec<&Node>, shards: u64) -> Vec<&Node> {
    if (nodes.len() as u64).abs_diff(shards) * 2 <= shards {
        return nodes;
    }
    loop {
        let count = nodes.len() as u64;
        let Some((at, heaviest)) = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.children.is_empty())
            .max_by_key(|(_, n)| n.group.weight())
        else {
            return nodes;
        };
        let after = count - 1 + heaviest.children.len() as u64;
        if after.abs_diff(shards) >= count.abs_diff(shards) {
            return nodes;
        }
        let children: Vec<&Node> = heaviest.children.iter().collect();
        nodes.splice(at..=at, children);
    }
}

fn count_at(tree: &Node, threshold: u64) -> usize {
    let mut out = Vec::new();
    cut(tree, threshold, true, &mut out);
    out.len()
}

/// The threshold whose cut gives the count closest to `shards` (fewer
/// prefixes on a tie: fewer jobs for the same balance), and the lowest one
/// whose cut gives at most `shards` (where [`refine`] starts from).
fn threshold_for(tree: &Node, shards: u64) -> (u64, u64) {
    let mut weights = Vec::new();
    let mut stack = vec![tree];
    while let Some(node) = stack.pop() {
        weights.push(node.group.weight());
        stack.extend(node.children.iter());
    }
    weights.sort_unstable();
    weights.dedup();
    // count_at is non-increasing in the threshold: find the first weight at
    // which the count drops to `shards` or below, and compare with the one
    // before it.
    let at = weights.partition_point(|&w| count_at(tree, w) as u64 > shards);
    let coarse = weights.get(at).or(weights.last()).copied().unwrap_or(0);
    let mut best = *weights.last().unwrap_or(&0);
    let mut best_distance = u64::MAX;
    for index in [at.checked_sub(1), Some(at)].into_iter().flatten() {
        if let Some(&w) = weights.get(index) {
            let distance = (count_at(tree, w) as u64).abs_diff(shards);
            if distance < best_distance || (distance == best_distance && w > best) {
                best = w;
                best_distance = distance;
            }
        }
    }
    (best, coarse)
}

/// The plan over a built tree.
pub fn plan_tree(tree: &Node, target: Target) -> Result<Vec<PlannedPrefix>, PlanError> {
    let mut nodes = Vec::new();
    match target {
        Target::ShardBytes(bytes) => cut(tree, bytes, true, &mut nodes),
        Target::Shards(n) => {
            let n = n.max(1);
            let (best, coarse) = threshold_for(tree, n);
            cut(tree, best, true, &mut nodes);
            if (nodes.len() as u64).abs_diff(n) * 2 > n {
                // Outside the promise: split the coarser cut toward n.
                let mut from = Vec::new();
                cut(tree, coarse, true, &mut from);
                let refined = refine(from, n);
                if (refined.len() as u64).abs_diff(n) < (nodes.len() as u64).abs_diff(n) {
                    nodes = refined;
                }
            }
        }
    }
    let mut planned: Vec<PlannedPrefix> = nodes
        .into_iter()
        .map(|node| PlannedPrefix {
            prefix: written_prefix(&node.group),
            objects: node.group.objects,
            bytes: node.group.bytes,
        })
        .collect();
    planned.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let slashed: Vec<&PlannedPrefix> = planned
        .iter()
        .filter(|p| p.prefix.starts_with('/'))
        .collect();
    if let Some(first) = slashed.first() {
        return Err(PlanError::LeadingSlash {
            count: slashed.iter().map(|p| p.objects).sum(),
            first: first.prefix.clone(),
        });
    }
    check_prefixes(&planned)?;
    Ok(planned)
}

/// The fine grain a tree needs for a target: nodes lighter than this are
/// never split, whatever threshold the search tries.
pub fn fine_weight(total_weight: u64, target: Target) -> u64 {
    match target {
        Target::ShardBytes(bytes) => bytes,
        Target::Shards(n) => total_weight / n.max(1) / 4,
    }
}

/// Plans sorted `(name, size)` pairs (a listing) under `prefix`.
pub fn plan(
    objects: &[(&str, u64)],
    prefix: &str,
    target: Target,
) -> Result<Vec<PlannedPrefix>, PlanError> {
    let total: u64 = objects
        .iter()
        .map(|(_, s)| s.saturating_add(1))
        .fold(0, u64::saturating_add);
    let tree = build_tree(objects, prefix, fine_weight(total, target))
        .ok_or_else(|| PlanError::Empty(prefix.to_string()))?;
    plan_tree(&tree, target)
}

/// STS's rules for include prefixes, and no prefix a prefix of another.
pub fn check_prefixes(planned: &[PlannedPrefix]) -> Result<(), PlanError> {
    let mut sorted: Vec<&str> = planned.iter().map(|p| p.prefix.as_str()).collect();
    sorted.sort_unstable();
    for prefix in &sorted {
        if let Some(problem) = prefix_problem(prefix) {
            return Err(PlanError::Broken(problem));
        }
    }
    // In name order, a prefix of another sorts right before some name that
    // starts with it, and every name between them starts with it too.
    for pair in sorted.windows(2) {
        if pair[1].starts_with(pair[0]) {
            return Err(PlanError::Broken(format!(
                "'{}' is a prefix of '{}'",
                pair[0], pair[1]
            )));
        }
    }
    Ok(())
}

/// How even a plan is: largest bytes over mean bytes (1.0 is perfect).
pub fn balance(planned: &[PlannedPrefix]) -> f64 {
    if planned.is_empty() {
        return 0.0;
    }
    let total: u64 = planned.iter().map(|p| p.bytes).sum();
    let largest = planned.iter().map(|p| p.bytes).max().unwrap_or(0);
    let mean = total as f64 / planned.len() as f64;
    if mean == 0.0 {
        1.0
    } else {
        largest as f64 / mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name covered by exactly one prefix.
    fn assert_exact_cover(objects: &[(&str, u64)], planned: &[PlannedPrefix]) {
        for (name, _) in objects {
            let covering: Vec<_> = planned
                .iter()
                .filter(|p| name.starts_with(&p.prefix))
                .collect();
            assert_eq!(covering.len(), 1, "{name} covered by {covering:?}");
        }
        assert_eq!(
            planned.iter().map(|p| p.objects).sum::<u64>(),
            objects.len() as u64
        );
        check_prefixes(planned).unwrap();
    }

    fn skewed() -> Vec<(String, u64)> {
        let mut names = Vec::new();
        // One huge folder, flat.
        for i in 0..400 {
            names.push((format!("huge/part-{i:05}.bin"), 10_000));
        }
        // Many small folders.
        for d in 0..150 {
            for f in 0..3 {
                names.push((format!("small/d{d:03}/f{f}"), 100));
            }
        }
        // Objects at the top level, one a prefix of a small folder's names.
        names.push(("README".into(), 50));
        names.push(("small".into(), 7));
        names.push(("top-a.txt".into(), 10));
        // Long shared stems.
        for i in 0..60 {
            names.push((format!("stem/very-long-shared-stem-{i:03}"), 20_000));
        }
        names.push(("stem/very-long-shared-stem.idx".into(), 1));
        // Non-ASCII names split on character boundaries.
        for i in 0..30 {
            names.push((format!("ünï/çødé-{i}"), 5_000));
        }
        names.sort();
        names
    }

    fn borrowed(names: &[(String, u64)]) -> Vec<(&str, u64)> {
        names.iter().map(|(n, s)| (n.as_str(), *s)).collect()
    }

    #[test]
    fn a_skewed_bucket_is_covered_exactly_near_the_asked_count() {
        let names = skewed();
        let objects = borrowed(&names);
        for shards in [5, 20, 50] {
            let planned = plan(&objects, "", Target::Shards(shards)).unwrap();
            assert_exact_cover(&objects, &planned);
            let n = planned.len() as u64;
            assert!(
                n.abs_diff(shards) * 2 <= shards.max(4),
                "asked {shards}, got {n}: {planned:?}"
            );
        }
        let planned = plan(&objects, "", Target::Shards(20)).unwrap();
        assert!(balance(&planned) < 3.0, "{}", balance(&planned));
        // Folders where they hold exactly their objects.
        assert!(planned.iter().any(|p| p.prefix.starts_with("stem/")));
        assert!(planned.iter().all(|p| !p.prefix.is_empty()));
    }

    #[test]
    fn a_flat_folder_of_uniform_names_is_cut_within_half_of_the_asked_count() {
        let names: Vec<(String, u64)> = (0..200_000)
            .map(|i| (format!("flat/file-{i:06}.bin"), 1_000))
            .collect();
        let objects = borrowed(&names);
        for shards in [50, 130] {
            let planned = plan(&objects, "", Target::Shards(shards)).unwrap();
            let count = planned.len() as u64;
            assert!(
                count.abs_diff(shards) * 2 <= shards,
                "--shards {shards} gave {count} prefixes"
            );
            assert_exact_cover(&objects, &planned);
        }
    }

    #[test]
    fn shard_bytes_bounds_every_splittable_prefix() {
        let names = skewed();
        let objects = borrowed(&names);
        let planned = plan(&objects, "", Target::ShardBytes(200_000)).unwrap();
        assert_exact_cover(&objects, &planned);
        for p in &planned {
            assert!(p.bytes + p.objects <= 200_000 || p.objects == 1, "{p:?}");
        }
        let one = plan(&objects, "", Target::ShardBytes(u64::MAX)).unwrap();
        assert!(one.len() > 1, "the root is never the empty prefix");
        assert_exact_cover(&objects, &one);
    }

    #[test]
    fn a_name_that_prefixes_others_keeps_them_together() {
        let objects = [("a", 10), ("a/x", 1000), ("a/y", 1000), ("b", 1)];
        let planned = plan(&objects, "", Target::Shards(10)).unwrap();
        assert_exact_cover(&objects, &planned);
        assert!(planned.iter().any(|p| p.prefix == "a" && p.objects == 3));
        let names = skewed();
        let objects = borrowed(&names);
        let planned = plan(&objects, "", Target::Shards(50)).unwrap();
        // The object "small" and the folder "small/" cannot be apart.
        let small = planned
            .iter()
            .find(|p| "small".starts_with(&p.prefix))
            .unwrap();
        assert_eq!(small.objects, 451);
    }

    #[test]
    fn a_sub_prefix_is_planned_within_itself() {
        let objects = [("logs/2019/a", 5), ("logs/2019/b", 5), ("logs/2020/a", 5)];
        let planned = plan(&objects, "logs/", Target::Shards(2)).unwrap();
        assert_eq!(
            planned
                .iter()
                .map(|p| p.prefix.as_str())
                .collect::<Vec<_>>(),
            ["logs/2019/", "logs/2020/"]
        );
        let one = plan(&objects, "logs/", Target::Shards(1)).unwrap();
        assert_eq!(one[0].prefix, "logs/");
    }

    #[tokio::test]
    async fn a_tree_built_by_levels_equals_the_listed_one() {
        let names = skewed();
        let objects = borrowed(&names);
        for fine in [0, 1000, 50_000, u64::MAX] {
            let listed = build_tree(&objects, "", fine).unwrap();
            let by_levels = build_tree_by_levels(listed.group.clone(), fine, |parents| {
                let objects = &objects;
                async move {
                    let mut out = Vec::new();
                    for parent in parents {
                        let under: Vec<(&str, u64)> = objects
                            .iter()
                            .copied()
                            .filter(|(n, _)| n.starts_with(&parent))
                            .collect();
                        for (group, _) in child_groups(&under, &parent) {
                            out.push((parent.clone(), group));
                        }
                    }
                    Ok::<_, ()>(out)
                }
            })
            .await
            .unwrap();
            assert_eq!(by_levels, listed, "fine {fine}");
        }
    }

    #[test]
    fn leading_slashes_and_empty_sources_are_named() {
        let err = plan(&[("/abs/x", 1), ("b", 1)], "", Target::Shards(2)).unwrap_err();
        assert!(
            matches!(err, PlanError::LeadingSlash { count: 1, .. }),
            "{err}"
        );
        assert_eq!(
            plan(&[], "x/", Target::Shards(2)).unwrap_err(),
            PlanError::Empty("x/".into())
        );
        let overlapping = [
            PlannedPrefix {
                prefix: "a/".into(),
                objects: 1,
                bytes: 1,
            },
            PlannedPrefix {
                prefix: "a/b".into(),
                objects: 1,
                bytes: 1,
            },
        ];
        assert!(check_prefixes(&overlapping).is_err());
    }
}
