//! Hostile requests, generated: every RPC of every service is sent requests
//! built from its request type's descriptor, as raw protobuf, with
//! edge-case values in every field (empty, huge, negative, non-ASCII text,
//! times outside any calendar, unknown enum numbers, NaN, nested messages
//! and lists). Each call must get an answer of the service's own, never
//! INTERNAL or UNKNOWN (what a panic or a broken invariant gives), and a
//! call that is refused must leave the service's event stream where it was.
//! How many requests were sent is written to `<target>/tmp/fuzz.txt`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use themodel_e2e::TestSuite;
use themodel_runtime::auth::{self, Rule};
use themodel_runtime::telemetry::PeerChannel;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::roles::served_by;

/// Requests generated per RPC and service (`THEMODEL_FUZZ_CASES` overrides).
const CASES: u32 = 24;

/// Values that get past the first checks, so the generated requests also
/// reach the domain and the database: ids, e-mail addresses, sources,
/// currencies, dates, reasons the suite knows.
const PLAUSIBLE: &[&str] = &[
    "lead-1",
    "opp-1",
    "acct-1",
    "ada@acme.example",
    "web_form",
    "webinar",
    "JPY",
    "USD",
    "2026-11-01",
    "2026-12-01",
    "2026-11-02T09:00:00Z",
    "lost_price",
    "no_budget",
    "marketing",
    "inside-sales",
    "cookie-1",
    "rep-1",
    "team-a/rep-1",
    "manufacturing",
    "CTO",
];

/// Every message type of the contract (and the well-known types it uses),
/// by full name.
struct Schema {
    set: FileDescriptorSet,
    messages: HashMap<String, DescriptorProto>,
}

impl Schema {
    fn load() -> Schema {
        let set = FileDescriptorSet::decode(themodel_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut messages = HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                add(&mut messages, &format!(".{}", file.package()), m);
            }
        }
        Schema { set, messages }
    }

    /// The input type of an RPC path, and whether the client streams.
    fn input(&self, path: &str) -> (String, bool) {
        let (service, method) = path.trim_start_matches('/').rsplit_once('/').unwrap();
        for file in &self.set.file {
            for s in &file.service {
                if format!("{}.{}", file.package(), s.name()) != service {
                    continue;
                }
                let m = s.method.iter().find(|m| m.name() == method).unwrap();
                return (m.input_type().to_owned(), m.client_streaming());
            }
        }
        panic!("{path} is not in the contract");
    }

    /// Encoded messages of type `name`, nested at most `depth` more levels.
    fn message(&self, name: &str, depth: u32) -> BoxedStrategy<Vec<u8>> {
        let Some(m) = self.messages.get(name) else {
            return Just(Vec::new()).boxed();
        };
        if depth == 0 {
            return Just(Vec::new()).boxed();
        }
        let fields: Vec<BoxedStrategy<Vec<u8>>> = m.field.iter().map(|f| self.field(f, depth)).collect();
        fields.prop_map(|parts| parts.concat()).boxed()
    }

    /// One field, encoded with its key: absent, once, or (repeated) a few times.
    fn field(&self, f: &FieldDescriptorProto, depth: u32) -> BoxedStrategy<Vec<u8>> {
        let number = u64::try_from(f.number()).unwrap();
        let one = self.value(f, depth).prop_map(move |(wire, bytes)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint((number << 3) | wire, &mut out);
            out.extend(bytes);
            out
        });
        if f.label() == Label::Repeated {
            prop::collection::vec(one, 0..4).prop_map(|v| v.concat()).boxed()
        } else {
            prop::option::weighted(0.75, one).prop_map(Option::unwrap_or_default).boxed()
        }
    }

    /// A field's wire type and encoded value.
    fn value(&self, f: &FieldDescriptorProto, depth: u32) -> BoxedStrategy<(u64, Vec<u8>)> {
        let varint = |v: u64| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(v, &mut out);
            (0, out)
        };
        let delimited = |bytes: Vec<u8>| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(bytes.len() as u64, &mut out);
            out.extend(bytes);
            (2, out)
        };
        match f.r#type() {
            Type::Int64 | Type::Int32 | Type::Uint64 | Type::Uint32 => {
                integers().prop_map(move |v| varint(v as u64)).boxed()
            }
            Type::Sint64 | Type::Sint32 => integers().prop_map(move |v| varint(((v << 1) ^ (v >> 63)) as u64)).boxed(),
            Type::Bool => any::<bool>().prop_map(move |b| varint(u64::from(b))).boxed(),
            Type::Enum => {
                prop_oneof![0..8i64, Just(-1i64), Just(1_000_000i64)].prop_map(move |v| varint(v as u64)).boxed()
            }
            Type::Double => doubles().prop_map(|d| (1, d.to_le_bytes().to_vec())).boxed(),
            Type::Float => doubles().prop_map(|d| (5, (d as f32).to_le_bytes().to_vec())).boxed(),
            Type::Fixed64 | Type::Sfixed64 => integers().prop_map(|v| (1, v.to_le_bytes().to_vec())).boxed(),
            Type::Fixed32 | Type::Sfixed32 => integers().prop_map(|v| (5, (v as i32).to_le_bytes().to_vec())).boxed(),
            Type::String => texts().prop_map(move |s| delimited(s.into_bytes())).boxed(),
            Type::Bytes => prop::collection::vec(any::<u8>(), 0..64).prop_map(delimited).boxed(),
            Type::Message | Type::Group => self.message(f.type_name(), depth - 1).prop_map(delimited).boxed(),
        }
    }
}

fn add(messages: &mut HashMap<String, DescriptorProto>, scope: &str, m: &DescriptorProto) {
    let name = format!("{scope}.{}", m.name());
    for nested in &m.nested_type {
        add(messages, &name, nested);
    }
    messages.insert(name, m.clone());
}

fn integers() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        0..2_000i64,
        Just(i64::from(i32::MAX)),
        Just(i64::from(i32::MIN)),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(253_402_300_800), // 10000-01-01 in seconds
        any::<i64>(),
    ]
}

fn doubles() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(0.5),
        Just(1.0),
        Just(-1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1e300),
        any::<f64>()
    ]
}

fn texts() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(PLAUSIBLE).prop_map(str::to_owned),
        prop::sample::select(PLAUSIBLE).prop_map(|s| format!("{s}\u{0}")),
        prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        Just("x".repeat(300)),
        Just("日本".repeat(3_000)),
    ]
}

/// Sends and receives messages as the bytes they are.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` with `body`; the status it ends with.
async fn send(channel: PeerChannel, path: &str, body: Vec<u8>, streaming: bool) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Code::Unavailable;
    }
    let path = path.parse().unwrap();
    let answer = if streaming {
        let mut request = tonic::Request::new(tonic::codegen::tokio_stream::iter(vec![body]));
        request.set_timeout(Duration::from_secs(3));
        match grpc.streaming(request, path, Raw).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        }
    } else {
        let mut request = tonic::Request::new(body);
        request.set_timeout(Duration::from_secs(3));
        grpc.unary(request, path, Raw).await.map(drop)
    };
    answer.err().map_or(Code::Ok, |s| s.code())
}

/// Who may reach `path`'s handler: the sending service for a hand-over
/// receiver, else admin.
fn caller(path: &str) -> String {
    match auth::rule(path) {
        Rule::HandOver(senders) => auth::service_identity(senders[0]),
        _ => themodel::ADMIN.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_hostile_requests_never_break_a_service() {
    let cases = std::env::var("THEMODEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    // A hand-over the receiver refuses becomes a dead letter at once.
    let t = TestSuite::start_with(|o| o.dead_letter_after = 1).await;
    let schema = Schema::load();
    let rt = tokio::runtime::Handle::current();
    let (sent, refused) = (AtomicU32::new(0), AtomicU32::new(0));
    let mut rpcs = 0u32;
    for (path, _) in auth::TABLE {
        let (input, streaming) = schema.input(path);
        let strategy = schema.message(&input, 4);
        for name in served_by(path) {
            rpcs += 1;
            let channel = t.channel_as(name, &caller(path));
            let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
            let outcome = tokio::task::block_in_place(|| {
                runner.run(&strategy, |body| {
                    rt.block_on(async {
                        let before = t.head(name).await;
                        let code = send(channel.clone(), path, body, streaming).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        prop_assert!(
                            !matches!(code, Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented),
                            "{path} on {name} answered {code:?}"
                        );
                        if code == Code::Ok {
                            t.outboxes_drained().await;
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let after = t.head(name).await;
                            prop_assert_eq!(
                                before,
                                after,
                                "{} on {} was refused ({:?}) but wrote events",
                                path,
                                name,
                                code
                            );
                        }
                        Ok::<(), TestCaseError>(())
                    })
                })
            });
            if let Err(e) = outcome {
                panic!("{e}");
            }
        }
    }
    // Every service still serves, and the chain still works.
    t.wait_serving().await;
    crate::flows::win(&t, "after-fuzz", "2026-11-02").await;
    let (sent, refused) = (sent.into_inner(), refused.into_inner());
    let summary = format!("fuzz: {sent} generated requests to {rpcs} RPCs ({refused} refused), none broke a service");
    eprintln!("{summary}");
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz.txt"), format!("{summary}\n")).unwrap();
    assert!(sent >= rpcs * cases, "{sent} requests sent");
}
