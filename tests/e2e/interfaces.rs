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
