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

use weir_types::NamespacedName;

use crate::compile::{compile_service, describe, Claim, ClaimKey, Step};
use crate::{
    EndpointSlice, Frontend, FrontendKey, LbOptions, LbState, NodeContext, Scope, Service,
    ServiceProblem,
};

/// The node's load-balancer state, kept up to date by [`LbCompiler::update`].
pub struct LbCompiler {
    node: NodeContext,
    options: LbOptions,
    services: BTreeMap<NamespacedName, Compiled>,
    /// The services claiming each key; the first holds it.
    claimants: BTreeMap<ClaimKey, BTreeSet<NamespacedName>>,
    frontends: BTreeMap<FrontendKey, Frontend>,
    /// Extra definitions of a service seen by the last update.
    duplicates: BTreeMap<NamespacedName, usize>,
}

/// One service's input and what it compiled to.
struct Compiled {
    service: Service,
    slices: Vec<EndpointSlice>,
    steps: Vec<Step>,
}

impl Compiled {
    fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.steps.iter().filter_map(|step| match step {
            Step::Claim(claim) => Some(claim),
            Step::Problem(_) => None,
        })
    }

    fn claim(&self, key: ClaimKey) -> Option<&Claim> {
        self.claims().find(|claim| claim.key == key)
    }

    fn is_input(&self, service: &Service, slices: &[&EndpointSlice]) -> bool {
        self.service == *service
            && self.slices.len() == slices.len()
            && self.slices.iter().zip(slices).all(|(a, b)| a == *b)
    }
}

impl LbCompiler {
    pub fn new(mut node: NodeContext, options: LbOptions) -> LbCompiler {
        node.addresses.sort();
        node.addresses.dedup();
        LbCompiler {
            node,
            options,
            services: BTreeMap::new(),
            claimants: BTreeMap::new(),
            frontends: BTreeMap::new(),
            duplicates: BTreeMap::new(),
        }
    }

    /// Brings the state to `services` and `slices` (the whole current set,
    /// in any order) and returns the keys of the frontends that were added,
    /// changed or removed. When one service is given twice, the first
    /// definition is used and the other is a problem.
    pub fn update<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> BTreeSet<FrontendKey> {
        let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            slices_of
                .entry((&slice.namespace, &slice.service_name))
                .or_default()
                .push(slice);
        }
        for list in slices_of.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
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

        let mut touched = BTreeSet::new();
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
            let name = NamespacedName::new(namespace, name);
            if let Some(old) = self.services.get(&name) {
                if old.is_input(service, own) {
                    continue;
                }
            }
            let old = self.services.remove(&name);
            let compiled = Compiled {
                service: service.clone(),
                slices: own.iter().map(|s| (*s).clone()).collect(),
                steps: compile_service(service, own, &self.node, &self.options),
            };
            match old {
                // Input changed, output did not (a slice's labels, say).
                Some(old) if old.steps == compiled.steps => {}
                Some(old) => {
                    self.release(&name, &old, &mut touched);
                    self.claim(&name, &compiled, &mut touched);
                }
                None => self.claim(&name, &compiled, &mut touched),
            }
            self.services.insert(name, compiled);
        }
        self.settle(touched)
    }

    fn claim(
        &mut self,
        name: &NamespacedName,
        compiled: &Compiled,
        touched: &mut BTreeSet<ClaimKey>,
    ) {
        for claim in compiled.claims() {
            touched.insert(claim.key);
            self.claimants
                .entry(claim.key)
                .or_default()
                .insert(name.clone());
        }
    }

    fn release(&mut self, name: &NamespacedName, old: &Compiled, touched: &mut BTreeSet<ClaimKey>) {
        for claim in old.claims() {
            touched.insert(claim.key);
            if let Entry::Occupied(mut claimants) = self.claimants.entry(claim.key) {
                claimants.get_mut().remove(name);
                if claimants.get().is_empty() {
                    claimants.remove();
                }
            }
        }
    }

    /// Installs, at each touched key, the frontends of the service that now
    /// holds it (or none); returns the frontend keys whose entry changed.
    fn settle(&mut self, touched: BTreeSet<ClaimKey>) -> BTreeSet<FrontendKey> {
        let mut changed = BTreeSet::new();
        for key in touched {
            let wanted: &[Frontend] = self
                .claimants
                .get(&key)
                .and_then(|claimants| claimants.first())
                .and_then(|holder| self.services.get(holder))
                .and_then(|compiled| compiled.claim(key))
                .map_or(&[], |claim| claim.frontends.as_slice());
            for scope in [Scope::External, Scope::Internal] {
                let frontend_key = FrontendKey {
                    address: key.0,
                    port: key.1,
                    protocol: key.2,
                    scope,
                };
                let want = wanted.iter().find(|f| f.scope == scope);
                match (self.frontends.get(&frontend_key), want) {
                    (Some(have), Some(want)) if have == want => {}
                    (None, None) => {}
                    (_, Some(want)) => {
                        self.frontends.insert(frontend_key, want.clone());
                        changed.insert(frontend_key);
                    }
                    (Some(_), None) => {
                        self.frontends.remove(&frontend_key);
                        changed.insert(frontend_key);
                    }
                }
            }
        }
        changed
    }

    /// Every frontend, by key.
    pub fn frontends(&self) -> &BTreeMap<FrontendKey, Frontend> {
        &self.frontends
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
            for step in &compiled.steps {
                match step {
                    Step::Problem(message) => report(message.clone()),
                    Step::Claim(claim) => {
                        let holder = self
                            .claimants
                            .get(&claim.key)
                            .and_then(|claimants| claimants.first());
                        let Some(holder) = holder.filter(|holder| *holder != name) else {
                            continue;
                        };
                        let held = self
                            .services
                            .get(holder)
                            .and_then(|compiled| compiled.claim(claim.key));
                        let kind = held.map_or(String::new(), |c| format!("{:?} ", c.kind));
                        report(format!(
                            "{} is already {holder}'s {kind}frontend: not installed",
                            describe(claim.key, claim.kind)
                        ));
                    }
                }
            }
            for _ in 0..self.duplicates.get(name).copied().unwrap_or(0) {
                report("defined more than once: the first definition is used".into());
            }
        }
        problems
    }

    /// The whole state, as [`crate::compile()`] returns it.
    pub fn state(&self) -> LbState {
        LbState {
            frontends: self.frontends.values().cloned().collect(),
            problems: self.problems(),
        }
    }
}

#[cfg(test)]
mod tests;
