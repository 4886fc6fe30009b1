//! A round's working state, built from the snapshot: dense indexes for agents, frameworks and
//! roles, each agent's free pools, each role's allocation and ordering keys, and the live
//! filters by agent.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::lookup::NameIndex;
use super::names::{Bag, Minimum, Names};
use super::{AgentFilters, AllocSnapshot, Offer, RoleConfig};
use crate::mesos::core::resources::{Resources, UNRESERVED};

pub(super) type AgentIdx = usize;
pub(super) type FwIdx = usize;
pub(super) type RoleIdx = usize;

/// A dominant share (divided by the weight for roles), totally ordered so it can key an
/// ordered set. Shares are finite and non-negative by construction, so the order is the
/// numeric one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Share(pub f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Where on an agent a part of an offer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pool {
    /// `Agent::reserved[i]`.
    Reserved(usize),
    Unreserved,
}

pub(super) struct Agent<'a> {
    pub name: &'a str,
    pub active: bool,
    pub unreserved: Bag,
    /// Free reserved resources by reserving role, sorted by role; never an empty pool.
    pub reserved: Vec<(RoleIdx, Bag)>,
    /// Roles offered something here this round.
    pub served: Vec<RoleIdx>,
    /// Frameworks with a live filter here covering everything the agent had free when the
    /// round began, so every offer it can make this round: sorted, each once.
    pub blocked: Vec<FwIdx>,
    /// The other live filters here, sorted by framework: they are tested offer by offer.
    pub filters: Vec<(FwIdx, &'a Resources)>,
    /// On an agent with fewer filtered frameworks than any role has members, the filters as
    /// the snapshot keeps them, looked up only for the frameworks a walk meets.
    pub unsorted: Option<&'a AgentFilters>,
}

pub(super) struct Role<'a> {
    pub name: &'a str,
    pub weight: f64,
    /// The role, then its ancestors that some index knows, nearest first: whose reservations
    /// the role may use, in the order it uses them.
    pub chain: Vec<RoleIdx>,
    /// Scalars allocated to the role (tasks, outstanding offers and this round's offers).
    pub alloc: Vec<u64>,
    pub guarantee: Vec<u64>,
    /// `u64::MAX` for scalars the limit does not name.
    pub limit: Option<Vec<u64>>,
    /// The frameworks that may be offered resources for this role, by (share, index).
    pub members: BTreeSet<(Share, FwIdx)>,
    /// The role's key in [`State::fair`] (and [`State::quota`]).
    pub key: Share,
}

pub(super) struct State<'a> {
    pub names: Names<'a>,
    /// 1 / the cluster's total of each scalar (0 where the total is 0).
    pub inv_total: Vec<f64>,
    pub agents: Vec<Agent<'a>>,
    agent_index: NameIndex<'a>,
    pub frameworks: NameIndex<'a>,
    pub roles: Vec<Role<'a>>,
    pub members: Members,
    /// Roles with a member, in weighted DRF order.
    pub fair: BTreeSet<(Share, RoleIdx)>,
    /// Roles with a member and below their guarantee, in weighted DRF order.
    pub quota: BTreeSet<(Share, RoleIdx)>,
    pub minimums: Vec<Minimum>,
    /// Unreserved free scalars on active agents.
    pub available: Vec<u64>,
    /// Scalars still owed to guarantees, summed over roles.
    pub required: Vec<u64>,
    pub offers: Vec<Offer>,
    /// `marks[fw] == mark` while the agent being served blocks `fw` (see `Agent::blocked`).
    pub marks: Vec<u64>,
    pub mark: u64,
    /// Filters are live while `now_ms < until_ms`.
    pub now_ms: u64,
}

/// The position of `name` in the sorted `names`.
fn index_of(names: &[&str], name: &str) -> Option<usize> {
    names.binary_search(&name).ok()
}

impl<'a> State<'a> {
    pub fn new(snapshot: &'a AllocSnapshot, now_ms: u64) -> State<'a> {
        let names = Names::of(snapshot.agents.values().map(|agent| &agent.total));
        let role_names = role_names(snapshot);
        let roles =
            role_names.iter().map(|name| Role::new(name, snapshot.roles.get(*name), &role_names, &names)).collect();
        let mut total = vec![0; names.scalars.len()];
        let agents = snapshot
            .agents
            .iter()
            .map(|(name, view)| {
                let bag = names.bag(&view.total);
                add_scalars(&mut total, &bag.scalars);
                Agent::new(name, view.active, bag, &view.reserved, &names, &role_names)
            })
            .collect();
        let inv_total = total.iter().map(|&t| if t > 0 { 1.0 / t as f64 } else { 0.0 }).collect();
        let members = Members::new(snapshot, &role_names, names.scalars.len());
        let minimums = snapshot.min_allocatable.iter().map(|min| names.minimum(min)).collect();
        let width = names.scalars.len();
        let mut state = State {
            names,
            inv_total,
            agents,
            agent_index: NameIndex::new(snapshot.agents.keys().map(String::as_str).collect()),
            frameworks: NameIndex::new(snapshot.frameworks.keys().map(String::as_str).collect()),
            roles,
            members,
            fair: BTreeSet::new(),
            quota: BTreeSet::new(),
            minimums,
            available: vec![0; width],
            required: vec![0; width],
            offers: Vec::with_capacity(snapshot.agents.len()),
            marks: vec![0; snapshot.frameworks.len()],
            mark: 0,
            now_ms,
        };
        state.charge_allocations(snapshot);
        state.order_roles();
        state.index_filters(snapshot);
        state.measure_headroom();
        state
    }

    /// Adds every allocation to its role's and its framework's shares and takes it out of its
    /// agent's pools, in (agent, role) order.
    fn charge_allocations(&mut self, snapshot: &'a AllocSnapshot) {
        let width = self.names.scalars.len();
        // Each allocation's scalars, `width` apiece, in the order of `on_agents`' indexes.
        let mut scalars = vec![0; snapshot.allocations.len() * width];
        let mut on_agents = Vec::with_capacity(snapshot.allocations.len());
        for (i, allocation) in snapshot.allocations.iter().enumerate() {
            let Some(role) = self.role_index(&allocation.role) else { continue };
            let mine = &mut scalars[i * width..(i + 1) * width];
            self.names.scalars_into(&allocation.resources, mine);
            add_scalars(&mut self.roles[role].alloc, mine);
            let fw = self.frameworks.get(&allocation.framework);
            if let Some(slot) = fw.and_then(|fw| self.members.slot(fw, role)) {
                add_scalars(self.members.alloc_mut(slot), mine);
            }
            if let Some(agent) = self.agent_index.get(&allocation.agent) {
                on_agents.push((agent, role, i));
            }
        }
        // Charging one role's allocations one after the other takes the same from each pool as
        // charging their sum, so sorting is all it takes to make the order of the vector moot.
        on_agents.sort_unstable_by_key(|&(agent, role, _)| (agent, role));
        for (agent, role, i) in on_agents {
            let need = &mut scalars[i * width..(i + 1) * width];
            let used = &snapshot.allocations[i].resources;
            self.agents[agent].consume(&self.roles[role].chain, need, used, &self.names);
        }
    }

    /// Computes every share and fills the role orders and member orders.
    fn order_roles(&mut self) {
        for fw in 0..self.members.frameworks() {
            for slot in self.members.of(fw) {
                let key = Share(dominant(&self.inv_total, self.members.alloc(slot)));
                self.members.key[slot] = key;
                self.roles[self.members.role[slot]].members.insert((key, fw));
            }
        }
        for r in 0..self.roles.len() {
            self.roles[r].key = Share(dominant(&self.inv_total, &self.roles[r].alloc) / self.roles[r].weight);
            self.place_role(r);
        }
    }

    /// Puts role `r` under its current key into the orders it belongs in.
    pub fn place_role(&mut self, r: RoleIdx) {
        let role = &self.roles[r];
        if role.members.is_empty() {
            return;
        }
        self.fair.insert((role.key, r));
        if role.owes() {
            self.quota.insert((role.key, r));
        }
    }

    /// Prepares each agent's filters for the round.
    ///
    /// Long filters pile up: Mesos's DeclineOffers benchmark ends with one per framework and
    /// agent, so a round reads only what it needs. On an agent where fewer frameworks are
    /// filtered than the smallest role has members, a walk of a role's frameworks stops at
    /// the first one not filtered, so the filters stay where the snapshot keeps them and are
    /// looked up as frameworks are met. Elsewhere a whole role may be blocked, and a walk
    /// would test every framework: there each live filter is tested once, here, against
    /// everything the agent has free — one that covers that covers every offer of the round.
    fn index_filters(&mut self, snapshot: &'a AllocSnapshot) {
        let threshold = self.fair.iter().map(|&(_, role)| self.roles[role].members.len()).min().unwrap_or(usize::MAX);
        // Both are in name order: one merge instead of a search per agent.
        let mut filtered = snapshot.filters.by_agent().peekable();
        for agent in self.agents.iter_mut() {
            while filtered.next_if(|(name, _)| *name < agent.name).is_some() {}
            let Some((_, on_agent)) = filtered.next_if(|(name, _)| *name == agent.name) else { continue };
            if !agent.active {
                continue;
            }
            if on_agent.len() < threshold {
                agent.unsorted = Some(on_agent);
                continue;
            }
            let free = agent.free();
            for (framework, entries) in on_agent.iter() {
                let Some(fw) = self.frameworks.get(framework) else { continue };
                for entry in entries.iter().filter(|entry| self.now_ms < entry.until_ms) {
                    if self.names.within(&free, &entry.resources) {
                        agent.blocked.push(fw);
                    } else {
                        agent.filters.push((fw, &entry.resources));
                    }
                }
            }
            agent.blocked.sort_unstable();
            agent.blocked.dedup();
            agent.filters.sort_unstable_by_key(|(fw, _)| *fw);
        }
    }

    fn measure_headroom(&mut self) {
        for agent in self.agents.iter().filter(|agent| agent.active) {
            add_scalars(&mut self.available, &agent.unreserved.scalars);
        }
        for role in &self.roles {
            for (k, owed) in role.owed().enumerate() {
                self.required[k] = self.required[k].saturating_add(owed);
            }
        }
    }

    pub fn role_index(&self, name: &str) -> Option<RoleIdx> {
        self.roles.binary_search_by(|role| role.name.cmp(name)).ok()
    }

    /// The active agents, in name order.
    pub fn active_agents(&self) -> Vec<AgentIdx> {
        (0..self.agents.len()).filter(|&a| self.agents[a].active).collect()
    }

    pub fn into_offers(self) -> Vec<Offer> {
        self.offers
    }
}

/// Every role some part of the snapshot names, sorted (so indexes order ties by name).
/// `*` is a role frameworks may subscribe to, never a reservation.
fn role_names<'a>(snapshot: &'a AllocSnapshot) -> Vec<&'a str> {
    let mut roles: BTreeSet<&str> = snapshot.roles.keys().map(String::as_str).collect();
    let mut add = |role: &'a str| {
        // Most frameworks and allocations repeat a few roles: skip the tree for a repeat.
        if roles.last() != Some(&role) && !roles.contains(role) {
            roles.insert(role);
        }
    };
    snapshot.frameworks.values().flat_map(|view| &view.roles).for_each(|role| add(role));
    snapshot.allocations.iter().for_each(|allocation| add(&allocation.role));
    for view in snapshot.agents.values() {
        roles.extend(view.reserved.keys().map(String::as_str).filter(|role| *role != UNRESERVED));
    }
    roles.into_iter().collect()
}

/// The largest fraction of the cluster's total that `alloc` takes, over the scalars (DRF's
/// dominant share), given 1 / the total of each.
pub(super) fn dominant(inv_total: &[f64], alloc: &[u64]) -> f64 {
    alloc.iter().zip(inv_total).map(|(&milli, inv)| milli as f64 * inv).fold(0.0, f64::max)
}

pub(super) fn add_scalars(into: &mut [u64], scalars: &[u64]) {
    for (mine, theirs) in into.iter_mut().zip(scalars) {
        *mine = mine.saturating_add(*theirs);
    }
}

/// The limit on each scalar, `u64::MAX` where `resources` names none. (A limit of zero cannot
/// be written: `Resources` holds no zero scalars.)
fn limit_vector(resources: &Resources, names: &Names<'_>) -> Vec<u64> {
    names
        .scalars
        .iter()
        .map(|name| Some(resources.scalar_milli(name)).filter(|&milli| milli > 0).unwrap_or(u64::MAX))
        .collect()
}

impl<'a> Role<'a> {
    fn new(name: &'a str, config: Option<&RoleConfig>, all: &[&str], names: &Names<'_>) -> Role<'a> {
        let config = config.cloned().unwrap_or_default();
        let weight = if config.weight.is_finite() && config.weight > 0.0 { config.weight } else { 1.0 };
        let ancestors = std::iter::successors(name.rsplit_once('/').map(|(parent, _)| parent), |role| {
            role.rsplit_once('/').map(|(parent, _)| parent)
        });
        let chain = std::iter::once(name).chain(ancestors).filter_map(|role| index_of(all, role)).collect();
        Role {
            name,
            weight,
            chain,
            alloc: vec![0; names.scalars.len()],
            guarantee: names.bag(&config.guarantee).scalars,
            limit: config.limit.as_ref().map(|limit| limit_vector(limit, names)),
            members: BTreeSet::new(),
            key: Share(0.0),
        }
    }

    /// What the role is still owed of each scalar of its guarantee.
    pub fn owed(&self) -> impl Iterator<Item = u64> + '_ {
        self.guarantee.iter().zip(&self.alloc).map(|(g, a)| g.saturating_sub(*a))
    }

    pub fn owes(&self) -> bool {
        self.owed().any(|owed| owed > 0)
    }
}

impl<'a> Agent<'a> {
    /// Splits `total` into the reserved pools (a reservation larger than what is left of the
    /// total is cut to it) and the unreserved rest.
    fn new(
        name: &'a str,
        active: bool,
        total: Bag,
        reserved: &crate::mesos::core::resources::RoleResources,
        names: &Names<'_>,
        roles: &[&str],
    ) -> Agent<'a> {
        let mut unreserved = total;
        let mut pools = Vec::new();
        for (role, resources) in reserved.iter().filter(|(role, _)| *role != UNRESERVED) {
            let pool = unreserved.common(&names.bag(resources));
            unreserved.subtract(&pool);
            if let (Some(r), false) = (index_of(roles, role), pool.is_empty()) {
                pools.push((r, pool));
            }
        }
        Agent {
            name,
            active,
            unreserved,
            reserved: pools,
            served: Vec::new(),
            blocked: Vec::new(),
            filters: Vec::new(),
            unsorted: None,
        }
    }

    pub fn pool(&self, pool: Pool) -> &Bag {
        match pool {
            Pool::Reserved(i) => &self.reserved[i].1,
            Pool::Unreserved => &self.unreserved,
        }
    }

    pub fn pool_mut(&mut self, pool: Pool) -> &mut Bag {
        match pool {
            Pool::Reserved(i) => &mut self.reserved[i].1,
            Pool::Unreserved => &mut self.unreserved,
        }
    }

    /// The pools a role with this `chain` may use, in the order it uses them: its own and its
    /// ancestors' reservations, then the unreserved pool.
    pub fn usable<'c>(&'c self, chain: &'c [RoleIdx]) -> impl Iterator<Item = Pool> + 'c {
        let reserved = chain.iter().filter_map(|role| self.reserved.binary_search_by_key(role, |(r, _)| *r).ok());
        reserved.map(Pool::Reserved).chain(std::iter::once(Pool::Unreserved))
    }

    /// Takes an allocation (`used`, whose scalars are `need`) under a role with this `chain`
    /// out of the pools: scalars from the usable pools in order, then from the other roles'
    /// reservations; ranges from every pool.
    fn consume(&mut self, chain: &[RoleIdx], need: &mut [u64], used: &Resources, names: &Names<'_>) {
        let take = |bag: &mut Bag, need: &mut [u64]| {
            for (have, need) in bag.scalars.iter_mut().zip(need.iter_mut()) {
                let taken = (*have).min(*need);
                *have -= taken;
                *need -= taken;
            }
        };
        for role in chain {
            if let Ok(i) = self.reserved.binary_search_by_key(role, |(r, _)| *r) {
                take(&mut self.reserved[i].1, need);
            }
        }
        take(&mut self.unreserved, need);
        for (_, bag) in self.reserved.iter_mut().filter(|(role, _)| !chain.contains(role)) {
            take(bag, need);
        }
        if used.all_ranges().next().is_some() {
            names.subtract_ranges(&mut self.unreserved, used);
            self.reserved.iter_mut().for_each(|(_, bag)| names.subtract_ranges(bag, used));
        }
    }

    /// Everything free here, all pools together.
    fn free(&self) -> Bag {
        let mut free = self.unreserved.clone();
        for (_, pool) in &self.reserved {
            add_scalars(&mut free.scalars, &pool.scalars);
            free.add_ranges(pool);
        }
        free
    }

    /// Whether nothing is left to offer here.
    pub fn exhausted(&self) -> bool {
        self.unreserved.is_empty() && self.reserved.iter().all(|(_, pool)| pool.is_empty())
    }
}

/// Every (framework, role) pair whose framework may be offered resources for the role
/// (active, subscribed, not suppressed), grouped by framework, with the framework's
/// allocation under the role and its key in the role's order. Flat vectors, so 2,000
/// frameworks cost a few allocations per round rather than thousands.
pub(super) struct Members {
    /// Framework `f`'s memberships are `start[f]..start[f + 1]`.
    start: Vec<usize>,
    pub role: Vec<RoleIdx>,
    pub key: Vec<Share>,
    /// `width` scalars per membership.
    alloc: Vec<u64>,
    width: usize,
}

impl Members {
    fn new(snapshot: &AllocSnapshot, roles: &[&str], width: usize) -> Members {
        let mut members = Members { start: vec![0], role: Vec::new(), key: Vec::new(), alloc: Vec::new(), width };
        for view in snapshot.frameworks.values() {
            if view.active {
                let eligible = view.roles.difference(&view.suppressed_roles);
                members.role.extend(eligible.filter_map(|role| index_of(roles, role)));
            }
            members.start.push(members.role.len());
        }
        members.key = vec![Share(0.0); members.role.len()];
        members.alloc = vec![0; members.role.len() * width];
        members
    }

    fn frameworks(&self) -> usize {
        self.start.len() - 1
    }

    fn of(&self, fw: FwIdx) -> std::ops::Range<usize> {
        self.start[fw]..self.start[fw + 1]
    }

    /// Where `fw`'s membership of `role` is, if it has one.
    pub fn slot(&self, fw: FwIdx, role: RoleIdx) -> Option<usize> {
        self.of(fw).find(|&slot| self.role[slot] == role)
    }

    pub fn alloc(&self, slot: usize) -> &[u64] {
        &self.alloc[slot * self.width..(slot + 1) * self.width]
    }

    pub fn alloc_mut(&mut self, slot: usize) -> &mut [u64] {
        &mut self.alloc[slot * self.width..(slot + 1) * self.width]
    }
}
