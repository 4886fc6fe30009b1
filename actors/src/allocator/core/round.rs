//! The visit of one agent in one stage: which roles get what, and the bookkeeping of an offer.

use std::ops::Bound::{Excluded, Unbounded};

use super::Offer;
use super::names::Bag;
use super::spans::Spans;
use super::state::{Agent, AgentIdx, FwIdx, Pool, Role, RoleIdx, Share, State, add_scalars, dominant};
use crate::mesos::core::resources::RoleResources;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Roles below their quota guarantee, up to it.
    Quota,
    /// Everyone, by weighted DRF.
    Fair,
}

/// A prospective offer: the pools it takes from (all of their ranges, and scalars), and
/// its sum.
struct Draft {
    parts: Vec<Pool>,
    /// The scalars taken from `parts[i]`: `taken[i * width..(i + 1) * width]`.
    taken: Vec<u64>,
    total: Bag,
}

impl Draft {
    fn parts(&self) -> impl Iterator<Item = (Pool, &[u64])> + '_ {
        let width = self.total.scalars.len();
        self.parts.iter().enumerate().map(move |(i, &pool)| (pool, &self.taken[i * width..(i + 1) * width]))
    }
}

impl State<'_> {
    /// Offers `agent`'s free resources to the roles of `stage`, in order, each at most once.
    pub fn serve(&mut self, agent: AgentIdx, stage: Stage) {
        self.mark += 1;
        for &fw in &self.agents[agent].blocked {
            self.marks[fw] = self.mark;
        }
        let mut cursor = None;
        while !self.agents[agent].exhausted()
            && let Some(key) = self.next_role(stage, cursor)
        {
            cursor = Some(key);
            let role = key.1;
            if self.agents[agent].served.contains(&role) {
                continue;
            }
            if let Some((fw, draft)) = self.propose(agent, role, stage) {
                self.commit(agent, role, fw, draft);
            }
        }
    }

    /// The role after `cursor` in the stage's order. A role served on this visit moves to a
    /// later key and is met again; `serve` skips it then.
    fn next_role(&self, stage: Stage, cursor: Option<(Share, RoleIdx)>) -> Option<(Share, RoleIdx)> {
        let order = match stage {
            Stage::Quota => &self.quota,
            Stage::Fair => &self.fair,
        };
        match cursor {
            None => order.first().copied(),
            Some(after) => order.range((Excluded(after), Unbounded)).next().copied(),
        }
    }

    /// What `role` would be offered on `agent`, and which of its frameworks would take it.
    fn propose(&self, agent: AgentIdx, role: RoleIdx, stage: Stage) -> Option<(FwIdx, Draft)> {
        let agent = &self.agents[agent];
        if self.all_members_blocked(agent, role) {
            return None;
        }
        let draft = self.draft(agent, role, stage);
        if !self.allocatable(&draft.total) {
            return None;
        }
        if stage == Stage::Quota && !self.advances_guarantee(role, &draft.total) {
            return None;
        }
        let fw =
            self.roles[role].members.iter().map(|&(_, fw)| fw).find(|&fw| !self.filtered(agent, fw, &draft.total))?;
        Some((fw, draft))
    }

    /// Takes what the caps allow from the role's usable pools, reserved ones first.
    fn draft(&self, agent: &Agent<'_>, role: RoleIdx, stage: Stage) -> Draft {
        let role = &self.roles[role];
        let mut draft = Draft { parts: Vec::new(), taken: Vec::new(), total: self.names.zero() };
        for pool in agent.usable(&role.chain) {
            let from = agent.pool(pool);
            let start = draft.taken.len();
            for (k, &have) in from.scalars.iter().enumerate() {
                let mut cap = room(role, stage, k) - draft.total.scalars[k];
                if pool == Pool::Unreserved {
                    cap = cap.min(self.headroom(role, k));
                }
                let take = have.min(cap);
                draft.total.scalars[k] += take;
                draft.taken.push(take);
            }
            if draft.taken[start..].iter().all(|&take| take == 0) && from.ranges.iter().all(Spans::is_empty) {
                draft.taken.truncate(start);
                continue;
            }
            draft.total.add_ranges(from);
            draft.parts.push(pool);
        }
        draft
    }

    /// How much of scalar `k` an offer to `role` may take from the unreserved pool: what the
    /// role is owed plus whatever exceeds every role's outstanding guarantee.
    fn headroom(&self, role: &Role<'_>, k: usize) -> u64 {
        let owed = role.guarantee[k].saturating_sub(role.alloc[k]);
        owed.saturating_add(self.available[k].saturating_sub(self.required[k]))
    }

    /// Whether an offer of `bag` meets one of the minimums (or holds a scalar, without any).
    fn allocatable(&self, bag: &Bag) -> bool {
        if self.minimums.is_empty() { bag.has_scalars() } else { self.minimums.iter().any(|min| min.met_by(bag)) }
    }

    /// Whether `bag` holds some scalar that `role` is still owed.
    fn advances_guarantee(&self, role: RoleIdx, bag: &Bag) -> bool {
        self.roles[role].owed().zip(&bag.scalars).any(|(owed, &offered)| owed > 0 && offered > 0)
    }

    /// Whether every framework of `role` has a filter here that covers any offer (the common
    /// case once frameworks decline with long filters: no need to walk them one by one).
    fn all_members_blocked(&self, agent: &Agent<'_>, role: RoleIdx) -> bool {
        let members = self.roles[role].members.len();
        agent.blocked.len() >= members
            && agent.blocked.iter().filter(|&&fw| self.members.slot(fw, role).is_some()).count() == members
    }

    /// Whether a live filter keeps `fw` from being offered `offer` on `agent`.
    fn filtered(&self, agent: &Agent<'_>, fw: FwIdx, offer: &Bag) -> bool {
        if self.marks[fw] == self.mark {
            return true;
        }
        if let Some(on_agent) = agent.unsorted {
            return on_agent
                .get(self.frameworks.name(fw))
                .iter()
                .any(|entry| self.now_ms < entry.until_ms && self.names.within(offer, &entry.resources));
        }
        let start = agent.filters.partition_point(|(filtered, _)| *filtered < fw);
        agent.filters[start..]
            .iter()
            .take_while(|(filtered, _)| *filtered == fw)
            .any(|(_, resources)| self.names.within(offer, resources))
    }

    /// Makes the offer: takes it out of the agent's pools and the headroom, and charges it to
    /// the role's and the framework's shares.
    fn commit(&mut self, agent: AgentIdx, role: RoleIdx, fw: FwIdx, draft: Draft) {
        let mut reserved = RoleResources::new();
        let agent_state = &mut self.agents[agent];
        for (pool, taken) in draft.parts() {
            if let Pool::Reserved(i) = pool {
                let owner = self.roles[agent_state.reserved[i].0].name;
                reserved.insert(owner.to_owned(), self.names.resources(taken, &agent_state.pool(pool).ranges));
            } else {
                for (available, taken) in self.available.iter_mut().zip(taken) {
                    *available = available.saturating_sub(*taken);
                }
            }
            agent_state.pool_mut(pool).remove_offered(taken);
        }
        agent_state.served.push(role);
        self.offers.push(Offer {
            framework: self.frameworks.name(fw).to_owned(),
            role: self.roles[role].name.to_owned(),
            agent: agent_state.name.to_owned(),
            resources: self.names.resources(&draft.total.scalars, &draft.total.ranges),
            reserved,
        });
        self.charge(role, fw, &draft.total.scalars);
    }

    /// Adds `scalars` to the allocation of `role` and of its member `fw`, and moves both to
    /// their new places in the orders.
    fn charge(&mut self, role: RoleIdx, fw: FwIdx, scalars: &[u64]) {
        let state = &mut self.roles[role];
        self.fair.remove(&(state.key, role));
        self.quota.remove(&(state.key, role));
        for (k, &added) in scalars.iter().enumerate() {
            let owed_before = state.guarantee[k].saturating_sub(state.alloc[k]);
            state.alloc[k] = state.alloc[k].saturating_add(added);
            let owed_after = state.guarantee[k].saturating_sub(state.alloc[k]);
            self.required[k] = self.required[k].saturating_sub(owed_before - owed_after);
        }
        state.key = Share(dominant(&self.inv_total, &state.alloc) / state.weight);
        let slot = self.members.slot(fw, role).expect("offers go to members");
        state.members.remove(&(self.members.key[slot], fw));
        add_scalars(self.members.alloc_mut(slot), scalars);
        self.members.key[slot] = Share(dominant(&self.inv_total, self.members.alloc(slot)));
        state.members.insert((self.members.key[slot], fw));
        self.place_role(role);
    }
}

/// How much of scalar `k` an offer to `role` may take from all its pools together: the room
/// under its limit and, in stage 1, what its guarantee still owes.
fn room(role: &Role<'_>, stage: Stage, k: usize) -> u64 {
    let under_limit = role.limit.as_ref().map_or(u64::MAX, |limit| limit[k].saturating_sub(role.alloc[k]));
    if stage == Stage::Quota && role.guarantee[k] > 0 {
        under_limit.min(role.guarantee[k].saturating_sub(role.alloc[k]))
    } else {
        under_limit
    }
}
