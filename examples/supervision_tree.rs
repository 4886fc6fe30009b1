//! A small supervision tree: a worker that crashes is restarted by its supervisor, and the
//! tree shuts down in reverse start order.
//!
//! Run: `cargo run --example supervision_tree`

use std::time::Duration;

use flotilla_supervisors::{
    ChildSpec, ExitReason, Node, NodeId, Restart, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec,
    exit_error, tree,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Counts requests; forgets its count when it crashes, like any process that restarts.
struct Counter;

enum CounterMsg {
    Increment(RpcReplyPort<u64>),
    Crash,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        println!("counter: starting from zero");
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Increment(reply) => {
                *count += 1;
                let _ = reply.send(*count);
                Ok(())
            }
            CounterMsg::Crash => Err(exit_error(ExitReason::Failed("asked to crash".into()))),
        }
    }

    async fn post_stop(&self, _: ActorRef<CounterMsg>, count: &mut u64) -> Result<(), ActorProcessingErr> {
        println!("counter: stopping at {count}");
        Ok(())
    }
}

async fn counter(node: &Node) -> ActorRef<CounterMsg> {
    // Ask the supervisor rather than keep a reference: after a restart it is a new actor.
    let sup = SupervisorRef::from_cell(node.whereis("services").expect("running"));
    let children = sup.which_children().await.expect("answers");
    children.into_iter().find(|c| c.id.to_string() == "counter").and_then(|c| c.actor).expect("running").into()
}

async fn increment(counter: &ActorRef<CounterMsg>) -> u64 {
    flotilla_supervisors::call(counter, CounterMsg::Increment, Duration::from_secs(1)).await.expect("reply")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::builder(NodeId::new("example")?).seed(7).start().await?;
    let services = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne))
        .named("services")
        .child(ChildSpec::worker("counter", |_| (Counter, ())))
        .child(ChildSpec::worker("spare", |_| (Counter, ())).restart(Restart::Transient));
    let root = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::RestForOne))
        .child(ChildSpec::supervisor("services", services));
    let root = Supervisor::spawn(node.clone(), root, None).await?;
    print!("{}", tree::render(&root, "example (rest_for_one)").await);

    let first = counter(&node).await;
    println!("count: {}", increment(&first).await);
    println!("count: {}", increment(&first).await);
    first.send_message(CounterMsg::Crash)?;
    first.get_cell().wait(Some(Duration::from_secs(1))).await?;

    // The supervisor restarts the counter before it handles our next call.
    let restarted = counter(&node).await;
    println!("after the crash, count: {}", increment(&restarted).await);

    root.shutdown(Duration::from_secs(5)).await?;
    node.shutdown();
    Ok(())
}
