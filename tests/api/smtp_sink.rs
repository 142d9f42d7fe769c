//! A tiny SMTP server for the receipts' tests: it speaks just enough SMTP (220, EHLO/HELO,
//! MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT) to take messages, and keeps each one whole.
//! It can be told to turn the next connections away (421), as a mail server that is down, and
//! to take the next messages whole and then hold its reply to them (never sending the 250),
//! as a server that has the message while its sender dies waiting for the answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message the sink took.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    hold: Arc<AtomicUsize>,
    hold_before: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Self {
            url: format!("smtp://{}", listener.local_addr().unwrap()),
            mails: Arc::default(),
            refuse: Arc::default(),
            connections: Arc::default(),
            hold: Arc::default(),
            hold_before: Arc::default(),
            held: Arc::default(),
        };
        let serving = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let sink = serving.clone();
                tokio::spawn(async move {
                    let _ = sink.session(socket).await;
                });
            }
        });
        sink
    }

    /// Turns the next `n` connections away with 421, as a server that is down.
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Takes the next `n` messages (they are among [`Self::mails`]) and never answers their
    /// DATA: the sender waits until it gives up or dies.
    pub fn hold_next(&self, n: usize) {
        self.hold.store(n, Ordering::SeqCst);
    }

    /// Never answers the next `n` DATA commands: the sender waits before it has sent the
    /// message, which the sink never has.
    pub fn hold_next_before_the_message(&self, n: usize) {
        self.hold_before.store(n, Ordering::SeqCst);
    }

    /// How many sessions were held (after the message, or before it).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// The messages that mention `text` (a receipt id, a subject, an address).
    pub fn mentioning(&self, text: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.text().contains(text) || m.to.iter().any(|t| t.contains(text)))
            .collect()
    }

    /// Whether this session is to be held, by `counter`; if so, counts it held.
    fn holds(&self, counter: &AtomicUsize) -> bool {
        let hold = take_one(counter);
        if hold {
            self.held.fetch_add(1, Ordering::SeqCst);
        }
        hold
    }

    async fn session(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let (read, mut write) = socket.into_split();
        if take_one(&self.refuse) {
            write
                .write_all(b"421 sink: service not available\r\n")
                .await?;
            return Ok(());
        }
        write.write_all(b"220 sink ESMTP\r\n").await?;
        let mut lines = BufReader::new(read);
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
                b"250 sink\r\n"
            } else if command.starts_with("MAIL FROM") {
                to.clear();
                b"250 OK\r\n"
            } else if command.starts_with("RCPT TO") {
                to.push(line.trim_end()[8..].trim().to_owned());
                b"250 OK\r\n"
            } else if command == "DATA" {
                if self.holds(&self.hold_before) {
                    return until_hung_up(&mut lines).await;
                }
                write.write_all(b"354 go on\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                self.mails.lock().unwrap().push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                if self.holds(&self.hold) {
                    return until_hung_up(&mut lines).await;
                }
                b"250 OK queued\r\n"
            } else if command == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if command == "RSET" || command == "NOOP" {
                b"250 OK\r\n"
            } else {
                b"502 not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}

/// `raw` (a whole message) with its quoted-printable encoding undone, as a reader sees it.
pub fn readable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Mail {
    /// Its Message-ID header's value.
    pub fn message_id(&self) -> Option<String> {
        self.data.lines().find_map(|line| {
            line.get(..11)
                .filter(|name| name.eq_ignore_ascii_case("message-id:"))
                .map(|_| line[11..].trim().to_owned())
        })
    }

    /// The message as its reader sees it.
    pub fn text(&self) -> String {
        readable(&self.data)
    }
}

/// Takes one from `counter` if it is above 0.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Never answers: reads until the sender hangs up (or dies).
async fn until_hung_up<R: AsyncBufReadExt + Unpin>(lines: &mut R) -> std::io::Result<()> {
    let mut line = String::new();
    while lines.read_line(&mut line).await? > 0 {
        line.clear();
    }
    Ok(())
}
