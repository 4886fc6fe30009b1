//! Offer matching for the service scheduler, as a pure function: [`place`] takes a
//! [`PlacementSnapshot`] (the offers in hand and the instances waiting to launch), the time
//! and a seed, and returns a [`PlacementPlan`]: the launches, the offers to decline, and for
//! every demand each offer it looked at with the reasons it could not use it. The same
//! snapshot, time and seed give the same plan.
//!
//! # How offers are matched (Marathon's offer matcher manager and resource matcher)
//!
//! - **Order.** Offers are taken in snapshot order. Each offer is put to the demands of its
//!   allocation role (an offer made to role `R` only serves demands of role `R`; others
//!   ignore it, as Marathon's launchers do) in snapshot order — the launch queue's order,
//!   which the caller decides. A demand that launches an instance on the offer goes to the
//!   back of that offer's queue and is asked again after the others (round robin); a demand
//!   that cannot use the offer leaves its queue. Marathon shuffles the queue per offer;
//!   Flotilla keeps it stable so that the caller's order (oldest first, say) is honoured.
//! - **Per offer cap.** At most [`PlacementSnapshot::max_instances_per_offer`] launches per
//!   offer, over all demands (Marathon's `--max_instances_per_offer`); once reached, the
//!   demands not yet asked are not asked, and record nothing for it.
//! - **Backoff.** A demand whose `delay_until_ms` is after `now_ms` launches nothing; each
//!   offer of its role records a rejection for it with the single reason [`Reason::Delayed`].
//! - **One instance per match.** A match takes one instance's resources out of what is left
//!   of the offer, and the instance counts for the demand's constraints from then on, so
//!   several instances of one app may land on one offer while resources, constraints and the
//!   cap allow.
//! - **Roles.** A demand uses resources reserved for one of its accepted roles
//!   (`acceptedResourceRoles`; empty means Marathon's default, `*` and the demand's role).
//!   Scalars are taken from the accepted reserved roles first (by name), then from `*`; a
//!   launch may combine several roles, and every resource taken keeps its role.
//! - **Ports.** Each [`PortRequest`] is a fixed host port (`requirePorts`, or a port mapping's
//!   non-zero `hostPort`), which must be offered, a random host port, or no host port.
//!   Random ports are consecutive from a random start in a seeded shuffle of the offer's
//!   accepted port ranges, wrapping around, and skip the request's fixed ports (Marathon's
//!   port matcher).
//!
//! # Why an offer is rejected ([`Reason`])
//!
//! All failing checks are recorded, in funnel order: [`Reason::UnfulfilledRole`] when no
//! resource left in the offer has an accepted role, `Insufficient{Cpus,Memory,Disk,Gpus}` per
//! scalar the accepted roles cannot cover (scalars the demand does not need are not checked),
//! [`Reason::UnfulfilledConstraint`] when a constraint refuses the agent or the agent lies in
//! a remote region (below), [`Reason::DeclinedScarceResources`] when GPU scheduling is
//! restricted and a demand without GPUs meets an offer with some. Only when every one of
//! those passes are ports matched, and [`Reason::InsufficientPorts`] recorded if they fail.
//!
//! **Counting, Marathon's way.** An offer a demand cannot use counts once, under the first of
//! its reasons in the funnel order of [`Reason::MARATHON_FUNNEL`] ([`DemandReport::reject_summary`]).
//! [`LaunchAttemptStats`] accumulates plans into `/v2/queue`'s `processedOffersSummary`: every
//! attempt is a processed offer, every rejection an unused one, and the last rejection per
//! agent feeds `rejectSummaryLastOffers` and `lastUnusedOffers`.
//!
//! # Where Flotilla differs from Marathon
//!
//! - The demand order is the snapshot's, not a per-offer shuffle (above).
//! - Offers from a remote region (the agent's region set and not [`PlacementSnapshot::local_region`])
//!   serve only demands with an `@region` or `@zone` constraint, as in Marathon, but are
//!   recorded as [`Reason::UnfulfilledConstraint`] (Marathon records no reason at all).
//! - [`Reason::Delayed`] is Flotilla's: Marathon does not look at offers while backed off, so
//!   [`LaunchAttemptStats`] skips those rejections too, and `/v2/queue` shows the backoff in
//!   `delay` only. The plan keeps them so a caller can see every offer a delay cost.
//! - No maintenance windows, persistent volumes or reservations for resident apps yet:
//!   [`Reason::AgentMaintenance`] and [`Reason::NoCorrespondingReservationFound`] are rendered
//!   (with zero counts) but never produced.
//! - A fixed host port asked twice by one demand cannot be taken twice: the offer is
//!   rejected with [`Reason::InsufficientPorts`] (Marathon would build an invalid launch).
//! - `lastUnusedOffers` shows the offer as the snapshot holds it, not what was left of it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use super::backoff::QueueDelay;
use super::constraints::{AgentFacts, AttributeValue, Constraint};
use crate::mesos::core::resources::{MILLI, to_milli};
use crate::mesos::core::{Ranges, Resources, RoleResources, UNRESERVED};

/// Marathon's default `--max_instances_per_offer`.
pub const DEFAULT_MAX_INSTANCES_PER_OFFER: u32 = 5;

/// One offer, as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementOffer {
    pub id: String,
    pub agent_id: String,
    /// The role the offer was allocated to; only demands of this role look at it.
    pub role: String,
    /// The agent's hostname, fault domain and attributes.
    pub agent: AgentFacts,
    /// What is offered, by the role it is reserved for ([`UNRESERVED`] for none).
    pub resources: RoleResources,
}

/// What one instance needs (scalars in thousandths, as [`Resources`] keeps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceResources {
    pub cpus_milli: u64,
    pub mem_milli: u64,
    pub disk_milli: u64,
    /// Whole GPUs.
    pub gpus: u64,
}

impl InstanceResources {
    /// From an app's `cpus`, `mem` (MiB), `disk` (MiB) and `gpus`.
    pub fn new(cpus: f64, mem_mb: f64, disk_mb: f64, gpus: u64) -> InstanceResources {
        InstanceResources {
            cpus_milli: to_milli(cpus),
            mem_milli: to_milli(mem_mb),
            disk_milli: to_milli(disk_mb),
            gpus,
        }
    }

    /// The scalars to match, with the reason each one's shortfall is reported under, in
    /// Marathon's order; zero needs are not matched at all.
    fn scalar_needs(&self) -> [(&'static str, u64, Reason); 4] {
        [
            ("cpus", self.cpus_milli, Reason::InsufficientCpus),
            ("mem", self.mem_milli, Reason::InsufficientMemory),
            ("gpus", self.gpus.saturating_mul(MILLI), Reason::InsufficientGpus),
            ("disk", self.disk_milli, Reason::InsufficientDisk),
        ]
    }
}

/// Which host port an instance's port needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPort {
    /// Any port the offer has (`requirePorts: false`, or a mapping's `hostPort: 0`).
    Any,
    /// Exactly this port (`requirePorts: true`, or a mapping's non-zero `hostPort`).
    Fixed(u64),
    /// No host port (a container port mapping without `hostPort`).
    None,
}

/// One port an instance needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// The port's name (`portDefinitions[].name`, `portMappings[].name`), for the caller.
    pub name: Option<String>,
    pub host_port: HostPort,
}

impl PortRequest {
    pub fn any(name: Option<&str>) -> PortRequest {
        PortRequest { name: name.map(str::to_owned), host_port: HostPort::Any }
    }

    pub fn fixed(port: u64, name: Option<&str>) -> PortRequest {
        PortRequest { name: name.map(str::to_owned), host_port: HostPort::Fixed(port) }
    }

    /// `portDefinitions` (port, name) of a host-networking app: with `requirePorts` each
    /// non-zero port is the host port, otherwise every port gets a random host port.
    pub fn from_port_definitions(ports: &[(u64, Option<String>)], require_ports: bool) -> Vec<PortRequest> {
        ports
            .iter()
            .map(|(port, name)| {
                let host_port = if require_ports && *port != 0 { HostPort::Fixed(*port) } else { HostPort::Any };
                PortRequest { name: name.clone(), host_port }
            })
            .collect()
    }
}

/// Instances of one run spec (at one role) waiting to launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub run_spec_id: String,
    /// The version the instances launch with (carried into the launches).
    pub version: String,
    /// The role the instances launch under; only offers allocated to it are looked at.
    pub role: String,
    /// The app's instance count (`GROUP_BY n` divides it among its groups).
    pub instances: u32,
    /// How many instances are still to launch.
    pub to_launch: u32,
    pub resources: InstanceResources,
    pub ports: Vec<PortRequest>,
    pub constraints: Vec<Constraint>,
    /// `acceptedResourceRoles`; empty means `*` plus [`Demand::role`].
    pub accepted_resource_roles: BTreeSet<String>,
    /// The agents of the app's instances that count for its constraints, one entry per
    /// instance (Marathon counts the instances of the current configuration that are not
    /// lost or still waiting; the caller picks them).
    pub placed: Vec<AgentFacts>,
    /// The backoff: nothing launches before this time.
    pub delay_until_ms: Option<u64>,
}

impl Demand {
    /// The roles whose resources this demand may use.
    pub fn accepted_roles(&self) -> BTreeSet<String> {
        if self.accepted_resource_roles.is_empty() {
            BTreeSet::from([UNRESERVED.to_owned(), self.role.clone()])
        } else {
            self.accepted_resource_roles.clone()
        }
    }

    fn is_delayed(&self, now_ms: u64) -> bool {
        self.delay_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Whether an offer from a remote region may serve this demand: only with a fault-domain
    /// constraint (the app asked for regions explicitly).
    fn accepts_remote_regions(&self) -> bool {
        self.constraints.iter().any(|c| c.field().is_fault_domain())
    }
}

/// What to do with a demand without GPUs and an offer with some (Marathon's
/// `--gpu_scheduling_behavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuSchedulingBehavior {
    /// Keep GPU agents for GPU apps: decline (Marathon's default).
    #[default]
    Restricted,
    /// Use them like any other agent.
    Unrestricted,
}

/// Everything one placement depends on besides the time and the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementSnapshot {
    pub offers: Vec<PlacementOffer>,
    /// In launch-queue order: earlier demands are asked first.
    pub demands: Vec<Demand>,
    pub max_instances_per_offer: u32,
    /// The scheduler's own region (Mesos master's fault domain). As in Marathon, an offer
    /// whose agent names a region other than this one — any region, when this is `None` —
    /// serves only demands with an `@region`/`@zone` constraint; offers without a region
    /// serve everyone.
    pub local_region: Option<String>,
    pub gpu_scheduling: GpuSchedulingBehavior,
}

impl PlacementSnapshot {
    /// A snapshot with Marathon's defaults for the settings.
    pub fn new(offers: Vec<PlacementOffer>, demands: Vec<Demand>) -> PlacementSnapshot {
        PlacementSnapshot {
            offers,
            demands,
            max_instances_per_offer: DEFAULT_MAX_INSTANCES_PER_OFFER,
            local_region: None,
            gpu_scheduling: GpuSchedulingBehavior::default(),
        }
    }
}

/// Why a demand could not use an offer. The variant order is the funnel order: an offer
/// rejected for several reasons counts under the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Reason {
    /// The demand is backed off (Flotilla's; see the module documentation).
    Delayed,
    UnfulfilledRole,
    UnfulfilledConstraint,
    NoCorrespondingReservationFound,
    AgentMaintenance,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    DeclinedScarceResources,
}

impl Reason {
    /// Marathon's reasons in its funnel order, as `/v2/queue` lists them.
    pub const MARATHON_FUNNEL: [Reason; 10] = [
        Reason::UnfulfilledRole,
        Reason::UnfulfilledConstraint,
        Reason::NoCorrespondingReservationFound,
        Reason::AgentMaintenance,
        Reason::InsufficientCpus,
        Reason::InsufficientMemory,
        Reason::InsufficientDisk,
        Reason::InsufficientGpus,
        Reason::InsufficientPorts,
        Reason::DeclinedScarceResources,
    ];

    /// The name `/v2/queue` shows.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Delayed => "Delayed",
            Reason::UnfulfilledRole => "UnfulfilledRole",
            Reason::UnfulfilledConstraint => "UnfulfilledConstraint",
            Reason::NoCorrespondingReservationFound => "NoCorrespondingReservationFound",
            Reason::AgentMaintenance => "AgentMaintenance",
            Reason::InsufficientCpus => "InsufficientCpus",
            Reason::InsufficientMemory => "InsufficientMemory",
            Reason::InsufficientDisk => "InsufficientDisk",
            Reason::InsufficientGpus => "InsufficientGpus",
            Reason::InsufficientPorts => "InsufficientPorts",
            Reason::DeclinedScarceResources => "DeclinedScarceResources",
        }
    }
}

/// One instance to launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub offer_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub run_spec_id: String,
    pub version: String,
    pub role: String,
    /// Exactly what the instance takes from the offer, by reservation role (ports included).
    pub resources: RoleResources,
    /// One entry per [`PortRequest`] of the demand, in order: the host port, or `None` for a
    /// request without one.
    pub host_ports: Vec<Option<u64>>,
}

/// What came of putting one offer to one demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    /// Every reason found, in funnel order (never empty).
    Rejected(Vec<Reason>),
}

/// One offer put to one demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchAttempt {
    pub offer_id: String,
    pub agent_id: String,
    pub outcome: Outcome,
}

/// What placement did for one demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemandReport {
    pub run_spec_id: String,
    pub role: String,
    pub launched: u32,
    /// Instances still waiting after this plan.
    pub left_to_launch: u32,
    /// Set when the backoff kept the demand from launching.
    pub delayed_until_ms: Option<u64>,
    /// Every offer put to the demand, in the order they were (an offer appears once per
    /// instance launched on it, plus once more if it was then rejected).
    pub attempts: Vec<MatchAttempt>,
}

impl DemandReport {
    /// Rejections counted Marathon's way: each under the first reason of its funnel.
    pub fn reject_summary(&self) -> BTreeMap<Reason, u32> {
        let mut summary = BTreeMap::new();
        for attempt in &self.attempts {
            if let Outcome::Rejected(reasons) = &attempt.outcome
                && let Some(&first) = reasons.iter().min()
            {
                let slot = summary.entry(first).or_insert(0u32);
                *slot = slot.saturating_add(1);
            }
        }
        summary
    }

    /// How many offers were rejected.
    pub fn rejected(&self) -> usize {
        self.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Rejected(_))).count()
    }
}

/// The result of one placement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementPlan {
    /// In the order they were matched (offer by offer).
    pub launches: Vec<Launch>,
    /// Offers nothing launched on, in snapshot order: decline them.
    pub unused_offers: Vec<String>,
    /// One report per demand, in snapshot order.
    pub demands: Vec<DemandReport>,
}

/// A snapshot placement cannot work with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    #[error("offer `{0}` appears more than once in the snapshot")]
    DuplicateOffer(String),
    /// One demand per run spec: its constraints count all its instances together.
    #[error("run spec `{0}` has more than one demand in the snapshot")]
    DuplicateDemand(String),
}

/// Matches the snapshot's offers to its demands (see the module documentation for the rules).
/// `seed` only chooses random host ports.
pub fn place(snapshot: &PlacementSnapshot, now_ms: u64, seed: u64) -> Result<PlacementPlan, PlacementError> {
    validate(snapshot)?;
    let mut demands: Vec<DemandState> = snapshot.demands.iter().map(|d| DemandState::new(d, now_ms)).collect();
    let mut plan = PlacementPlan::default();
    for (index, offer) in snapshot.offers.iter().enumerate() {
        let mut rng = SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let launched = match_offer(snapshot, offer, &mut demands, &mut rng, &mut plan.launches);
        if launched == 0 {
            plan.unused_offers.push(offer.id.clone());
        }
    }
    plan.demands = demands.into_iter().map(|d| d.report).collect();
    Ok(plan)
}

fn validate(snapshot: &PlacementSnapshot) -> Result<(), PlacementError> {
    let mut offers = BTreeSet::new();
    for offer in &snapshot.offers {
        if !offers.insert(offer.id.as_str()) {
            return Err(PlacementError::DuplicateOffer(offer.id.clone()));
        }
    }
    let mut demands = BTreeSet::new();
    for demand in &snapshot.demands {
        if !demands.insert(demand.run_spec_id.as_str()) {
            return Err(PlacementError::DuplicateDemand(demand.run_spec_id.clone()));
        }
    }
    Ok(())
}

/// A demand's progress through one placement.
struct DemandState<'a> {
    demand: &'a Demand,
    accepted_roles: BTreeSet<String>,
    delayed: bool,
    left: u32,
    placed: Vec<AgentFacts>,
    report: DemandReport,
}

impl<'a> DemandState<'a> {
    fn new(demand: &'a Demand, now_ms: u64) -> DemandState<'a> {
        let delayed = demand.is_delayed(now_ms) && demand.to_launch > 0;
        DemandState {
            demand,
            accepted_roles: demand.accepted_roles(),
            delayed,
            left: demand.to_launch,
            placed: demand.placed.clone(),
            report: DemandReport {
                run_spec_id: demand.run_spec_id.clone(),
                role: demand.role.clone(),
                launched: 0,
                left_to_launch: demand.to_launch,
                delayed_until_ms: if delayed { demand.delay_until_ms } else { None },
                attempts: Vec::new(),
            },
        }
    }

    fn wants(&self, offer: &PlacementOffer) -> bool {
        self.left > 0 && self.demand.role == offer.role
    }

    fn record(&mut self, offer: &PlacementOffer, outcome: Outcome) {
        self.report.attempts.push(MatchAttempt {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            outcome,
        });
    }

    fn launched_one(&mut self, offer: &PlacementOffer) {
        self.left = self.left.saturating_sub(1);
        self.report.launched = self.report.launched.saturating_add(1);
        self.report.left_to_launch = self.left;
        self.placed.push(offer.agent.clone());
        self.record(offer, Outcome::Matched);
    }
}

/// Puts one offer to the demands of its role, round robin, until none can use what is left
/// or the cap is reached. Returns how many instances launched on it.
fn match_offer(
    snapshot: &PlacementSnapshot,
    offer: &PlacementOffer,
    demands: &mut [DemandState<'_>],
    rng: &mut SplitMix64,
    launches: &mut Vec<Launch>,
) -> u32 {
    let mut queue = VecDeque::new();
    for (index, state) in demands.iter_mut().enumerate() {
        if !state.wants(offer) {
            continue;
        }
        if state.delayed {
            state.record(offer, Outcome::Rejected(vec![Reason::Delayed]));
        } else {
            queue.push_back(index);
        }
    }
    let mut left = without_empty(&offer.resources);
    let mut launched = 0;
    while launched < snapshot.max_instances_per_offer {
        let Some(index) = queue.pop_front() else { break };
        let Some(state) = demands.get_mut(index) else { break };
        match match_instance(snapshot, offer, &left, state, rng) {
            Ok(taken) => {
                subtract(&mut left, &taken.resources);
                launches.push(launch(offer, state.demand, taken));
                state.launched_one(offer);
                launched += 1;
                if state.left > 0 {
                    queue.push_back(index);
                }
            }
            Err(reasons) => state.record(offer, Outcome::Rejected(reasons)),
        }
    }
    launched
}

fn launch(offer: &PlacementOffer, demand: &Demand, taken: Taken) -> Launch {
    Launch {
        offer_id: offer.id.clone(),
        agent_id: offer.agent_id.clone(),
        hostname: offer.agent.hostname.clone(),
        run_spec_id: demand.run_spec_id.clone(),
        version: demand.version.clone(),
        role: demand.role.clone(),
        resources: taken.resources,
        host_ports: taken.host_ports,
    }
}

/// What one matched instance takes.
struct Taken {
    resources: RoleResources,
    host_ports: Vec<Option<u64>>,
}

/// Matches one instance of `state`'s demand against what is `left` of the offer: every
/// check but ports first (all failures recorded), then ports.
fn match_instance(
    snapshot: &PlacementSnapshot,
    offer: &PlacementOffer,
    left: &RoleResources,
    state: &DemandState<'_>,
    rng: &mut SplitMix64,
) -> Result<Taken, Vec<Reason>> {
    let demand = state.demand;
    let roles = &state.accepted_roles;
    let mut reasons = BTreeSet::new();
    for (name, need, reason) in demand.resources.scalar_needs() {
        if need > 0 && available_scalar(left, roles, name) < need {
            reasons.insert(reason);
        }
    }
    if !left.keys().any(|role| roles.contains(role)) {
        reasons.insert(Reason::UnfulfilledRole);
    }
    if !in_usable_region(snapshot, offer, demand) || !meets_constraints(offer, state) {
        reasons.insert(Reason::UnfulfilledConstraint);
    }
    if wastes_gpus(snapshot, left, demand) {
        reasons.insert(Reason::DeclinedScarceResources);
    }
    if !reasons.is_empty() {
        return Err(reasons.into_iter().collect());
    }
    let ports = match_ports(left, roles, &demand.ports, rng).ok_or_else(|| vec![Reason::InsufficientPorts])?;
    let mut resources = take_scalars(left, roles, &demand.resources);
    for (role, ranges) in ports.by_role {
        resources.entry(role).or_default().add_ranges("ports", &ranges);
    }
    Ok(Taken { resources, host_ports: ports.host_ports })
}

fn meets_constraints(offer: &PlacementOffer, state: &DemandState<'_>) -> bool {
    let instances = state.demand.instances;
    state.demand.constraints.iter().all(|c| c.allows(&offer.agent, &state.placed, instances))
}

/// Offers from the local region (or with no region, or when the scheduler has none) serve
/// everyone; offers from elsewhere only demands that constrain regions or zones.
fn in_usable_region(snapshot: &PlacementSnapshot, offer: &PlacementOffer, demand: &Demand) -> bool {
    let local = match &offer.agent.region {
        None => true,
        Some(region) => snapshot.local_region.as_ref() == Some(region),
    };
    local || demand.accepts_remote_regions()
}

fn wastes_gpus(snapshot: &PlacementSnapshot, left: &RoleResources, demand: &Demand) -> bool {
    snapshot.gpu_scheduling == GpuSchedulingBehavior::Restricted
        && demand.resources.gpus == 0
        && left.values().any(|r| r.scalar_milli("gpus") > 0)
}

/// The order roles are drawn from: accepted reservations first (by name), then unreserved.
fn draw_order<'r>(left: &'r RoleResources, roles: &BTreeSet<String>) -> Vec<(&'r str, &'r Resources)> {
    let reserved = left.iter().filter(|(role, _)| role.as_str() != UNRESERVED && roles.contains(*role));
    let unreserved = left.iter().filter(|(role, _)| role.as_str() == UNRESERVED && roles.contains(*role));
    reserved.chain(unreserved).map(|(role, r)| (role.as_str(), r)).collect()
}

fn available_scalar(left: &RoleResources, roles: &BTreeSet<String>, name: &str) -> u64 {
    draw_order(left, roles).iter().fold(0u64, |sum, (_, r)| sum.saturating_add(r.scalar_milli(name)))
}

/// Takes the demand's scalars, role by role in draw order (the caller checked they suffice).
fn take_scalars(left: &RoleResources, roles: &BTreeSet<String>, needs: &InstanceResources) -> RoleResources {
    let mut taken = RoleResources::new();
    for (name, need, _) in needs.scalar_needs() {
        let mut still = need;
        for (role, resources) in draw_order(left, roles) {
            if still == 0 {
                break;
            }
            let portion = still.min(resources.scalar_milli(name));
            if portion > 0 {
                taken.entry(role.to_owned()).or_default().add_scalar(name, portion);
                still -= portion;
            }
        }
    }
    taken
}

fn without_empty(resources: &RoleResources) -> RoleResources {
    resources.iter().filter(|(_, r)| !r.is_empty()).map(|(role, r)| (role.clone(), r.clone())).collect()
}

fn subtract(left: &mut RoleResources, taken: &RoleResources) {
    for (role, resources) in taken {
        if let Some(mine) = left.get_mut(role) {
            mine.subtract(resources);
        }
    }
    left.retain(|_, r| !r.is_empty());
}

/// The host ports chosen for one instance.
struct PortsMatch {
    host_ports: Vec<Option<u64>>,
    by_role: BTreeMap<String, Ranges>,
}

/// An offered port range with the role it is reserved for.
#[derive(Clone, Copy, Debug)]
struct OfferedRange<'r> {
    role: &'r str,
    begin: u64,
    end: u64,
}

impl OfferedRange<'_> {
    fn len(&self) -> u128 {
        u128::from(self.end - self.begin) + 1
    }
}

/// Chooses host ports: fixed ones must be offered (once each), random ones come from the
/// seeded sequence of [`random_port_sequence`] minus the fixed ones. `None` if they do not fit.
fn match_ports(
    left: &RoleResources,
    roles: &BTreeSet<String>,
    requests: &[PortRequest],
    rng: &mut SplitMix64,
) -> Option<PortsMatch> {
    if requests.is_empty() {
        return Some(PortsMatch { host_ports: Vec::new(), by_role: BTreeMap::new() });
    }
    let offered: Vec<OfferedRange<'_>> = draw_order(left, roles)
        .into_iter()
        .flat_map(|(role, r)| {
            r.all_ranges()
                .filter(|(name, _)| *name == "ports")
                .flat_map(move |(_, ranges)| ranges.iter().map(move |(begin, end)| OfferedRange { role, begin, end }))
                .collect::<Vec<_>>()
        })
        .collect();
    let fixed: Vec<u64> = requests
        .iter()
        .filter_map(|r| match r.host_port {
            HostPort::Fixed(port) => Some(port),
            _ => None,
        })
        .collect();
    let fixed_set: BTreeSet<u64> = fixed.iter().copied().collect();
    if fixed_set.len() != fixed.len() {
        return None;
    }
    let wanted_random = requests.iter().filter(|r| r.host_port == HostPort::Any).count();
    let mut random =
        random_port_sequence(&offered, rng).filter(|(port, _)| !fixed_set.contains(port)).take(wanted_random);
    let mut host_ports = Vec::with_capacity(requests.len());
    let mut by_role: BTreeMap<String, Ranges> = BTreeMap::new();
    for request in requests {
        let chosen = match request.host_port {
            HostPort::None => None,
            HostPort::Fixed(port) => Some((port, role_offering(&offered, port)?)),
            HostPort::Any => Some(random.next()?),
        };
        if let Some((port, role)) = chosen {
            by_role.entry(role.to_owned()).or_default().insert(port, port);
        }
        host_ports.push(chosen.map(|(port, _)| port));
    }
    Some(PortsMatch { host_ports, by_role })
}

fn role_offering<'r>(offered: &[OfferedRange<'r>], port: u64) -> Option<&'r str> {
    offered.iter().find(|r| r.begin <= port && port <= r.end).map(|r| r.role)
}

/// Every offered port once, as Marathon draws random ports: the ranges shuffled, then one
/// long sequence from a random start, wrapping around. Consecutive ports keep launches'
/// ranges few; the random start keeps apps from reusing a just-freed port at once.
fn random_port_sequence<'r>(
    offered: &[OfferedRange<'r>],
    rng: &mut SplitMix64,
) -> impl Iterator<Item = (u64, &'r str)> + use<'r> {
    let mut shuffled = offered.to_vec();
    rng.shuffle(&mut shuffled);
    let total: u128 = shuffled.iter().map(OfferedRange::len).sum();
    let mut start = if total == 0 { 0 } else { rng.below(total) };
    let mut start_range = 0;
    for (i, range) in shuffled.iter().enumerate() {
        if start < range.len() {
            start_range = i;
            break;
        }
        start -= range.len();
    }
    // `start` is now an offset inside `shuffled[start_range]`, below its length.
    let offset = u64::try_from(start).unwrap_or(0);
    let (head, tail) = shuffled.split_at(start_range.min(shuffled.len()));
    let mut pieces: Vec<OfferedRange<'r>> = Vec::with_capacity(shuffled.len() + 1);
    if let Some((first, after)) = tail.split_first() {
        pieces.push(OfferedRange { begin: first.begin + offset, ..*first });
        pieces.extend_from_slice(after);
        pieces.extend_from_slice(head);
        if offset > 0 {
            pieces.push(OfferedRange { end: first.begin + offset - 1, ..*first });
        }
    }
    pieces.into_iter().flat_map(|r| (r.begin..=r.end).map(move |port| (port, r.role)))
}

/// SplitMix64 (Steele, Lea and Flood, 2014): placement's only randomness, a function of the
/// seed alone.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (multiply-shift; unbiased enough for `n ≤ 2^64`, and still in range
    /// for the absurd larger counts a snapshot could name).
    fn below(&mut self, n: u128) -> u128 {
        u128::from(self.next_u64()).saturating_mul(n) >> 64
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u128 + 1) as usize;
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launch-attempt statistics and the `/v2/queue` item.
// ---------------------------------------------------------------------------------------------

/// An offer a demand could not use, as `lastUnusedOffers` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnusedOffer {
    pub offer: OfferJson,
    pub reasons: Vec<Reason>,
    pub at_ms: u64,
}

/// The offer-matching statistics of one run spec's launch attempt (from the moment it has
/// instances to launch until it has none; start a new one then). Feed it every plan's
/// [`DemandReport`] for the run spec with [`LaunchAttemptStats::record`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchAttemptStats {
    since_ms: u64,
    processed_offers: u32,
    unused_offers: u32,
    /// Every rejection of the attempt, under its first funnel reason.
    reject_summary: BTreeMap<Reason, u32>,
    last_used_offer_at_ms: Option<u64>,
    last_unused_offer_at_ms: Option<u64>,
    /// The last rejection per agent id.
    last_unused_offers: BTreeMap<String, UnusedOffer>,
}

impl LaunchAttemptStats {
    /// A launch attempt that started at `since_ms` (when the first of its instances began
    /// waiting).
    pub fn new(since_ms: u64) -> LaunchAttemptStats {
        LaunchAttemptStats { since_ms, ..LaunchAttemptStats::default() }
    }

    /// Adds one plan's attempts for this run spec; `offers` are the plan's snapshot offers
    /// (to show rejected ones in `lastUnusedOffers`). Rejections for [`Reason::Delayed`]
    /// alone are not counted: Marathon does not look at offers while backed off.
    pub fn record(&mut self, report: &DemandReport, offers: &[PlacementOffer], now_ms: u64) {
        for attempt in &report.attempts {
            match &attempt.outcome {
                Outcome::Matched => {
                    self.processed_offers = self.processed_offers.saturating_add(1);
                    self.last_used_offer_at_ms = Some(now_ms);
                }
                Outcome::Rejected(reasons) if reasons.as_slice() == [Reason::Delayed] => {}
                Outcome::Rejected(reasons) => self.record_rejection(attempt, reasons, offers, now_ms),
            }
        }
    }

    fn record_rejection(&mut self, attempt: &MatchAttempt, reasons: &[Reason], offers: &[PlacementOffer], now_ms: u64) {
        self.processed_offers = self.processed_offers.saturating_add(1);
        self.unused_offers = self.unused_offers.saturating_add(1);
        self.last_unused_offer_at_ms = Some(now_ms);
        if let Some(&first) = reasons.iter().min() {
            let slot = self.reject_summary.entry(first).or_insert(0);
            *slot = slot.saturating_add(1);
        }
        let offer = offers.iter().find(|o| o.id == attempt.offer_id).map_or_else(
            || OfferJson { id: attempt.offer_id.clone(), agent_id: attempt.agent_id.clone(), ..OfferJson::default() },
            OfferJson::from_offer,
        );
        let unused = UnusedOffer { offer, reasons: reasons.to_vec(), at_ms: now_ms };
        self.last_unused_offers.insert(attempt.agent_id.clone(), unused);
    }

    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    pub fn processed_offers(&self) -> u32 {
        self.processed_offers
    }

    pub fn unused_offers(&self) -> u32 {
        self.unused_offers
    }

    /// Every rejection of the attempt, under its first funnel reason.
    pub fn reject_summary_launch_attempt(&self) -> &BTreeMap<Reason, u32> {
        &self.reject_summary
    }

    /// The last rejection per agent, under its first funnel reason.
    pub fn reject_summary_last_offers(&self) -> BTreeMap<Reason, u32> {
        let mut summary = BTreeMap::new();
        for unused in self.last_unused_offers.values() {
            if let Some(&first) = unused.reasons.iter().min() {
                let slot = summary.entry(first).or_insert(0u32);
                *slot = slot.saturating_add(1);
            }
        }
        summary
    }

    /// The last rejection per agent, by agent id.
    pub fn last_unused_offers(&self) -> &BTreeMap<String, UnusedOffer> {
        &self.last_unused_offers
    }

    /// `/v2/queue`'s `processedOffersSummary`.
    pub fn processed_offers_summary(&self) -> ProcessedOffersSummary {
        let last_count = u32::try_from(self.last_unused_offers.len()).unwrap_or(u32::MAX);
        ProcessedOffersSummary {
            processed_offers_count: self.processed_offers,
            unused_offers_count: self.unused_offers,
            last_unused_offer_at: self.last_unused_offer_at_ms.map(iso8601_millis),
            last_used_offer_at: self.last_used_offer_at_ms.map(iso8601_millis),
            reject_summary_last_offers: declined_offer_steps(last_count, &self.reject_summary_last_offers()),
            reject_summary_launch_attempt: declined_offer_steps(self.processed_offers, &self.reject_summary),
        }
    }

    /// The `/v2/queue` item of a run spec with `count` instances left to launch under `role`.
    /// `run_spec` is flattened into the item: pass a value that serializes as `{"app": …}` or
    /// `{"pod": …}`. `lastUnusedOffers` is included with `embed_last_unused_offers` only
    /// (`?embed=lastUnusedOffers`).
    pub fn queue_item<S: Serialize>(
        &self,
        run_spec: S,
        count: u32,
        role: &str,
        delay: QueueDelay,
        embed_last_unused_offers: bool,
    ) -> QueueItem<S> {
        let last_unused_offers = embed_last_unused_offers.then(|| {
            self.last_unused_offers
                .values()
                .map(|u| UnusedOfferJson {
                    offer: u.offer.clone(),
                    reason: u.reasons.iter().map(|r| r.name()).collect(),
                    timestamp: iso8601_millis(u.at_ms),
                })
                .collect()
        });
        QueueItem {
            run_spec,
            count,
            role: role.to_owned(),
            delay,
            since: iso8601_millis(self.since_ms),
            processed_offers_summary: self.processed_offers_summary(),
            last_unused_offers,
        }
    }
}

/// Marathon's funnel rendering: each reason with how many offers it declined and how many
/// were still in the funnel when it was reached (`processed` shrinks by each step's count).
pub fn declined_offer_steps(processed: u32, summary: &BTreeMap<Reason, u32>) -> Vec<DeclinedOfferStep> {
    let mut still = processed;
    Reason::MARATHON_FUNNEL
        .iter()
        .map(|&reason| {
            let declined = summary.get(&reason).copied().unwrap_or(0);
            let step = DeclinedOfferStep { reason: reason.name(), declined, processed: still };
            still = still.saturating_sub(declined);
            step
        })
        .collect()
}

/// One `/v2/queue` entry (`QueueApp`/`QueuePod` in Marathon's RAML), ready to serialize.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueItem<S> {
    #[serde(flatten)]
    pub run_spec: S,
    /// Instances left to launch.
    pub count: u32,
    pub role: String,
    pub delay: QueueDelay,
    /// When the launch attempt started.
    pub since: String,
    pub processed_offers_summary: ProcessedOffersSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_unused_offers: Option<Vec<UnusedOfferJson>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedOffersSummary {
    pub processed_offers_count: u32,
    pub unused_offers_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_unused_offer_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_offer_at: Option<String>,
    pub reject_summary_last_offers: Vec<DeclinedOfferStep>,
    pub reject_summary_launch_attempt: Vec<DeclinedOfferStep>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeclinedOfferStep {
    pub reason: &'static str,
    pub declined: u32,
    pub processed: u32,
}

/// `lastUnusedOffers[]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnusedOfferJson {
    pub offer: OfferJson,
    pub reason: Vec<&'static str>,
    pub timestamp: String,
}

/// Marathon's `Offer` (offer.raml).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferJson {
    pub id: String,
    pub hostname: String,
    pub agent_id: String,
    pub resources: Vec<OfferResourceJson>,
    pub attributes: Vec<AgentAttributeJson>,
}

impl OfferJson {
    pub fn from_offer(offer: &PlacementOffer) -> OfferJson {
        let mut resources = Vec::new();
        for (role, bag) in &offer.resources {
            for (name, milli) in bag.scalars() {
                resources.push(OfferResourceJson {
                    name: name.to_owned(),
                    role: role.clone(),
                    scalar: Some(milli as f64 / MILLI as f64),
                    ranges: None,
                });
            }
            for (name, ranges) in bag.all_ranges() {
                resources.push(OfferResourceJson {
                    name: name.to_owned(),
                    role: role.clone(),
                    scalar: None,
                    ranges: Some(NumberRange::list(ranges)),
                });
            }
        }
        let attributes =
            offer.agent.attributes.iter().map(|(name, value)| AgentAttributeJson::new(name, value)).collect();
        OfferJson {
            id: offer.id.clone(),
            hostname: offer.agent.hostname.clone(),
            agent_id: offer.agent_id.clone(),
            resources,
            attributes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OfferResourceJson {
    pub name: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scalar: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<NumberRange>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentAttributeJson {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scalar: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<NumberRange>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
}

impl AgentAttributeJson {
    fn new(name: &str, value: &AttributeValue) -> AgentAttributeJson {
        let mut json = AgentAttributeJson { name: name.to_owned(), text: None, scalar: None, ranges: None, set: None };
        match value {
            AttributeValue::Text(text) => json.text = Some(text.clone()),
            AttributeValue::Scalar(scalar) => json.scalar = Some(*scalar),
            AttributeValue::Ranges(ranges) => json.ranges = Some(NumberRange::list(ranges)),
            AttributeValue::Set(items) => json.set = Some(items.clone()),
        }
        json
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NumberRange {
    pub begin: u64,
    pub end: u64,
}

impl NumberRange {
    fn list(ranges: &Ranges) -> Vec<NumberRange> {
        ranges.iter().map(|(begin, end)| NumberRange { begin, end }).collect()
    }
}

/// Milliseconds since the Unix epoch as ISO 8601 in UTC with milliseconds
/// (`2016-02-28T16:41:41.090Z`), the form Marathon's timestamps take.
pub fn iso8601_millis(ms: u64) -> String {
    super::timestamp::Timestamp::from_millis(ms).to_string()
}
