//! TF Serving's gRPC API on tonic: `tensorflow.serving.PredictionService`
//! (`Predict`, `GetModelMetadata`; `Classify`, `Regress` and
//! `MultiInference` answer UNIMPLEMENTED) and `tensorflow.serving.ModelService`
//! (`GetModelStatus`). The messages are TF Serving's `apis/*.proto`, written
//! as prost structs with the same field numbers; the services are written
//! out as tonic's generator would write them.

use super::manager::{VersionStatus, Want};
use super::metrics;
use super::servable::{Named, check_input_names};
use super::status::{Code, Status};
use super::tensor::{Budget, HostTensor};
use super::{App, Shutdown};
use crate::io::saved_model::proto::{SignatureDef, TensorProto};
use prost::Message;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};

/// The protobuf messages of `tensorflow_serving/apis`.
#[allow(missing_docs)]
pub mod pb {
    use super::{SignatureDef, TensorProto};
    use std::collections::HashMap;

    /// `google.protobuf.Int64Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Int64Value {
        #[prost(int64, tag = "1")]
        pub value: i64,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `ModelSpec` (`version_choice` is the oneof of `version` and `version_label`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelSpec {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub version: Option<Int64Value>,
        #[prost(string, tag = "3")]
        pub signature_name: String,
        #[prost(string, optional, tag = "4")]
        pub version_label: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PredictRequest {
        #[prost(message, optional, tag = "1")]
        pub model_spec: Option<ModelSpec>,
        #[prost(map = "string, message", tag = "2")]
        pub inputs: HashMap<String, TensorProto>,
        #[prost(string, repeated, tag = "3")]
        pub output_filter: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PredictResponse {
        #[prost(message, optional, tag = "2")]
        pub model_spec: Option<ModelSpec>,
        #[prost(map = "string, message", tag = "1")]
        pub outputs: HashMap<String, TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignatureDefMap {
        #[prost(map = "string, message", tag = "1")]
        pub signature_def: HashMap<String, SignatureDef>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetModelMetadataRequest {
        #[prost(message, optional, tag = "1")]
        pub model_spec: Option<ModelSpec>,
        #[prost(string, repeated, tag = "2")]
        pub metadata_field: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetModelMetadataResponse {
        #[prost(message, optional, tag = "1")]
        pub model_spec: Option<ModelSpec>,
        #[prost(map = "string, message", tag = "2")]
        pub metadata: HashMap<String, Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetModelStatusRequest {
        #[prost(message, optional, tag = "1")]
        pub model_spec: Option<ModelSpec>,
    }

    /// `tensorflow.serving.StatusProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusProto {
        #[prost(int32, tag = "1")]
        pub error_code: i32,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelVersionStatus {
        #[prost(int64, tag = "1")]
        pub version: i64,
        #[prost(int32, tag = "2")]
        pub state: i32,
        #[prost(message, optional, tag = "3")]
        pub status: Option<StatusProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetModelStatusResponse {
        #[prost(message, repeated, tag = "1")]
        pub model_version_status: Vec<ModelVersionStatus>,
    }
}

/// The version a `ModelSpec` asks for (TF Serving's
/// `ServableRequestFromModelSpec`: a version as given, negative ones too).
fn want(spec: &pb::ModelSpec) -> Want {
    match (&spec.version, &spec.version_label) {
        (Some(v), _) => Want::Version(v.value),
        (None, Some(l)) if !l.is_empty() => Want::Label(l.clone()),
        _ => Want::Latest,
    }
}

fn spec_of(req: Option<&pb::ModelSpec>) -> Result<&pb::ModelSpec, Status> {
    req.ok_or_else(|| Status::invalid("Missing ModelSpec"))
}

/// A servable is looked up by name: TF Serving's `ServableRequestFromModelSpec`.
fn named(spec: &pb::ModelSpec) -> Result<(), Status> {
    if spec.name.is_empty() {
        return Err(Status::invalid("ModelSpec has no name specified."));
    }
    Ok(())
}

fn predict(app: &App, req: pb::PredictRequest) -> (String, Result<pb::PredictResponse, Status>) {
    let name = req.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let run = || -> Result<pb::PredictResponse, Status> {
        let spec = spec_of(req.model_spec.as_ref())?;
        named(spec)?;
        let s = app.manager.resolve(&spec.name, &want(spec))?;
        let key = if spec.signature_name.is_empty() {
            super::rest::DEFAULT_SIGNATURE.to_string()
        } else {
            spec.signature_name.clone()
        };
        if !s.core.signatures.contains_key(&key) {
            return Err(Status::new(
                Code::FailedPrecondition,
                format!("Serving signature key \"{key}\" not found."),
            ));
        }
        // The names first: nothing is decoded for a request that cannot
        // run, and what is decoded is charged to one budget.
        let sig = s.core.signature(&key)?;
        check_input_names(sig, req.inputs.keys())?;
        let mut budget = Budget::new(app.options.max_request_bytes);
        let mut inputs: Named = Vec::with_capacity(req.inputs.len());
        for (n, p) in &req.inputs {
            inputs.push((n.clone(), HostTensor::from_proto(p, n, &mut budget)?));
        }
        let outputs = s.predict(&key, inputs, &req.output_filter)?;
        Ok(pb::PredictResponse {
            model_spec: Some(pb::ModelSpec {
                name: spec.name.clone(),
                version: Some(pb::Int64Value {
                    value: s.core.version as i64,
                }),
                signature_name: key,
                version_label: None,
            }),
            outputs: outputs.iter().map(|(n, t)| (n.clone(), t.to_proto())).collect(),
        })
    };
    (name, run())
}

fn metadata(app: &App, req: pb::GetModelMetadataRequest) -> (String, Result<pb::GetModelMetadataResponse, Status>) {
    let name = req.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let run = || -> Result<pb::GetModelMetadataResponse, Status> {
        let spec = spec_of(req.model_spec.as_ref())?;
        if req.metadata_field.is_empty() {
            return Err(Status::invalid(
                "GetModelMetadataRequest must specify at least one metadata_field",
            ));
        }
        if let Some(f) = req.metadata_field.iter().find(|f| *f != "signature_def") {
            return Err(Status::invalid(format!("Metadata field {f} is not supported")));
        }
        named(spec)?;
        let s = app.manager.resolve(&spec.name, &want(spec))?;
        let map = pb::SignatureDefMap {
            signature_def: s
                .core
                .signatures
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        };
        let mut metadata = HashMap::new();
        metadata.insert(
            "signature_def".to_string(),
            pb::Any {
                type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
                value: map.encode_to_vec(),
            },
        );
        Ok(pb::GetModelMetadataResponse {
            model_spec: Some(pb::ModelSpec {
                name: spec.name.clone(),
                version: Some(pb::Int64Value {
                    value: s.core.version as i64,
                }),
                signature_name: String::new(),
                version_label: None,
            }),
            metadata,
        })
    };
    (name, run())
}

fn model_status(app: &App, req: pb::GetModelStatusRequest) -> (String, Result<pb::GetModelStatusResponse, Status>) {
    let name = req.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let run = || -> Result<pb::GetModelStatusResponse, Status> {
        // TF Serving's GetModelStatusWithModelSpec: no name check (an empty
        // name finds no versions), and a version_label is not looked at.
        let spec = spec_of(req.model_spec.as_ref())?;
        let vs = app.manager.status(&spec.name, &want(spec))?;
        Ok(pb::GetModelStatusResponse {
            model_version_status: vs
                .iter()
                .map(|v: &VersionStatus| pb::ModelVersionStatus {
                    version: v.version as i64,
                    state: v.state.number(),
                    status: Some(pb::StatusProto {
                        error_code: v.status.code as i32,
                        error_message: v.status.message.clone(),
                    }),
                })
                .collect(),
        })
    };
    (name, run())
}

fn to_tonic(s: Status) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(s.code as i32), s.message)
}

type Handler<Q, R> = fn(&App, Q) -> (String, Result<R, Status>);

/// Messages below this many bytes take no share of the in-flight budget.
const SMALL_MESSAGE: usize = 64 << 10;

/// One unary method: runs its handler on the blocking pool.
struct Unary<Q, R> {
    app: Arc<App>,
    api: &'static str,
    f: Handler<Q, R>,
}

impl<Q: Message + Send + 'static, R: Send + 'static> tonic::server::UnaryService<Q> for Unary<Q, R> {
    type Response = R;
    type Future = BoxFuture<tonic::Response<R>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Q>) -> Self::Future {
        let (app, api, f) = (Arc::clone(&self.app), self.api, self.f);
        let app2 = Arc::clone(&app);
        Box::pin(async move {
            let t0 = Instant::now();
            let msg = request.into_inner();
            // Decoding a message into tensors takes about its size again:
            // large messages being decoded and run share the budget of REST
            // bodies in flight, so that many at once wait (as long as a REST
            // request may) rather than exhaust the memory. Small ones
            // (metadata and status requests among them) never queue behind
            // them.
            let len = msg.encoded_len();
            let permit = if len < SMALL_MESSAGE {
                None
            } else {
                let wait = std::time::Duration::from_millis(app.options.rest_api_timeout_in_ms.max(1));
                match tokio::time::timeout(wait, app.body_permits(len)).await {
                    Ok(Some(p)) => Some(p),
                    Ok(None) => return Err(tonic::Status::unavailable("the server is shutting down")),
                    Err(_) => {
                        return Err(tonic::Status::resource_exhausted(format!(
                            "the server is busy: a {len}-byte message waited {} ms for memory",
                            wait.as_millis()
                        )));
                    }
                }
            };
            let (model, res) = match tokio::task::spawn_blocking(move || {
                let r = f(&app, msg);
                drop(permit);
                r
            })
            .await
            {
                Ok(r) => r,
                Err(e) => (
                    String::new(),
                    Err(Status::new(Code::Internal, format!("the request failed: {e}"))),
                ),
            };
            let code = res.as_ref().map_or_else(|e| e.code.name(), |_| Code::Ok.name());
            let model = app2.metrics_model(&model);
            metrics::global().request(model, api, "GRPC", code, t0.elapsed().as_secs_f64() * 1e6);
            res.map(tonic::Response::new).map_err(to_tonic)
        })
    }
}

fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut r = http::Response::new(tonic::body::Body::default());
    let h = r.headers_mut();
    h.insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::Unimplemented as i32),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A message over the size limit: tonic answers OUT_OF_RANGE; gRPC's C core
/// (TF Serving's) answers RESOURCE_EXHAUSTED "Received message larger than
/// max (N vs. M)".
fn too_large(r: &mut http::Response<tonic::body::Body>, max: usize) {
    let Some(s) = tonic::Status::from_header_map(r.headers()) else {
        return;
    };
    if s.code() != tonic::Code::OutOfRange || !s.message().starts_with("Error, decoded message length too large") {
        return;
    }
    // "... found {len} bytes, the limit is: {limit} bytes"
    let found = s
        .message()
        .split("found ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or("?")
        .to_string();
    let status = tonic::Status::resource_exhausted(format!(
        "Received message larger than max ({found} vs. {max}); wgflow_model_server's limit is \
         --rest_api_max_request_bytes"
    ));
    *r = status.into_http();
}

async fn unary<Q, R, B>(
    app: Arc<App>,
    api: &'static str,
    f: Handler<Q, R>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    Q: Message + Default + Send + 'static,
    R: Message + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    // The limit bounds gzip-compressed messages once inflated, too (tonic
    // stops inflating there: RESOURCE_EXHAUSTED).
    let max = app.options.max_request_bytes;
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<R, Q>::default())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .apply_max_message_size_config(Some(max), Some(usize::MAX));
    let mut r = grpc.unary(Unary { app, api, f }, req).await;
    too_large(&mut r, max);
    r
}

/// Both of TF Serving's gRPC services, routed by method path.
#[derive(Clone)]
pub struct GrpcApi(pub Arc<App>);

impl tonic::server::NamedService for GrpcApi {
    const NAME: &'static str = "tensorflow.serving.PredictionService";
}

impl<B> Service<http::Request<B>> for GrpcApi
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let app = Arc::clone(&self.0);
        match req.uri().path() {
            "/tensorflow.serving.PredictionService/Predict" => {
                Box::pin(async move { Ok(unary(app, "Predict", predict as Handler<_, _>, req).await) })
            }
            "/tensorflow.serving.PredictionService/GetModelMetadata" => {
                Box::pin(async move { Ok(unary(app, "GetModelMetadata", metadata as Handler<_, _>, req).await) })
            }
            "/tensorflow.serving.ModelService/GetModelStatus" => {
                Box::pin(async move { Ok(unary(app, "GetModelStatus", model_status as Handler<_, _>, req).await) })
            }
            _ => Box::pin(async move { Ok(unimplemented()) }),
        }
    }
}

/// Serves both services on `listener` until `shutdown`; open calls finish.
pub async fn run(listener: tokio::net::TcpListener, app: Arc<App>, mut shutdown: Shutdown) -> Result<(), String> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Bounded streams per connection (gRPC's C core allows 100 too).
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(100))
        .serve_with_incoming_shutdown(GrpcApi(app), incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await
        .map_err(|e| format!("gRPC server: {e}"))
}
