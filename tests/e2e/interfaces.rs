//! What `grpcurl` and Kubernetes rely on: server reflection (v1 and v1alpha)
//! and the standard health service, on every service.

use themodel_e2e::{Svc, TestSuite};
use tonic_reflection::pb::{v1, v1alpha};

fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url).unwrap().connect_lazy()
}

async fn services_v1(url: String) -> Vec<String> {
    use v1::server_reflection_client::ServerReflectionClient;
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel(url))
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn services_v1alpha(url: String) -> Vec<String> {
    use v1alpha::server_reflection_client::ServerReflectionClient;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel(url))
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter([item])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_lists_itself_over_both_reflection_versions() {
    let t = TestSuite::start().await;
    let expected = [
        (Svc::Marketing, "themodel.marketing.v1.MarketingService"),
        (Svc::InsideSales, "themodel.insidesales.v1.InsideSalesService"),
        (Svc::FieldSales, "themodel.fieldsales.v1.FieldSalesService"),
        (Svc::CustomerSuccess, "themodel.customersuccess.v1.CustomerSuccessService"),
        (Svc::Kpi, "themodel.kpi.v1.KpiService"),
    ];
    for (svc, name) in expected {
        for listed in [services_v1(t.suite.url(svc)).await, services_v1alpha(t.suite.url(svc)).await] {
            assert!(listed.iter().any(|s| s == name), "{svc}: {listed:?}");
            assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"), "{svc}: {listed:?}");
            assert!(listed.iter().any(|s| s == "themodel.common.v1.EventStreamService"), "{svc}: {listed:?}");
        }
    }
}

/// The file that declares `symbol`, as grpcurl (reflection v1alpha) asks for it.
async fn file_of_symbol_v1alpha(url: String, symbol: &str) -> Result<Vec<Vec<u8>>, String> {
    use v1alpha::server_reflection_client::ServerReflectionClient;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut stream = ServerReflectionClient::new(channel(url))
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.map_err(|s| s.message().to_owned())?;
    match answer.unwrap().message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => Ok(f.file_descriptor_proto),
        MessageResponse::ErrorResponse(e) => Err(e.error_message),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_details_are_served_so_grpcurl_can_print_them() {
    use prost::Message;
    let t = TestSuite::start().await;
    for svc in [Svc::Marketing, Svc::Kpi] {
        for symbol in ["google.rpc.BadRequest", "google.rpc.PreconditionFailure", "google.rpc.RetryInfo"] {
            let files = file_of_symbol_v1alpha(t.suite.url(svc), symbol).await.unwrap();
            let file = prost_types::FileDescriptorProto::decode(files[0].as_slice()).unwrap();
            assert_eq!(file.package(), "google.rpc", "{svc} {symbol}");
            let name = symbol.rsplit('.').next().unwrap();
            assert!(file.message_type.iter().any(|m| m.name() == name), "{svc} {symbol}");
        }
        // Events are served too, so a consumer can decode the stream's Any.
        let files = file_of_symbol_v1alpha(t.suite.url(svc), "themodel.marketing.v1.MarketingEvent").await;
        assert!(files.is_ok(), "{svc}: {files:?}");
        assert!(file_of_symbol_v1alpha(t.suite.url(svc), "no.such.Thing").await.is_err());
    }
}
