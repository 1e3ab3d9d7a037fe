//! The start gate: a bound on the work that competes for the runtime when many pods start at
//! once (sandbox creation, container creation and start), served in arrival order.
//!
//! A pod keeps its place from its sandbox's creation through its containers' starts (giving
//! it up only for an image pull), and a pod that comes back for a container goes before pods
//! still waiting to create their sandboxes, so the first pods to arrive are running while later
//! ones queue. The gate opens gradually: a burst starts one piece of work at a time, and every
//! piece that finishes lets one more through at once, up to the bound. The first pod of a burst
//! thus has the runtime to itself, and the runtime is kept busy at the bound from a few
//! hundred milliseconds on (on two cores, a fixed bound of two made the first container twice
//! as fast as a bound of four and the whole burst 30% slower). An idle gate starts over. Image
//! pulls, status calls, events and kills never pass through the gate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What a caller asks the gate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Creating a pod's sandbox: a pod that starts.
    Sandbox,
    /// Creating and starting a container of a pod that has its sandbox.
    Container,
}

/// How many pieces of work a burst starts with.
const OPENING: usize = 1;

#[derive(Debug)]
struct State {
    /// The bound.
    max: usize,
    /// How many may run now (grows from [`OPENING`] to `max` as work finishes).
    open: usize,
    running: usize,
    containers: VecDeque<oneshot::Sender<Permit>>,
    sandboxes: VecDeque<oneshot::Sender<Permit>>,
}

/// A bounded, two-queue FIFO gate that opens gradually.
#[derive(Clone, Debug)]
pub(crate) struct StartGate {
    state: Arc<Mutex<State>>,
}

/// A place in the gate, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Option<StartGate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

impl StartGate {
    /// A gate letting at most `max` (at least one) callers through at once.
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        StartGate {
            state: Arc::new(Mutex::new(State {
                max,
                open: OPENING.min(max),
                running: 0,
                containers: VecDeque::new(),
                sandboxes: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place: container starts before sandboxes, each in arrival order. A caller
    /// that stops waiting (its sync was cancelled) loses its place and nothing else.
    pub(crate) async fn enter(&self, work: Work) -> Permit {
        let rx = {
            let mut state = self.lock();
            if state.running < state.open {
                state.running += 1;
                return Permit {
                    gate: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            match work {
                Work::Container => state.containers.push_back(tx),
                Work::Sandbox => state.sandboxes.push_back(tx),
            }
            rx
        };
        match rx.await {
            Ok(permit) => permit,
            // The sender is only dropped with the gate's state, which `self` keeps alive.
            Err(_) => Permit {
                gate: Some(self.clone()),
            },
        }
    }

    /// A piece of work finished: the gate opens one further, and hands the places it has to
    /// the next waiters still waiting; an idle gate starts over.
    fn release(&self) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        state.open = (state.open + 1).min(state.max);
        while state.running < state.open {
            let Some(next) = state
                .containers
                .pop_front()
                .or_else(|| state.sandboxes.pop_front())
            else {
                break;
            };
            let permit = Permit {
                gate: Some(self.clone()),
            };
            match next.send(permit) {
                Ok(()) => state.running += 1,
                // The waiter gave up: its permit is forgotten (not released: the lock is
                // held) and the next waiter is tried.
                Err(mut permit) => permit.gate = None,
            }
        }
        if state.running == 0 {
            state.open = OPENING.min(state.max);
        }
    }

    #[cfg(test)]
    fn running_and_open(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Spawns a task that enters the gate for `work`, notes `name` in `order`, holds its place
    /// until `hold` is dropped.
    fn waiter(
        gate: &StartGate,
        order: &Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
        work: Work,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (gate, order) = (gate.clone(), order.clone());
        let (hold, held) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _permit = gate.enter(work).await;
            order.lock().unwrap().push(name);
            let _ = held.await;
        });
        (task, hold)
    }

    /// A burst starts one at a time; each finished piece lets one more through at once, up to
    /// the bound; an idle gate starts over.
    #[tokio::test]
    async fn the_gate_opens_gradually_up_to_its_bound_and_starts_over_when_idle() {
        let gate = StartGate::new(3);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters: Vec<_> = ["a", "b", "c", "d", "e", "f"]
            .into_iter()
            .map(|name| waiter(&gate, &order, name, Work::Sandbox))
            .collect();
        settle().await;
        assert_eq!(*order.lock().unwrap(), ["a"], "one at first");
        assert_eq!(gate.running_and_open(), (1, 1));
        // a finishes: two may run.
        let (task, hold) = waiters.remove(0);
        drop(hold);
        task.await.unwrap();
        settle().await;
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(gate.running_and_open(), (2, 2));
        // b finishes: three may run, never more.
        let (task, hold) = waiters.remove(0);
        drop(hold);
        task.await.unwrap();
        settle().await;
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c", "d", "e"]);
        assert_eq!(gate.running_and_open(), (3, 3));
        let (task, hold) = waiters.remove(0);
        drop(hold);
        task.await.unwrap();
        settle().await;
        assert_eq!(gate.running_and_open(), (3, 3), "the bound holds");
        assert_eq!(
            *order.lock().unwrap(),
            ["a", "b", "c", "d", "e", "f"],
            "in arrival order"
        );
        for (task, hold) in waiters {
            drop(hold);
            task.await.unwrap();
        }
        assert_eq!(gate.running_and_open(), (0, 1), "idle: starts over");
    }

    /// A pod that has its sandbox starts its container before later pods create sandboxes.
    #[tokio::test]
    async fn container_starts_go_before_waiting_sandboxes() {
        let gate = StartGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.enter(Work::Sandbox).await;
        let mut waiters = Vec::new();
        for (name, work) in [
            ("sandbox-2", Work::Sandbox),
            ("sandbox-3", Work::Sandbox),
            ("container-1", Work::Container),
        ] {
            let (gate, order) = (gate.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _permit = gate.enter(work).await;
                order.lock().unwrap().push(name);
            }));
            settle().await;
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["container-1", "sandbox-2", "sandbox-3"]
        );
    }

    /// A waiter that gives up (its sync was cancelled) neither keeps nor loses a place.
    #[tokio::test]
    async fn a_cancelled_waiter_loses_only_its_place() {
        let gate = StartGate::new(1);
        let held = gate.enter(Work::Sandbox).await;
        let cancelled = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.enter(Work::Sandbox).await;
            })
        };
        settle().await;
        cancelled.abort();
        let _ = cancelled.await;
        let next = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.enter(Work::Container).await;
            })
        };
        settle().await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the live waiter got the place")
            .unwrap();
        assert_eq!(gate.running_and_open(), (0, 1));
    }
}
