//! The compiler the agent keeps: it remembers each service's compilation
//! and who claims which (address, port, protocol), so that a change
//! recompiles only the services whose Service or EndpointSlices changed,
//! and tells which frontends changed. With 10,000 services, adding one
//! costs a comparison per service instead of a full compile, and the map
//! writer below it only touches the frontends reported.
//!
//! [`crate::compile()`] is this compiler fed once, so the rules are the same
//! by construction; the tests here check that any sequence of updates ends
//! in the state a fresh compile gives, and reports exactly the frontends
//! that differ.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use weir_types::NamespacedName;

use crate::compile::{compile_service, compile_service_v6, describe, Claim, ClaimKey, Step};
use crate::family::LbAddress;
use crate::{
    AnyEndpointSlice, EndpointSlice, Frontend, FrontendKey, Ipv6Options, LbOptions, LbState,
    NodeContext, Scope, Service, ServiceProblem,
};

/// The node's load-balancer state, kept up to date by [`LbCompiler::update`]
/// (IPv4) or [`LbCompiler::update_any`] (dual stack).
pub struct LbCompiler {
    node: NodeContext,
    options: LbOptions,
    ipv6: Ipv6Options,
    services: BTreeMap<NamespacedName, Compiled>,
    v4: Claims<Ipv4Addr>,
    v6: Claims<Ipv6Addr>,
    /// Extra definitions of a service seen by the last update.
    duplicates: BTreeMap<NamespacedName, usize>,
}

/// Who holds what in one family.
struct Claims<A> {
    /// The services claiming each key; the first holds it.
    claimants: BTreeMap<ClaimKey<A>, BTreeSet<NamespacedName>>,
    frontends: BTreeMap<FrontendKey<A>, Frontend<A>>,
}

impl<A> Default for Claims<A> {
    fn default() -> Self {
        Claims {
            claimants: BTreeMap::new(),
            frontends: BTreeMap::new(),
        }
    }
}

/// The frontends that changed in an update, per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub v4: BTreeSet<FrontendKey>,
    pub v6: BTreeSet<FrontendKey<Ipv6Addr>>,
}

/// One service's input and what it compiled to.
struct Compiled {
    service: Service,
    slices: Vec<EndpointSlice>,
    slices_v6: Vec<EndpointSlice<Ipv6Addr>>,
    steps: Vec<Step>,
    steps_v6: Vec<Step<Ipv6Addr>>,
}

/// A family's steps of a compiled service.
trait FamilySteps<A> {
    fn steps(&self) -> &[Step<A>];
}

impl FamilySteps<Ipv4Addr> for Compiled {
    fn steps(&self) -> &[Step<Ipv4Addr>] {
        &self.steps
    }
}

impl FamilySteps<Ipv6Addr> for Compiled {
    fn steps(&self) -> &[Step<Ipv6Addr>] {
        &self.steps_v6
    }
}

fn claims_of<A>(steps: &[Step<A>]) -> impl Iterator<Item = &Claim<A>> {
    steps.iter().filter_map(|step| match step {
        Step::Claim(claim) => Some(claim),
        Step::Problem(_) => None,
    })
}

fn claim_of<A: LbAddress>(steps: &[Step<A>], key: ClaimKey<A>) -> Option<&Claim<A>> {
    claims_of(steps).find(|claim| claim.key == key)
}

impl Compiled {
    fn is_input(
        &self,
        service: &Service,
        slices: &[&EndpointSlice],
        slices_v6: &[&EndpointSlice<Ipv6Addr>],
    ) -> bool {
        self.service == *service
            && self.slices.len() == slices.len()
            && self.slices.iter().zip(slices).all(|(a, b)| a == *b)
            && self.slices_v6.len() == slices_v6.len()
            && self.slices_v6.iter().zip(slices_v6).all(|(a, b)| a == *b)
    }
}

impl LbCompiler {
    pub fn new(mut node: NodeContext, options: LbOptions) -> LbCompiler {
        node.addresses.sort();
        node.addresses.dedup();
        LbCompiler {
            node,
            options,
            ipv6: Ipv6Options::default(),
            services: BTreeMap::new(),
            v4: Claims::default(),
            v6: Claims::default(),
            duplicates: BTreeMap::new(),
        }
    }

    /// Compiles IPv6 frontends per `ipv6` (off by default: see
    /// [`Ipv6Options`]). Set before the first update.
    pub fn with_ipv6(mut self, ipv6: Ipv6Options) -> LbCompiler {
        self.ipv6 = ipv6;
        self
    }

    /// Brings the state to `services` and `slices` (the whole current set,
    /// in any order) and returns the keys of the IPv4 frontends that were
    /// added, changed or removed. When one service is given twice, the
    /// first definition is used and the other is a problem. IPv4 slices
    /// only: [`LbCompiler::update_any`] takes both address types.
    pub fn update<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> BTreeSet<FrontendKey> {
        self.update_dual(services, slices, []).v4
    }

    /// [`LbCompiler::update`] with slices of either address type; returns
    /// the frontends that changed in each family.
    pub fn update_any<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a AnyEndpointSlice>,
    ) -> Changed {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for slice in slices {
            match slice {
                AnyEndpointSlice::V4(slice) => v4.push(slice),
                AnyEndpointSlice::V6(slice) => v6.push(slice),
            }
        }
        self.update_dual(services, v4, v6)
    }

    /// [`LbCompiler::update`] with the IPv4 and the IPv6 slices apart.
    pub fn update_dual<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        slices_v6: impl IntoIterator<Item = &'a EndpointSlice<Ipv6Addr>>,
    ) -> Changed {
        let slices_of = group(slices);
        let slices_v6_of = group(slices_v6);
        let mut current: BTreeMap<(&str, &str), &Service> = BTreeMap::new();
        self.duplicates.clear();
        for service in services {
            match current.entry((&service.namespace, &service.name)) {
                Entry::Vacant(free) => {
                    free.insert(service);
                }
                Entry::Occupied(_) => {
                    *self.duplicates.entry(service.service_name()).or_default() += 1;
                }
            }
        }

        let mut touched = (BTreeSet::new(), BTreeSet::new());
        let gone: Vec<NamespacedName> = self
            .services
            .keys()
            .filter(|n| !current.contains_key(&(n.namespace.as_str(), n.name.as_str())))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.services.remove(&name) {
                self.release(&name, &old, &mut touched);
            }
        }
        for ((namespace, name), service) in current {
            let own = slices_of
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let own_v6 = slices_v6_of
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let name = NamespacedName::new(namespace, name);
            if let Some(old) = self.services.get(&name) {
                if old.is_input(service, own, own_v6) {
                    continue;
                }
            }
            let old = self.services.remove(&name);
            let compiled = Compiled {
                service: service.clone(),
                slices: own.iter().map(|s| (*s).clone()).collect(),
                slices_v6: own_v6.iter().map(|s| (*s).clone()).collect(),
                steps: compile_service(service, own, &self.node, &self.options),
                steps_v6: compile_service_v6(
                    service,
                    own_v6,
                    &self.node,
                    &self.options,
                    &self.ipv6,
                ),
            };
            match old {
                // Input changed, output did not (a slice's labels, say).
                Some(old) if old.steps == compiled.steps && old.steps_v6 == compiled.steps_v6 => {}
                Some(old) => {
                    self.release(&name, &old, &mut touched);
                    self.claim(&name, &compiled, &mut touched);
                }
                None => self.claim(&name, &compiled, &mut touched),
            }
            self.services.insert(name, compiled);
        }
        Changed {
            v4: settle(&mut self.v4, &self.services, touched.0),
            v6: settle(&mut self.v6, &self.services, touched.1),
        }
    }

    fn claim(
        &mut self,
        name: &NamespacedName,
        compiled: &Compiled,
        touched: &mut (BTreeSet<ClaimKey>, BTreeSet<ClaimKey<Ipv6Addr>>),
    ) {
        claim(&mut self.v4, name, &compiled.steps, &mut touched.0);
        claim(&mut self.v6, name, &compiled.steps_v6, &mut touched.1);
    }

    fn release(
        &mut self,
        name: &NamespacedName,
        old: &Compiled,
        touched: &mut (BTreeSet<ClaimKey>, BTreeSet<ClaimKey<Ipv6Addr>>),
    ) {
        release(&mut self.v4, name, &old.steps, &mut touched.0);
        release(&mut self.v6, name, &old.steps_v6, &mut touched.1);
    }

    /// Every IPv4 frontend, by key.
    pub fn frontends(&self) -> &BTreeMap<FrontendKey, Frontend> {
        &self.v4.frontends
    }

    /// Every IPv6 frontend, by key.
    pub fn frontends_v6(&self) -> &BTreeMap<FrontendKey<Ipv6Addr>, Frontend<Ipv6Addr>> {
        &self.v6.frontends
    }

    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// The problems, in the order of services by (namespace, name), each
    /// service's in the order met.
    pub fn problems(&self) -> Vec<ServiceProblem> {
        let mut problems = Vec::new();
        for (name, compiled) in &self.services {
            let mut report = |message: String| {
                problems.push(ServiceProblem {
                    service: name.clone(),
                    message,
                })
            };
            family_problems(&self.v4, &self.services, name, &compiled.steps, &mut report);
            family_problems(
                &self.v6,
                &self.services,
                name,
                &compiled.steps_v6,
                &mut report,
            );
            for _ in 0..self.duplicates.get(name).copied().unwrap_or(0) {
                report("defined more than once: the first definition is used".into());
            }
        }
        problems
    }

    /// The whole state, as [`crate::compile()`] returns it.
    pub fn state(&self) -> LbState {
        LbState {
            frontends: self.v4.frontends.values().cloned().collect(),
            frontends_v6: self.v6.frontends.values().cloned().collect(),
            problems: self.problems(),
        }
    }
}

/// Slices by (namespace, service), each list sorted by name.
fn group<'a, A: 'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice<A>>,
) -> HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice<A>>> {
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice<A>>> = HashMap::new();
    for slice in slices {
        slices_of
            .entry((&slice.namespace, &slice.service_name))
            .or_default()
            .push(slice);
    }
    for list in slices_of.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    slices_of
}

fn claim<A: LbAddress>(
    claims: &mut Claims<A>,
    name: &NamespacedName,
    steps: &[Step<A>],
    touched: &mut BTreeSet<ClaimKey<A>>,
) {
    for claim in claims_of(steps) {
        touched.insert(claim.key);
        claims
            .claimants
            .entry(claim.key)
            .or_default()
            .insert(name.clone());
    }
}

fn release<A: LbAddress>(
    claims: &mut Claims<A>,
    name: &NamespacedName,
    steps: &[Step<A>],
    touched: &mut BTreeSet<ClaimKey<A>>,
) {
    for claim in claims_of(steps) {
        touched.insert(claim.key);
        if let Entry::Occupied(mut claimants) = claims.claimants.entry(claim.key) {
            claimants.get_mut().remove(name);
            if claimants.get().is_empty() {
                claimants.remove();
            }
        }
    }
}

/// Installs, at each touched key, the frontends of the service that now
/// holds it (or none); returns the frontend keys whose entry changed.
fn settle<A: LbAddress>(
    claims: &mut Claims<A>,
    services: &BTreeMap<NamespacedName, Compiled>,
    touched: BTreeSet<ClaimKey<A>>,
) -> BTreeSet<FrontendKey<A>>
where
    Compiled: FamilySteps<A>,
{
    let mut changed = BTreeSet::new();
    for key in touched {
        let wanted: &[Frontend<A>] = claims
            .claimants
            .get(&key)
            .and_then(|claimants| claimants.first())
            .and_then(|holder| services.get(holder))
            .and_then(|compiled| claim_of(compiled.steps(), key))
            .map_or(&[], |claim| claim.frontends.as_slice());
        for scope in [Scope::External, Scope::Internal] {
            let frontend_key = FrontendKey {
                address: key.0,
                port: key.1,
                protocol: key.2,
                scope,
            };
            let want = wanted.iter().find(|f| f.scope == scope);
            match (claims.frontends.get(&frontend_key), want) {
                (Some(have), Some(want)) if have == want => {}
                (None, None) => {}
                (_, Some(want)) => {
                    claims.frontends.insert(frontend_key, want.clone());
                    changed.insert(frontend_key);
                }
                (Some(_), None) => {
                    claims.frontends.remove(&frontend_key);
                    changed.insert(frontend_key);
                }
            }
        }
    }
    changed
}

/// The problems of one service's steps in one family: its own, and its
/// claims another service holds.
fn family_problems<A: LbAddress>(
    claims: &Claims<A>,
    services: &BTreeMap<NamespacedName, Compiled>,
    name: &NamespacedName,
    steps: &[Step<A>],
    report: &mut impl FnMut(String),
) where
    Compiled: FamilySteps<A>,
{
    for step in steps {
        match step {
            Step::Problem(message) => report(message.clone()),
            Step::Claim(claim) => {
                let holder = claims
                    .claimants
                    .get(&claim.key)
                    .and_then(|claimants| claimants.first());
                let Some(holder) = holder.filter(|holder| *holder != name) else {
                    continue;
                };
                let held = services
                    .get(holder)
                    .and_then(|compiled| claim_of(compiled.steps(), claim.key));
                let kind = held.map_or(String::new(), |c| format!("{:?} ", c.kind));
                report(format!(
                    "{} is already {holder}'s {kind}frontend: not installed",
                    describe(claim.key, claim.kind)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
