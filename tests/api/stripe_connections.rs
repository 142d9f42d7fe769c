//! Stripe calls reuse their connections: each new connection is a TCP (and in production a
//! TLS) handshake more on a donor's wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{spawn_app_with, stripe_creates_payment_intents};

/// A TCP relay to `target` (set once known) that counts the connections made through it.
async fn counting_relay() -> (String, Arc<OnceLock<SocketAddr>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let target = Arc::new(OnceLock::<SocketAddr>::new());
    let connections = Arc::new(AtomicUsize::new(0));
    let (to, count) = (target.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let target = *to.get().expect("the relay's target is set before any call");
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{address}"), target, connections)
}

#[tokio::test]
async fn donations_made_one_after_another_share_one_connection_to_stripe() {
    let (relay, target, connections) = counting_relay().await;
    let app = spawn_app_with(move |s| s.stripe_api_base = relay).await;
    target.set(*app.stripe.address()).unwrap();
    stripe_creates_payment_intents(&app).await;

    for amount in [1000, 2500, 5000, 10000] {
        app.create_donation(amount).await;
    }
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 4);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "each Stripe call opened a connection of its own"
    );
}
